"""Test doubles of the workloads the charm talks to (see each module)."""
