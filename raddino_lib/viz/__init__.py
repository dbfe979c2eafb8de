"""Figures: data galleries, training curves, attention and patch-similarity maps."""
