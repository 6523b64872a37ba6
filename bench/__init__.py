"""Benchmarks: one command each, figures side by side, a last line of JSON (see README.md)."""
