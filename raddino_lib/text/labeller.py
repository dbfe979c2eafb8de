"""Offline, rule-based chest X-ray report labeller in the style of the CheXpert labeller.

For every finding in :data:`raddino_lib.data.schema.FINDINGS` a report gets

* ``1.0``  -- a positive mention ("Small left apical pneumothorax."),
* ``0.0``  -- a negated mention ("No pneumothorax.", "Heart size is normal."),
* ``-1.0`` -- an uncertain (hedged) mention ("Cannot exclude a small pneumothorax."),
* ``nan``  -- not mentioned at all.

How it works (CheXpert-labeller style, no parser, no network):

1. The text is split into sentences (``.`` followed by a space, ``;``, ``:``, ``?``, ``!``,
   newlines) and each sentence into clauses at scope breakers ("but", "however",
   "with", "there is", ...). Negation and uncertainty never cross a clause.
2. In each clause, regular expressions find *mentions* of each finding (keyword and
   synonym lists below) and *negative phrases* that state absence by themselves
   ("heart size is normal", "costophrenic angles are sharp"). Overlaps go to the longest
   match, so "nodular opacity" is a nodule and not a lung opacity.
3. A mention is uncertain if an uncertainty phrase follows it ("... is not excluded"),
   negated if a negation phrase follows it ("... has resolved"), and otherwise takes the
   kind of the *nearest* negation/uncertainty cue before it in the clause ("no focal
   consolidation, effusion or pneumothorax" negates all three; "no effusion, possible
   consolidation" negates the effusion only).
4. Mentions of a finding are aggregated over the report: positive beats uncertain beats
   negative. ``no_finding`` is 1.0 when no other finding is positive or uncertain, else 0.0.

:data:`CHEXBERT_14` lists the 14 CheXbert classes and :data:`FINDING_TO_CHEXBERT` maps our
finding names onto them; :func:`to_chexbert` uses that mapping. :func:`label_chexbert` labels
any report text (generated or real) with all 14 classes: the mapped findings plus the classes
that have no finding of ours (Edema, Consolidation, Atelectasis, and mediastinal widening for
Enlarged Cardiomediastinum, :data:`CHEXBERT_ONLY_PATTERNS`), found by the same clause, cue and
aggregation rules. It scores generated reports with a Macro-F1 over the CheXbert classes (the
paper's Macro-F1-14, Table 5) when the real CheXbert weights are not available.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Final

import pandas as pd

from raddino_lib.data.schema import FINDINGS

NAN: Final = float("nan")

# --------------------------------------------------------------------------------------
# CheXbert classes
# --------------------------------------------------------------------------------------

CHEXBERT_14: tuple[str, ...] = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
    "No Finding",
)
"""The 14 CheXbert classes, in CheXbert's order (reference.md section 5)."""

FINDING_TO_CHEXBERT: dict[str, str] = {
    "lung_opacity": "Lung Opacity",
    "cardiomegaly": "Cardiomegaly",
    "pleural_thickening": "Pleural Other",
    # Approximate: CheXpert counts mediastinal/aortic contour enlargement here.
    "aortic_enlargement": "Enlarged Cardiomediastinum",
    "pneumothorax": "Pneumothorax",
    "chest_tube": "Support Devices",
    "rib_fracture": "Fracture",
    "pneumonia": "Pneumonia",
    "pleural_effusion": "Pleural Effusion",
    "nodule": "Lung Lesion",
    "support_devices": "Support Devices",
    "no_finding": "No Finding",
}
"""Our finding -> CheXbert class, where one exists. Used later for Macro-F1-14 on
generated reports. ``pulmonary_fibrosis`` and ``tuberculosis`` have no CheXbert class;
CheXbert's Edema, Consolidation and Atelectasis have no finding of ours (consolidation
mentions count as ``lung_opacity`` here). Several of ours may map to one class
(chest tube and support devices -> Support Devices); :func:`to_chexbert` aggregates."""

