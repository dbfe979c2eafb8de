"""Figures: data galleries, training curves, attention and patch-similarity maps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raddino_lib.viz.widget import LandmarkSimilarity

__all__ = ["LandmarkSimilarity"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the widget pulls in ipywidgets/anywidget, which the plotting
    # modules of this package do not need.
    if name == "LandmarkSimilarity":
        from raddino_lib.viz.widget import LandmarkSimilarity

        return LandmarkSimilarity
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
