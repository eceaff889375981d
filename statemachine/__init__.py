"""The domain: request and batch state machines, events, commands, decide and evolve."""