# --------------------------------------------------------------------------------------
# Vocabulary: positive mentions, phrases that state absence by themselves, cues
# --------------------------------------------------------------------------------------

_SIDE = r"(?:(?:left|right|bilateral|both|biapical|apical|basilar|bibasilar)\s+)?"

MENTION_PATTERNS: dict[str, tuple[str, ...]] = {
    "lung_opacity": (
        r"\bopacit(?:y|ies)\b",
        r"\bopacification\b",
        r"\bconsolidat(?:ion|ions|ive|ed)\b",
        r"\bair\s?space (?:disease|process)\b",
        r"\binfiltrates?\b",
        r"\bground[- ]glass\b",
    ),
    "cardiomegaly": (
        r"\bcardiomegaly\b",
        r"\bcardiac enlargement\b",
        r"\benlarged (?:cardiac silhouette|cardiac shadow|heart(?: size)?|cardiomediastinal"
        r" silhouette)\b",
        r"\benlargement of the (?:cardiac silhouette|heart|cardiac shadow)\b",
        r"\b(?:heart|cardiac silhouette|cardiac shadow)(?: size)? (?:is|appears|remains|are)"
        r"(?: (?:mildly|moderately|markedly|severely|slightly|again|still|now|stably|"
        r"significantly|massively))* (?:enlarged|increased)\b",
    ),
    "pleural_thickening": (
        r"\bpleural thickening\b",
        r"\bpleural[- ]based thickening\b",
        r"\bthickening of the (?:\w+ ){0,2}pleura\b",
        r"\bthickened (?:\w+ )?pleura\b",
        r"\bpleural plaques?\b",
        r"\bpleural scarring\b",
        r"\bpleural calcifications?\b",
        r"\bapical (?:pleural )?caps?\b",
    ),
    "aortic_enlargement": (
        r"\baortic (?:enlargement|ectasia|dilat(?:at)?ion|tortuosity|aneurysm|unfolding)\b",
        r"\b(?:enlarged|tortuous|unfolded|ectatic|dilated|widened|aneurysmal|prominent)"
        r"(?: and (?:tortuous|unfolded|ectatic|dilated|enlarged))?"
        r" (?:thoracic |ascending |descending )?(?:aorta|aortic arch|aortic knob|aortic knuckle)\b",
        r"\b(?:unfolding|tortuosity|ectasia|dilat(?:at)?ion|enlargement) of the"
        r" (?:thoracic |ascending |descending )?aort(?:a|ic arch)\b",
        r"\b(?:thoracic |ascending |descending )?(?:aorta|aortic arch|aortic knob)"
        r" (?:is|appears|remains)(?: (?:mildly|moderately|markedly|slightly|again))*"
        r" (?:enlarged|dilated|tortuous|unfolded|ectatic|prominent|widened)\b",
    ),
    "pulmonary_fibrosis": (
        r"\bfibro(?:sis|tic)\b",
        r"\bhoneycomb(?:ing)?\b",
        r"\breticular opacit(?:y|ies)\b",
        r"\binterstitial lung disease\b",
    ),
    "tuberculosis": (
        r"\btuberculo(?:sis|us)\b",
        r"\btb\b",
        r"\bmycobacterial\b",
    ),
    "pneumothorax": (
        r"\b(?:hydro)?pneumothora(?:x|ces)\b",
        r"\bptx\b",
    ),
    "chest_tube": (
        r"\bchest tubes?\b",
        r"\bthoracostomy tubes?\b",
        r"\bpigtail (?:catheter|drain)s?\b",
        r"\bpleural (?:drain|catheter|tube)s?\b",
        r"\b(?:chest|intercostal) drains?\b",
    ),
    "rib_fracture": (
        r"\brib fractures?\b",
        r"\bfractured ribs?\b",
        r"\bfractures? of the (?:\w+ ){0,4}ribs?\b",
        r"\bfractur(?:e|es|ed)\b",
    ),
    "pneumonia": (
        r"\b(?:broncho)?pneumonias?\b",
        r"\bpneumonitis\b",
        r"\binfection\b",
        r"\binfectious process\b",
    ),
    "pleural_effusion": (
        r"(?<!pericardial )\beffusions?\b",
        r"\bpleural fluid\b",
        r"\bhydrothorax\b",
        r"\bblunting of the (?:\w+ ){0,2}costophrenic (?:angles?|sulci|sulcus)\b",
        r"\bblunted (?:\w+ )?costophrenic (?:angles?|sulci|sulcus)\b",
    ),
    "nodule": (
        r"\bnodules?\b",
        r"\bnodularity\b",
        r"\bnodular (?:opacit(?:y|ies)|densit(?:y|ies)|lesions?)\b",
        r"\b(?:pulmonary |lung )?mass(?:es)?\b",
        r"\bgranulomas?\b",
    ),
    "support_devices": (
        r"\b(?:endotracheal|et|tracheostomy|trach|nasogastric|ng|orogastric|og|enteric|"
        r"feeding|dobhoff|gastric) tubes?\b",
        r"\b(?:central venous|central|picc|midline|swan[- ]ganz|pulmonary artery|dialysis|"
        r"hemodialysis|ij|internal jugular|subclavian)(?: central)?(?: venous)?"
        r" (?:lines?|catheters?)\b",
        r"\bpiccs?\b",
        r"\bpace(?:maker|makers|r)\b",
        r"\b(?:aicd|icd|defibrillator)\b",
        r"\b(?:support|monitoring) devices?\b",
        r"\b(?:lines (?:and|or) tubes|tubes (?:and|or) lines|lines/tubes)\b",
    ),
}
"""Positive-mention regexes per finding (matched on lower-cased text)."""

