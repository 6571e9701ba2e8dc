"""Benchmark harness: a suite (base recipe × grid) → one subprocess per cell → result JSONs → tables and plots."""
