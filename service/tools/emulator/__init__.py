"""A local OpenAI Batch API (files and batches) for the demo and the tests."""
