"""Entry points: the admin API, the CLI commands, the schedulers and the composition root."""