NEGATIVE_PHRASES: dict[str, tuple[str, ...]] = {
    "cardiomegaly": (
        r"\b(?:heart|cardiac)(?: size| silhouette)?(?: (?:is|appears|remains))?"
        r" (?:normal|within normal limits|not enlarged|top[- ]normal|unremarkable)"
        r"(?: in size)?\b",
        r"\bnormal (?:heart|cardiac) (?:size|silhouette)\b",
        r"\bcardiomediastinal (?:silhouette|contours?)(?: (?:is|are|appears?|remains?))?"
        r" (?:normal|within normal limits|unremarkable)\b",
        r"\bnormal cardiomediastinal (?:silhouette|contours?)\b",
    ),
    "pleural_effusion": (
        r"\bcostophrenic (?:angles?|sulci)(?: (?:is|are|remain))? (?:sharp|clear|preserved)\b",
    ),
    "aortic_enlargement": (
        r"\baort(?:a|ic arch|ic contour) (?:is |appears )?(?:normal|normal in (?:caliber|size)|"
        r"of normal caliber|unremarkable)\b",
        r"\bnormal aortic (?:contour|caliber)\b",
    ),
}
"""Phrases that state a finding's absence without a separate negation cue."""

NEGATION_CUES: tuple[str, ...] = (
    r"no (?:radiographic )?evidence of",
    r"no (?:definite |new )?signs? of",
    r"negative for",
    r"free of",
    r"clear of",
    r"absence of",
    r"resolution of",
    r"resolved",
    r"(?:interval )?removal of",
    r"removed",
    r"rather than",
    r"no longer",
    r"without",
    r"neither",
    r"nor",
    r"not",
    r"no",
)
"""Negation cues that negate a mention *after* them in the same clause."""

