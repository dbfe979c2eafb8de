"""Frozen-feature evaluation: metrics, linear probes, metadata probes."""
