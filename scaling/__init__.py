"""Compound scaling of architecture specs (placeholder until the scaling issue lands)."""
