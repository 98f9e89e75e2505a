"""Tests of the benchmark scripts in bench/ (their analysis, not their timings)."""
