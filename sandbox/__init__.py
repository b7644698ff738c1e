"""Harness, not product: simulators and a seeded scenario that let the controller run without AWS or a cluster."""
