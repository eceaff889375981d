"""The batch pipeline: batch creator, poller, ingestion, and the schedulers that run them."""
