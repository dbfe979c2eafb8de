"""Datasets: the synthetic phantom, the generic on-disk record format, image IO."""