UNCERTAINTY_CUES: tuple[str, ...] = (
    r"cannot be (?:excluded|ruled out)",
    r"can ?not (?:exclude|rule out)",
    r"can't (?:exclude|rule out)",
    r"not (?:be )?excluded",
    r"difficult to exclude",
    r"(?:may|might|could) represent",
    r"may",
    r"might",
    r"could",
    r"possibl[ey]",
    r"questionable",
    r"question of",
    r"suggestive of",
    r"suggest(?:s|ing|ed)?",
    r"likely",
    r"probabl[ey]",
    r"presumed",
    r"suspected",
    r"suspicious for",
    r"suspicion (?:of|for)",
    r"concerning for",
    r"concern for",
    r"worrisome for",
    r"versus",
    r"vs",
    r"differential",
    r"equivocal",
    r"indeterminate",
    r"evaluate for",
    r"rule out",
    r"r/o",
    r"perhaps",
    r"potential",
)
"""Uncertainty cues (CheXpert treats "likely"/"suggest"/"may" as uncertain)."""

PSEUDO_NEGATIONS: tuple[str, ...] = (
    r"no (?:significant |definite |appreciable )?(?:interval )?change",
    r"not (?:significantly )?changed",
    r"without (?:interval |significant )?change",
    r"no (?:significant )?(?:increase|decrease)",
    r"not only",
)
"""Phrases containing a negation word that do not negate anything ("no change in ...")."""

POST_NEGATION: str = (
    r"^[\s,]*(?:(?:is|are|has|have|was|were|been|now|also|again|completely|since)\s+)*"
    r"(?:not\s+(?:seen|identified|present|visuali[sz]ed|appreciated|evident|demonstrated|"
    r"detected|enlarged)|no\s+longer\b|resolved|removed|absent|cleared)"
)
"""Negation right after a mention ("pneumothorax is not seen", "tube has been removed")."""

POST_UNCERTAINTY: str = (
    r"^[\s,]*(?:also\s+)?"
    r"(?:(?:can\s*not|cannot)\s+be\s+(?:excluded|ruled\s+out)|"
    r"(?:is|are|was|were)\s+(?:also\s+)?(?:not\s+(?:entirely\s+)?excluded|possible|suspected|"
    r"questioned|questionable|likely|probable)\b|"
    r"not\s+(?:entirely\s+)?(?:be\s+)?excluded|(?:may|might|could)\s+be\s+(?:present|seen))"
)
"""Uncertainty right after a mention ("pneumothorax is not excluded")."""

SENTENCE_SPLIT: str = r"\.(?=\s|$)|[;:!?\n]"
SCOPE_BREAKS: str = (
    r"\b(?:but|however|although|though|whereas|except|aside from|apart from|yet|with|which|"
    r"there (?:is|are))\b"
)
"""Negation/uncertainty scope never crosses these words."""


