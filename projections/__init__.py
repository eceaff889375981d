"""Projections: events to status tables, the runner, rebuild tooling and read queries."""
