-- Events written before the log had scopes get their stream's company: every request
-- and batch stream starts with an event that names it (RequestQueued, BatchPlanned).
-- One pass over the log (about a minute per million events); run once, by `migrate`.
UPDATE events e
   SET scope = f.data ->> 'company_id'
  FROM events f
 WHERE e.scope IS NULL
   AND f.stream_id = e.stream_id
   AND f.stream_version = 1
   AND f.data ? 'company_id';