def _compile(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


_MENTION_RE: dict[str, re.Pattern[str]] = {f: _compile(p) for f, p in MENTION_PATTERNS.items()}
_NEGATIVE_RE: dict[str, re.Pattern[str]] = {f: _compile(p) for f, p in NEGATIVE_PHRASES.items()}
_NEG_CUE_RE = re.compile(r"\b(?:" + "|".join(NEGATION_CUES) + r")\b", re.IGNORECASE)
_UNC_CUE_RE = re.compile(r"(?<!\w)(?:" + "|".join(UNCERTAINTY_CUES) + r")(?!\w)", re.IGNORECASE)
_PSEUDO_RE = re.compile(r"\b(?:" + "|".join(PSEUDO_NEGATIONS) + r")\b", re.IGNORECASE)
_POST_NEG_RE = re.compile(POST_NEGATION, re.IGNORECASE)
_POST_UNC_RE = re.compile(POST_UNCERTAINTY, re.IGNORECASE)
_SENTENCE_RE = re.compile(SENTENCE_SPLIT)
_SCOPE_RE = re.compile(SCOPE_BREAKS, re.IGNORECASE)

_RANK: dict[float, int] = {1.0: 3, -1.0: 2, 0.0: 1}


def _combine(old: float, new: float) -> float:
    """Aggregate two labels of one finding: positive > uncertain > negative > nan."""
    if math.isnan(old):
        return new
    return new if _RANK[new] > _RANK[old] else old


def _non_overlapping(spans: list[tuple[int, int, str, str]]) -> list[tuple[int, int, str, str]]:
    """Keep the longest of overlapping (start, end, a, b) spans; ties keep list order."""
    order = sorted(range(len(spans)), key=lambda i: (-(spans[i][1] - spans[i][0]), i))
    kept: list[tuple[int, int, str, str]] = []
    for i in order:
        s, e, _, _ = spans[i]
        if all(e <= ks or s >= ke for ks, ke, _, _ in kept):
            kept.append(spans[i])
    return sorted(kept)


def _clauses(text: str) -> list[str]:
    """Sentences of ``text`` cut into clauses at scope breakers."""
    out: list[str] = []
    for sentence in _SENTENCE_RE.split(text.lower()):
        out.extend(c for c in _SCOPE_RE.split(sentence) if c.strip())
    return out


def _label_clause(
    clause: str,
    mention_re: Mapping[str, re.Pattern[str]] | None = None,
    negative_re: Mapping[str, re.Pattern[str]] | None = None,
) -> list[tuple[str, float]]:
    """(finding, value) for each mention in one clause (default patterns: our findings)."""
    mention_re = _MENTION_RE if mention_re is None else mention_re
    negative_re = _NEGATIVE_RE if negative_re is None else negative_re
    clause = _PSEUDO_RE.sub(lambda m: " " * len(m.group(0)), clause)
    spans: list[tuple[int, int, str, str]] = []
    # Negative phrases first, so they win ties with positive mentions of equal length.
    for finding, rx in negative_re.items():
        spans.extend((m.start(), m.end(), finding, "negphrase") for m in rx.finditer(clause))
    for finding, rx in mention_re.items():
        spans.extend((m.start(), m.end(), finding, "mention") for m in rx.finditer(clause))
    mentions = _non_overlapping(spans)

    cue_spans = [(m.start(), m.end(), "unc", "") for m in _UNC_CUE_RE.finditer(clause)]
    cue_spans += [(m.start(), m.end(), "neg", "") for m in _NEG_CUE_RE.finditer(clause)]
    cues = _non_overlapping(cue_spans)

    out: list[tuple[str, float]] = []
    for idx, (start, end, finding, kind) in enumerate(mentions):
        if kind == "negphrase":
            out.append((finding, 0.0))
            continue
        nxt = mentions[idx + 1][0] if idx + 1 < len(mentions) else len(clause)
        after = clause[end:nxt]
        if _POST_UNC_RE.match(after):
            out.append((finding, -1.0))
            continue
        if _POST_NEG_RE.match(after):
            out.append((finding, 0.0))
            continue
        before = [c for c in cues if c[1] <= start]
        if not before:
            out.append((finding, 1.0))
        else:
            out.append((finding, -1.0 if before[-1][2] == "unc" else 0.0))
    return out


def label_report(text: str) -> dict[str, float]:
    """Label one report: finding -> 1.0 / 0.0 / -1.0 / nan (see module docstring).

    ``no_finding`` is 1.0 when no other finding is positive or uncertain, else 0.0.
    """
    out: dict[str, float] = {f: NAN for f in FINDINGS}
    for clause in _clauses(text or ""):
        for finding, value in _label_clause(clause):
            out[finding] = _combine(out[finding], value)
    abnormal = any(out[f] in (1.0, -1.0) for f in FINDINGS if f != "no_finding")
    out["no_finding"] = 0.0 if abnormal else 1.0
    return out


def label_reports(texts: Iterable[str]) -> pd.DataFrame:
    """Label many reports; one row per report, one column per finding (schema order).

    A :class:`pandas.Series` keeps its index; anything else gets a RangeIndex.
    """
    index = texts.index if isinstance(texts, pd.Series) else None
    rows = [label_report("" if t is None or t != t else str(t)) for t in texts]
    return pd.DataFrame(rows, columns=list(FINDINGS), index=index, dtype=float)


def to_chexbert(labels: Mapping[str, float]) -> dict[str, float]:
    """Map one report's finding labels onto :data:`CHEXBERT_14` (nan where no source).

    Several findings mapping to one class aggregate as positive > uncertain > negative.
    """
    out: dict[str, float] = {c: NAN for c in CHEXBERT_14}
    for finding, cls in FINDING_TO_CHEXBERT.items():
        value = labels.get(finding, NAN)
        if value is None or math.isnan(float(value)):
            continue
        out[cls] = _combine(out[cls], float(value))
    return out


CHEXBERT_ONLY_PATTERNS: dict[str, tuple[str, ...]] = {
    "Edema": (
        r"\b(?:pulmonary |interstitial |alveolar )?edema\b",
        r"\b(?:pulmonary )?(?:vascular|venous) congestion\b",
        r"\bpulmonary congestion\b",
        r"\bfluid overload\b",
        r"\b(?:congestive )?heart failure\b",
        r"\bchf\b",
    ),
    "Consolidation": (r"\bconsolidat(?:ion|ions|ive|ed)\b",),
    "Atelectasis": (
        r"\batelecta(?:sis|ses|tic)\b",
        r"\b(?:lobar |segmental |subsegmental )?collapse\b",
    ),
    "Enlarged Cardiomediastinum": (
        r"\b(?:widened|widening of the|enlarged) (?:superior )?mediastinum\b",
        r"\bmediastinal (?:widening|enlargement)\b",
        r"\b(?:superior )?mediastinum (?:is|appears|remains) (?:widened|enlarged)\b",
    ),
}
"""Mentions of the CheXbert classes that no finding of ours covers (or covers only in part:
consolidation also counts as ``lung_opacity``, mediastinal widening adds to the aortic
enlargement that :data:`FINDING_TO_CHEXBERT` maps onto Enlarged Cardiomediastinum)."""

_CHEXBERT_ONLY_RE: dict[str, re.Pattern[str]] = {
    c: _compile(p) for c, p in CHEXBERT_ONLY_PATTERNS.items()
}


def label_chexbert(text: str) -> dict[str, float]:
    """Label one report with the 14 :data:`CHEXBERT_14` classes: 1.0 / 0.0 / -1.0 / nan.

    The findings of :func:`label_report` mapped by :func:`to_chexbert`, plus the mentions of
    :data:`CHEXBERT_ONLY_PATTERNS` under the same negation and uncertainty rules; classes
    aggregate as positive > uncertain > negative. ``No Finding`` is 1.0 when nothing (ours or
    CheXbert-only) is positive or uncertain, else 0.0. Works on any report text.
    """
    ours = label_report(text)
    out = to_chexbert(ours)
    for clause in _clauses(text or ""):
        for cls, value in _label_clause(clause, _CHEXBERT_ONLY_RE, {}):
            out[cls] = _combine(out[cls], value)
    abnormal = ours["no_finding"] == 0.0 or any(
        out[c] in (1.0, -1.0) for c in CHEXBERT_ONLY_PATTERNS
    )
    out["No Finding"] = 0.0 if abnormal else 1.0
    return out


def label_reports_chexbert(texts: Iterable[str]) -> pd.DataFrame:
    """:func:`label_chexbert` of many reports: one row per report, the 14 classes as columns
    (:data:`CHEXBERT_14` order). A :class:`pandas.Series` keeps its index."""
    index = texts.index if isinstance(texts, pd.Series) else None
    rows = [label_chexbert("" if t is None or t != t else str(t)) for t in texts]
    return pd.DataFrame(rows, columns=list(CHEXBERT_14), index=index, dtype=float)
