"""`batchledger bench`: throughput suites, each measured against a baseline in the same run."""
