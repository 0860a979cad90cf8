"""Tests of the HTTP service (nurture serve)."""
