"""Synthetic radiology reports for the chest X-ray phantom.

:func:`write_report` turns a study's 0/1 finding labels into a short
``"FINDINGS: ...\\nIMPRESSION: ..."`` report in the style of MIMIC-CXR:

* The simulated radiologist *perceives* each positive finding with probability
  :data:`MENTION_RATE` (pulmonary fibrosis, aortic enlargement and tuberculosis are
  mentioned in only ~3% of positive studies, as the paper found for MIMIC-CXR, Sec. 4.1).
  A positive finding that is not perceived is never written and never negated: the report
  is silent about it (it may still say "no acute cardiopulmonary process" when nothing
  else is mentioned, and normal-anatomy sentences that do not name it, e.g. "The lungs
  are clear", may appear, as in real under-reported studies).
* Perceived findings are written with several templates and synonyms each, in random
  order; ~10-15% of them are hedged ("possible", "cannot exclude", "may represent").
* Some truly absent findings are negated ("No pneumothorax", "without pleural effusion");
  optional normal-anatomy sentences are added when consistent with the labels.
* Reports never mention sex, age, weight or BMI (Sec. 4.4: demographics are not
  routinely in reports).
* Cohort shifts the style: ICU reports are "portable AP" with lines and tubes first,
  out-patient and screening reports have more normal-anatomy sentences.

Every phrase is chosen so that :func:`raddino_lib.text.labeller.label_report` reads the
intended label back (tested), so text-derived labels differ from the image labels only
through deliberate under-reporting and hedging.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np

from raddino_lib.data.schema import FINDINGS

# --------------------------------------------------------------------------------------
# Rates
# --------------------------------------------------------------------------------------

MENTION_RATE: dict[str, float] = {
    "lung_opacity": 0.90,
    "cardiomegaly": 0.88,
    "pleural_thickening": 0.80,
    "aortic_enlargement": 0.03,
    "pulmonary_fibrosis": 0.03,
    "tuberculosis": 0.03,
    "pneumothorax": 0.95,
    "chest_tube": 0.95,
    "rib_fracture": 0.60,
    "pneumonia": 0.90,
    "pleural_effusion": 0.93,
    "nodule": 0.85,
    "support_devices": 0.97,
    "no_finding": 1.0,
}
"""Probability that a positive finding is written in the report at all."""

HEDGE_RATE: dict[str, float] = {
    "lung_opacity": 0.15,
    "cardiomegaly": 0.12,
    "pleural_thickening": 0.12,
    "aortic_enlargement": 0.15,
    "pulmonary_fibrosis": 0.20,
    "tuberculosis": 0.30,
    "pneumothorax": 0.12,
    "chest_tube": 0.0,
    "rib_fracture": 0.20,
    "pneumonia": 0.30,
    "pleural_effusion": 0.12,
    "nodule": 0.15,
    "support_devices": 0.0,
}
"""Probability that a written positive finding is hedged (uncertain)."""

NEGATION_RATE: dict[str, float] = {
    "lung_opacity": 0.45,
    "cardiomegaly": 0.15,
    "pleural_thickening": 0.03,
    "aortic_enlargement": 0.02,
    "pulmonary_fibrosis": 0.02,
    "tuberculosis": 0.02,
    "pneumothorax": 0.55,
    "chest_tube": 0.02,
    "rib_fracture": 0.08,
    "pneumonia": 0.15,
    "pleural_effusion": 0.55,
    "nodule": 0.06,
    "support_devices": 0.0,
}
"""Probability that a truly absent finding is explicitly negated in a list."""

IMPRESSION_RATE: dict[str, float] = {
    "lung_opacity": 0.7,
    "cardiomegaly": 0.5,
    "pleural_thickening": 0.4,
    "aortic_enlargement": 0.4,
    "pulmonary_fibrosis": 0.7,
    "tuberculosis": 0.9,
    "pneumothorax": 0.95,
    "chest_tube": 0.4,
    "rib_fracture": 0.7,
    "pneumonia": 0.9,
    "pleural_effusion": 0.7,
    "nodule": 0.8,
    "support_devices": 0.3,
}
"""Probability that a written finding is repeated in the impression."""

# Impression order: most urgent first.
IMPRESSION_ORDER: tuple[str, ...] = (
    "pneumothorax",
    "pneumonia",
    "lung_opacity",
    "pleural_effusion",
    "tuberculosis",
    "nodule",
    "rib_fracture",
    "cardiomegaly",
    "pulmonary_fibrosis",
    "aortic_enlargement",
    "pleural_thickening",
    "chest_tube",
    "support_devices",
)

# --------------------------------------------------------------------------------------
# Phrase tables. Placeholders: {side} (left/right), {rib} (ordinal), {n} (small integer).
# Certain sentences must not contain negation/uncertainty cue words.
# --------------------------------------------------------------------------------------

POSITIVE_SENTENCES: dict[str, tuple[str, ...]] = {
    "lung_opacity": (
        "There is a patchy opacity in the {side} lower lobe.",
        "Patchy airspace opacity at the {side} lung base.",
        "{Side} basilar consolidation.",
        "Hazy opacities in both lower lungs.",
        "Focal consolidation in the {side} upper lobe.",
        "Ill-defined opacity projecting over the {side} mid lung.",
        "Increased airspace opacity in the {side} lower lung zone.",
        "Bibasilar airspace opacities.",
        "Opacification of the {side} lung base.",
    ),
    "cardiomegaly": (
        "The heart is enlarged.",
        "The heart is mildly enlarged.",
        "Moderate cardiomegaly.",
        "Cardiomegaly is again noted.",
        "The cardiac silhouette is enlarged.",
        "Enlarged cardiac silhouette.",
        "Mild enlargement of the cardiac silhouette.",
        "Heart size is moderately enlarged.",
    ),
    "pleural_thickening": (
        "{Side} apical pleural thickening.",
        "Pleural thickening along the {side} lateral chest wall.",
        "Calcified pleural plaques bilaterally.",
        "Biapical pleural thickening.",
        "Mild thickening of the {side} pleura.",
        "Smooth {side} pleural thickening.",
    ),
    "aortic_enlargement": (
        "The thoracic aorta is tortuous.",
        "Tortuous and unfolded thoracic aorta.",
        "The aorta is ectatic.",
        "Mild aortic enlargement.",
        "Unfolding of the thoracic aorta.",
        "Prominent aortic knob.",
        "Dilated ascending aorta.",
    ),
    "pulmonary_fibrosis": (
        "Coarse reticular markings at the lung bases compatible with pulmonary fibrosis.",
        "Bibasilar fibrotic changes.",
        "Interstitial fibrosis in both lower lobes.",
        "Chronic fibrotic changes at the lung bases.",
        "Basilar-predominant pulmonary fibrosis.",
        "Mild fibrosis at the {side} base.",
    ),
    "tuberculosis": (
        "{Side} upper lobe cavitary changes consistent with tuberculosis.",
        "Apical scarring and volume loss consistent with prior tuberculosis.",
        "Findings compatible with active tuberculosis in the {side} upper lobe.",
        "Upper lobe fibrocavitary disease compatible with TB.",
        "Bilateral upper lobe changes typical of pulmonary tuberculosis.",
    ),
    "pneumothorax": (
        "Small {side} apical pneumothorax.",
        "There is a moderate {side} pneumothorax.",
        "Tiny {side} apical pneumothorax is present.",
        "{Side} pneumothorax measuring approximately {n} cm at the apex.",
        "A {side}-sided pneumothorax is seen.",
        "{Side} apical pneumothorax with a visible pleural line.",
    ),
    "chest_tube": (
        "{Side} chest tube in place.",
        "A {side}-sided chest tube is present with its tip at the apex.",
        "{Side} pigtail catheter projects over the {side} lung base.",
        "Interval placement of a {side} chest tube.",
        "{Side} basilar pleural drain in place.",
    ),
    "rib_fracture": (
        "Acute fracture of the {side} {rib} rib.",
        "{Side} {rib} rib fracture.",
        "Nondisplaced fractures of the {side} {rib} and {rib2} ribs.",
        "Healing {side} rib fractures.",
        "Displaced {side} posterior rib fracture.",
    ),
    "pneumonia": (
        "Findings consistent with {side} lower lobe pneumonia.",
        "Multifocal pneumonia.",
        "{Side} lower lobe pneumonia.",
        "Appearance compatible with pneumonia in the {side} lower lobe.",
        "Pneumonia involving the {side} lung base.",
    ),
    "pleural_effusion": (
        "Small {side} pleural effusion.",
        "Moderate {side} pleural effusion.",
        "Bilateral pleural effusions.",
        "Blunting of the {side} costophrenic angle consistent with a small effusion.",
        "There is a small {side} effusion.",
        "Layering {side} pleural effusion.",
    ),
    "nodule": (
        "{Side} upper lobe pulmonary nodule measuring {n} mm.",
        "A {n} mm nodule projects over the {side} mid lung.",
        "Nodular opacity in the {side} upper lobe.",
        "Solitary pulmonary nodule in the {side} lower lobe.",
        "Rounded nodular density at the {side} lung base.",
    ),
    "support_devices": (
        "Endotracheal tube terminates approximately {n} cm above the carina.",
        "ET tube in standard position.",
        "Enteric tube courses below the diaphragm and out of view.",
        "Nasogastric tube tip is in the stomach.",
        "{Side} internal jugular central venous catheter tip in the SVC.",
        "{Side} PICC line terminates in the mid SVC.",
        "{Side} chest wall pacemaker in place.",
        "Tracheostomy tube in place.",
        "Lines and tubes are in standard position.",
    ),
}
"""Certain findings-section sentences per finding."""

HEDGE_PHRASES: dict[str, tuple[str, ...]] = {
    "lung_opacity": (
        "a subtle {side} basilar opacity",
        "early consolidation in the {side} lower lobe",
        "a faint opacity at the {side} base",
    ),
    "cardiomegaly": ("mild cardiomegaly", "mild enlargement of the cardiac silhouette"),
    "pleural_thickening": ("mild {side} pleural thickening", "a small pleural plaque"),
    "aortic_enlargement": ("mild aortic enlargement", "an ectatic thoracic aorta"),
    "pulmonary_fibrosis": ("early interstitial fibrosis", "mild basilar fibrosis"),
    "tuberculosis": ("reactivation tuberculosis", "pulmonary tuberculosis"),
    "pneumothorax": ("a small {side} apical pneumothorax", "a tiny {side} pneumothorax"),
    "chest_tube": ("a {side} pleural drain",),
    "rib_fracture": ("a nondisplaced {side} {rib} rib fracture", "a subtle {side} rib fracture"),
    "pneumonia": ("pneumonia", "early pneumonia", "{side} lower lobe pneumonia", "infection"),
    "pleural_effusion": ("a small {side} pleural effusion", "a trace {side} effusion"),
    "nodule": ("a small {side} pulmonary nodule", "a nodular opacity in the {side} upper lobe"),
    "support_devices": ("a {side} PICC line",),
}
"""Noun phrases for hedged mentions."""

HEDGE_TEMPLATES: tuple[str, ...] = (
    "Possible {bare}.",
    "Cannot exclude {np}.",
    "Questionable {bare}.",
    "Findings may represent {np}.",
    "Suspected {bare}.",
    "Probable {bare}.",
    "Findings concerning for {np}.",
    "{NP} is not excluded.",
    "{NP} cannot be excluded.",
)
"""Hedge templates; ``{np}`` is a hedge phrase, ``{bare}`` it without a leading article,
``{NP}`` it capitalised."""

IMPRESSION_SENTENCES: dict[str, tuple[str, ...]] = {
    "lung_opacity": (
        "{Side} lung opacity.",
        "{Side}-sided airspace opacity.",
        "Airspace opacity as described.",
    ),
    "cardiomegaly": ("Cardiomegaly.", "Mild cardiomegaly.", "Enlarged cardiac silhouette."),
    "pleural_thickening": ("{Side} pleural thickening.", "Pleural plaques."),
    "aortic_enlargement": ("Tortuous thoracic aorta.", "Aortic enlargement."),
    "pulmonary_fibrosis": ("Pulmonary fibrosis.", "Chronic fibrotic lung changes."),
    "tuberculosis": ("Findings consistent with tuberculosis.", "Pulmonary tuberculosis."),
    "pneumothorax": ("{Side} pneumothorax.", "Small {side} apical pneumothorax."),
    "chest_tube": ("{Side} chest tube in place.", "{Side} chest tube in satisfactory position."),
    "rib_fracture": ("{Side} rib fracture.", "Acute {side} {rib} rib fracture."),
    "pneumonia": ("{Side} lower lobe pneumonia.", "Pneumonia."),
    "pleural_effusion": ("{Side} pleural effusion.", "Small {side} effusion."),
    "nodule": (
        "{Side} pulmonary nodule. Recommend chest CT for further characterization.",
        "{Side} lung nodule.",
    ),
    "support_devices": (
        "Support devices in standard position.",
        "Lines and tubes as described.",
        "Endotracheal tube in satisfactory position.",
    ),
}
"""Certain impression sentences per finding."""

NEGATION_PHRASES: dict[str, tuple[str, ...]] = {
    "lung_opacity": ("focal consolidation", "consolidation", "focal airspace opacity"),
    "cardiomegaly": ("cardiomegaly",),
    "pleural_thickening": ("pleural thickening",),
    "aortic_enlargement": ("aortic enlargement",),
    "pulmonary_fibrosis": ("pulmonary fibrosis",),
    "tuberculosis": ("active tuberculosis",),
    "pneumothorax": ("pneumothorax",),
    "chest_tube": ("chest tube",),
    "rib_fracture": ("displaced rib fracture", "acute rib fracture", "acute fracture"),
    "pneumonia": ("pneumonia",),
    "pleural_effusion": ("pleural effusion", "effusion", "pleural effusion"),
    "nodule": ("suspicious pulmonary nodules", "pulmonary nodule"),
    "support_devices": ("support devices",),
}
"""Noun phrases used after a negation cue for truly absent findings."""

NEGATION_LIST_TEMPLATES: tuple[str, ...] = (
    "No {items}.",
    "There is no {items}.",
    "No evidence of {items}.",
    "No {items} is seen.",
    "Negative for {items}.",
)
NEGATION_SINGLE_TEMPLATES: tuple[str, ...] = ("{NP} is not seen.", "{NP} is not identified.")

# (sentence, must be absent in labels, must not be written as positive, topic)
NORMAL_SENTENCES: tuple[tuple[str, tuple[str, ...], tuple[str, ...], str], ...] = (
    (
        "The cardiomediastinal silhouette is within normal limits.",
        ("cardiomegaly",),
        ("aortic_enlargement",),
        "heart",
    ),
    (
        "The cardiomediastinal silhouette is normal.",
        ("cardiomegaly",),
        ("aortic_enlargement",),
        "heart",
    ),
    ("Normal cardiomediastinal contours.", ("cardiomegaly",), ("aortic_enlargement",), "heart"),
    ("Heart size is normal.", ("cardiomegaly",), (), "heart"),
    ("The heart is not enlarged.", ("cardiomegaly",), (), "heart"),
    ("Heart size is within normal limits.", ("cardiomegaly",), (), "heart"),
    ("Mediastinal and hilar contours are unremarkable.", (), ("aortic_enlargement",), "hila"),
    ("The hila are unremarkable.", (), (), "hila"),
    (
        "The lungs are clear.",
        (),
        ("lung_opacity", "pneumonia", "nodule", "pulmonary_fibrosis", "tuberculosis"),
        "lungs",
    ),
    (
        "Lungs are well expanded and clear.",
        (),
        ("lung_opacity", "pneumonia", "nodule", "pulmonary_fibrosis", "tuberculosis"),
        "lungs",
    ),
    ("The costophrenic angles are sharp.", ("pleural_effusion",), ("pleural_thickening",), "cp"),
    ("Pulmonary vascularity is normal.", (), (), "vasc"),
    ("There is no pulmonary edema.", (), (), "vasc"),
    ("No acute osseous abnormality.", (), ("rib_fracture",), "bones"),
    ("The visualized osseous structures are intact.", (), ("rib_fracture",), "bones"),
    ("The diaphragms are normal in contour.", (), (), "diaphragm"),
    ("The upper abdomen is unremarkable.", (), (), "abdomen"),
    ("Lung volumes are normal.", (), (), "volumes"),
    ("The aorta is normal in caliber.", ("aortic_enlargement",), (), "aorta"),
    ("No lines or tubes are seen.", ("support_devices", "chest_tube"), (), "devices"),
)
"""Optional normal-anatomy sentences with the labels they require."""

HEALTHY_IMPRESSIONS: tuple[str, ...] = (
    "No acute cardiopulmonary process.",
    "No acute cardiopulmonary abnormality.",
    "No acute intrathoracic process.",
    "No radiographic evidence of acute cardiopulmonary disease.",
    "No acute cardiopulmonary findings.",
)
"""Impressions for studies with nothing written as positive."""

VIEW_SENTENCES: dict[str, tuple[str, ...]] = {
    "PA": ("PA view of the chest.", "PA and lateral views of the chest were obtained."),
    "AP": ("AP upright view of the chest.", "Single frontal view of the chest."),
    "LATERAL": ("Lateral view of the chest.", "PA and lateral views of the chest."),
}
ICU_VIEW_SENTENCES: tuple[str, ...] = (
    "Portable AP semi-upright view of the chest.",
    "Single portable AP view of the chest.",
    "Portable supine AP radiograph of the chest.",
)
LOW_VOLUME_SENTENCES: tuple[str, ...] = ("Low lung volumes.", "Lung volumes are low.")

# Cohort style: (view-sentence probability, min and max normal sentences, negation factor).
COHORT_STYLE: dict[str, tuple[float, int, int, float]] = {
    "icu": (0.7, 0, 2, 0.8),
    "inpatient": (0.35, 1, 3, 1.0),
    "outpatient": (0.3, 2, 4, 1.0),
    "screening": (0.3, 2, 4, 1.1),
}
DEFAULT_STYLE: Final = (0.3, 1, 3, 1.0)

SIDES: tuple[str, ...] = ("left", "right")
RIBS: tuple[str, ...] = ("third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth")


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _is_positive(value: object) -> bool:
    """1/True/1.0 -> True; 0, None, nan or blank -> False."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return v == v and v > 0.5


