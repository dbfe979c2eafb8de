"""Report text tools: an offline rule-based report labeller (CheXpert-labeller style)."""

from __future__ import annotations

from raddino_lib.text.labeller import (
    CHEXBERT_14,
    FINDING_TO_CHEXBERT,
    label_chexbert,
    label_report,
    label_reports,
    label_reports_chexbert,
    to_chexbert,
)

__all__ = [
    "CHEXBERT_14",
    "FINDING_TO_CHEXBERT",
    "label_chexbert",
    "label_report",
    "label_reports",
    "label_reports_chexbert",
    "to_chexbert",
]
