"""The edge of batchledger: CLI, config, pipeline schedulers, admin API, emulator."""
