"""Not the running service: the emulator, the benchmarks, synthetic data, the demo."""
