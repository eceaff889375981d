-- Stream ids are identifiers, not words: compare them byte by byte. With the database's
-- linguistic collation every insert into (stream_id, stream_version) and every version
-- lookup paid a locale comparison per B-tree level (en_US.UTF-8 is several times
-- slower than "C"). Rebuilds that one index; positions and data are untouched.
ALTER TABLE events ALTER COLUMN stream_id TYPE text COLLATE "C";
