"""The KurrentDB workload: what to run (render) and how to run it through Pebble (kurrentdb)."""
