"""Synthetic multi-site chest X-ray phantom (images, masks, records) in the generic format.

Public API: :func:`generate_dataset` (see :mod:`.generate`).
"""

from __future__ import annotations

from raddino_lib.data.phantom.generate import (
    GENERATOR_VERSION,
    GenerationSummary,
    generate_dataset,
)

__all__ = ["GENERATOR_VERSION", "GenerationSummary", "generate_dataset"]