def _is_absent(value: object) -> bool:
    """0/False/0.0 -> True; positive, None, nan or blank -> False."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return v == v and v <= 0.5


def _pick(rng: np.random.Generator, seq: Sequence[str]) -> str:
    return seq[int(rng.integers(len(seq)))]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _fill(template: str, slots: Mapping[str, str]) -> str:
    return _cap(template.format(**slots))


def _join_items(items: Sequence[str]) -> str:
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return f"{items[0]} or {items[1]}"
    return ", ".join(items[:-1]) + f", or {items[-1]}"


def _slots(rng: np.random.Generator) -> dict[str, str]:
    """Random placeholder values for one finding (drawn once, reused in the impression)."""
    side = _pick(rng, SIDES)
    i = int(rng.integers(len(RIBS) - 1))
    return {
        "side": side,
        "Side": side.capitalize(),
        "rib": RIBS[i],
        "rib2": RIBS[i + 1],
        "n": str(int(rng.integers(2, 8))),
    }


def _hedged(rng: np.random.Generator, finding: str, slots: Mapping[str, str]) -> str:
    np_ = _pick(rng, HEDGE_PHRASES[finding]).format(**slots)
    bare = re.sub(r"^(?:an?|the) ", "", np_)
    return _cap(_pick(rng, HEDGE_TEMPLATES).format(np=np_, bare=bare, NP=_cap(np_)))


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def write_report(
    labels: Mapping[str, int], *, view: str, cohort: str, rng: np.random.Generator
) -> str:
    """Write a synthetic ``"FINDINGS: ...\\nIMPRESSION: ..."`` report for one study.

    Args:
        labels: 0/1 per name in :data:`~raddino_lib.data.schema.FINDINGS` (missing = 0).
        view: one of :data:`~raddino_lib.data.schema.VIEWS`.
        cohort: "icu", "inpatient", "outpatient" or "screening" (other strings get a
            default style).
        rng: the only source of randomness; the same state gives the same report.

    Returns:
        The report text. It never mentions sex, age, weight or BMI.
    """
    findings = [f for f in FINDINGS if f != "no_finding"]
    positive = {f: _is_positive(labels.get(f, 0)) for f in findings}
    # Unknown (nan/None) labels are never negated: treated as possibly present.
    absent = {f: _is_absent(labels.get(f, 0)) for f in findings}
    view_p, n_min, n_max, neg_factor = COHORT_STYLE.get(cohort.lower(), DEFAULT_STYLE)
    icu = cohort.lower() == "icu"

    # 1. What the radiologist writes: mention and hedge draws, in schema order.
    status: dict[str, str] = {}  # finding -> "certain" | "hedged" (written positives only)
    slots: dict[str, dict[str, str]] = {}
    for f in findings:
        slots[f] = _slots(rng)
        if positive[f] and rng.random() < MENTION_RATE[f]:
            status[f] = "hedged" if rng.random() < HEDGE_RATE[f] else "certain"
    if "lung_opacity" in status and "pneumonia" in status:
        slots["pneumonia"] = dict(
            slots["pneumonia"], **{k: slots["lung_opacity"][k] for k in ("side", "Side")}
        )

    body: list[str] = []
    done: set[str] = set()
    negated: set[str] = set()

    # 2. Combined sentences.
    if status.get("chest_tube") == "certain" and absent["pneumothorax"]:
        if rng.random() < 0.4:
            tmpl = _pick(
                rng,
                (
                    "{Side} chest tube in place without pneumothorax.",
                    "{Side} chest tube in place; no pneumothorax.",
                ),
            )
            body.append(_fill(tmpl, slots["chest_tube"]))
            done.add("chest_tube")
            negated.add("pneumothorax")
    if status.get("lung_opacity") == "certain" and "pneumonia" in status and rng.random() < 0.5:
        if status["pneumonia"] == "certain":
            tmpl = _pick(
                rng,
                (
                    "{Side} lower lobe consolidation consistent with pneumonia.",
                    "Patchy {side} basilar opacity compatible with pneumonia.",
                ),
            )
        else:
            tmpl = _pick(
                rng,
                (
                    "{Side} basilar opacity, which may represent pneumonia.",
                    "{Side} lower lobe opacity, possibly pneumonia.",
                ),
            )
        body.append(_fill(tmpl, slots["lung_opacity"]))
        done.update(("lung_opacity", "pneumonia"))

    # 3. One sentence per remaining written finding (devices: 1-3 in the ICU).
    devices: list[str] = []
    for f in findings:
        if f not in status or f in done:
            continue
        if status[f] == "hedged":
            body.append(_hedged(rng, f, slots[f]))
        elif f == "support_devices":
            k = int(rng.integers(1, 4)) if icu else 1
            idx = rng.permutation(len(POSITIVE_SENTENCES[f]))[:k]
            devices.extend(_fill(POSITIVE_SENTENCES[f][i], slots[f]) for i in sorted(idx))
        else:
            body.append(_fill(_pick(rng, POSITIVE_SENTENCES[f]), slots[f]))

    # 4. Negations of truly absent findings.
    to_negate: list[str] = []
    for f in findings:
        if not absent[f] or f in negated:
            continue
        if f == "lung_opacity" and "pneumonia" in status:
            continue
        if rng.random() < min(1.0, NEGATION_RATE[f] * neg_factor):
            to_negate.append(f)
    order = rng.permutation(len(to_negate))
    to_negate = [to_negate[i] for i in order]
    while to_negate:
        k = int(rng.integers(1, len(to_negate) + 1))
        group, to_negate = to_negate[:k], to_negate[k:]
        nps = [_pick(rng, NEGATION_PHRASES[f]) for f in group]
        if len(group) == 1 and rng.random() < 0.25:
            body.append(_cap(_pick(rng, NEGATION_SINGLE_TEMPLATES).format(NP=_cap(nps[0]))))
        else:
            body.append(_cap(_pick(rng, NEGATION_LIST_TEMPLATES).format(items=_join_items(nps))))

    # 5. Optional normal-anatomy sentences consistent with the labels.
    eligible = [
        i
        for i, (_, must_absent, unwritten, _) in enumerate(NORMAL_SENTENCES)
        if all(absent[f] for f in must_absent) and not any(f in status for f in unwritten)
    ]
    n_normal = int(rng.integers(n_min, n_max + 1)) + (0 if status else 1)
    topics: set[str] = set()
    for i in rng.permutation(len(eligible)):
        if len(topics) >= n_normal:
            break
        text, _, _, topic = NORMAL_SENTENCES[eligible[int(i)]]
        if topic in topics or (topic == "devices" and not icu):
            continue
        topics.add(topic)
        body.append(text)
    if icu and "volumes" not in topics and rng.random() < 0.3:
        body.append(_pick(rng, LOW_VOLUME_SENTENCES))
    if not body and not devices:
        body.append("The hila are unremarkable.")

    # 6. Order: shuffled body; ICU devices usually first; optional view sentence first.
    body = [body[i] for i in rng.permutation(len(body))]
    if devices:
        if icu and rng.random() < 0.8:
            body = devices + body
        else:
            pos = int(rng.integers(len(body) + 1))
            body = body[:pos] + devices + body[pos:]
    if rng.random() < view_p:
        if icu and view != "LATERAL":
            body.insert(0, _pick(rng, ICU_VIEW_SENTENCES))
        else:
            body.insert(0, _pick(rng, VIEW_SENTENCES.get(view, VIEW_SENTENCES["PA"])))

    # 7. Impression.
    impression: list[str] = []
    if not status:
        impression.append(_pick(rng, HEALTHY_IMPRESSIONS))
    else:
        chosen = [f for f in IMPRESSION_ORDER if f in status and rng.random() < IMPRESSION_RATE[f]]
        if not chosen:
            chosen = [next(f for f in IMPRESSION_ORDER if f in status)]
        for f in chosen:
            if status[f] == "hedged":
                impression.append(_hedged(rng, f, slots[f]))
            else:
                impression.append(_fill(_pick(rng, IMPRESSION_SENTENCES[f]), slots[f]))
        if len(impression) > 1 and rng.random() < 0.3:
            impression = [f"{i + 1}. {s}" for i, s in enumerate(impression)]

    return "FINDINGS: " + " ".join(body) + "\nIMPRESSION: " + " ".join(impression)
