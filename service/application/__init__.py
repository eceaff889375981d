"""The application layer: every use case, and the only code that appends events."""
