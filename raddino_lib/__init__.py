"""RAD-DINO book library: data, models, self-supervised training, evaluation and figures.

Every computation that a chapter of the book shows lives here and is tested here.
"""

from __future__ import annotations

__version__ = "0.1.0"
