"""``generate_dataset``: subjects -> studies -> images, streamed to disk in order.

Randomness (all ``np.random.default_rng`` with list seeds, independent of worker count):
- subject ``i``: ``[seed, i, 0]`` (cohort, split, studies, metadata, chronic findings,
  anatomy), ``[seed, i, 2]`` (geometry of chronic findings);
- study ``j`` of subject ``i``: ``[seed, i, 1, j]`` (views, acute findings),
  ``[seed, i, 3, j]`` (geometry of acute findings);
- image ``k`` (global index): ``[seed, k]`` (pose, noise, acquisition), ``[seed, k, 7]`` (report).

Workers write the PNG and mask files themselves; the parent writes ``records.csv`` rows in
image order, so memory does not grow with ``n``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raddino_lib.atomic import atomic_write_text
from raddino_lib.data import schema
from raddino_lib.data.io import encode_masks, encode_png, float_to_uint16
from raddino_lib.data.phantom import findings as fnd
from raddino_lib.data.phantom.anatomy import (
    Anatomy,
    Metadata,
    Pose,
    sample_anatomy,
    sample_metadata,
    sample_pose,
)
from raddino_lib.data.phantom.render import render_image

GENERATOR_NAME = "raddino_lib.data.phantom"
GENERATOR_VERSION = "1.2.0"
SPLIT_FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}


@dataclass(frozen=True)
class GenerationSummary:
    """What ``generate_dataset`` produced and how fast."""

    n_images: int
    n_subjects: int
    seconds: float
    images_per_second: float
    out_dir: Path


@dataclass(frozen=True)
class Subject:
    """Everything fixed per subject."""

    index: int
    cohort: str
    split: str
    n_studies: int
    meta: Metadata
    chronic: dict[str, int]
    anat: Anatomy


@dataclass(frozen=True)
class Task:
    """One image to render."""

    index: int
    subject: int
    study: int
    view: str
    seed: int
    size: int
    out_dir: str


def make_subject(seed: int, i: int) -> Subject:
    """Sample subject ``i`` (cheap; recomputed wherever needed)."""
    rng = np.random.default_rng([seed, i, 0])
    cohort = fnd.COHORTS[int(rng.choice(len(fnd.COHORTS), p=fnd.cohort_probabilities()))]
    u = rng.random()
    split = "train" if u < 0.70 else ("val" if u < 0.85 else "test")
    spec = fnd.COHORT_TABLE[cohort]
    n_studies = int(rng.choice(3, p=spec["studies_per_subject"])) + 1
    meta = sample_metadata(rng, cohort)
    chronic = fnd.sample_chronic(rng, cohort, meta.age)
    anat = sample_anatomy(rng, meta, chronic)
    return Subject(i, cohort, split, n_studies, meta, chronic, anat)


def study_plan(seed: int, subj: Subject, j: int) -> tuple[list[str], dict[str, int]]:
    """Views (frontal first, maybe a lateral) and labels of study ``j``."""
    rng = np.random.default_rng([seed, subj.index, 1, j])
    spec = fnd.COHORT_TABLE[subj.cohort]
    views = ["AP" if rng.random() < spec["p_ap"] else "PA"]
    if rng.random() < spec["p_lateral"]:
        views.append("LATERAL")
    labels = fnd.sample_study_findings(rng, subj.cohort, subj.meta.age, subj.chronic)
    return views, labels


def iter_tasks(seed: int, n: int, size: int, out_dir: str) -> Iterator[Task]:
    """Lazily enumerate the first ``n`` images (subject by subject)."""
    index = 0
    i = 0
    while True:
        subj = make_subject(seed, i)
        for j in range(subj.n_studies):
            views, _ = study_plan(seed, subj, j)
            for view in views:
                if index >= n:
                    return
                yield Task(index, i, j, view, seed, size, out_dir)
                index += 1
        i += 1


def finding_geometry(
    labels: dict[str, int],
    subj_rng: np.random.Generator,
    study_rng: np.random.Generator,
    view: str,
    cohort: str,
    age: int,
) -> dict:
    """Geometry of each present finding (chronic from the subject rng, acute from the study rng)."""
    fx: dict = {}
    r = subj_rng
    side = lambda g: int(g.choice([-1, 1]))  # noqa: E731
    # Chronic (always draw, so the sequence does not depend on other labels).
    nod = dict(
        side=side(r),
        q=r.uniform(0.3, 0.85),
        v=r.uniform(0.2, 0.85),
        r=r.uniform(0.009, 0.02),
        amp=r.uniform(0.16, 0.3),
    )
    nb = int(r.integers(1, 4))
    tb = dict(
        blobs=[
            (
                side(r),
                r.uniform(0.3, 0.8),
                r.uniform(0.06, 0.3),
                r.uniform(0.04, 0.08),
                r.uniform(0.4, 0.7),
            )
            for _ in range(nb)
        ],
        cavities=[
            (side(r), r.uniform(0.35, 0.7), r.uniform(0.1, 0.3), r.uniform(0.025, 0.045))
            for _ in range(int(r.random() < 0.5))
        ],
        scars=[
            (side(r), r.uniform(0.4, 0.8), r.uniform(0.05, 0.25))
            for _ in range(int(r.integers(0, 3)))
        ],
    )
    fib = dict(amp=r.uniform(0.3, 0.5), off=int(r.integers(0, 10_000)))
    plt = dict(
        side=side(r),
        apical=bool(r.random() < 0.4),
        thick=r.uniform(0.015, 0.035),
        v=r.uniform(0.3, 0.6),
        extent=r.uniform(0.15, 0.3),
    )
    for name, geo in (
        ("nodule", nod),
        ("tuberculosis", tb),
        ("pulmonary_fibrosis", fib),
        ("pleural_thickening", plt),
    ):
        if labels.get(name):
            fx[name] = geo
    # Acute.
    r = study_rng
    eff_sides = [[-1], [1], [-1, 1]][int(r.integers(0, 3))]
    eff = dict(sides=eff_sides, height=r.uniform(0.05, 0.3), rise=r.uniform(0.05, 0.12))
    nob = int(r.integers(1, 4))
    opa = dict(
        blobs=[
            (
                side(r),
                r.uniform(0.3, 0.85),
                r.uniform(0.3, 0.85),
                r.uniform(0.07, 0.16),
                r.uniform(0.06, 0.14),
                r.uniform(0.35, 0.6),
            )
            for _ in range(nob)
        ]
    )
    pna = dict(
        side=side(r),
        q=r.uniform(0.35, 0.75),
        v=r.uniform(0.5, 0.85),
        rx=r.uniform(0.12, 0.2),
        ry=r.uniform(0.1, 0.16),
        amp=r.uniform(0.55, 0.8),
        tex=int(r.integers(0, 6)),
    )
    ptx = dict(side=side(r), depth=r.uniform(0.03, 0.13), line=0.004, supine=view == "AP")
    ct_side = (
        ptx["side"]
        if labels.get("pneumothorax")
        else (eff_sides[0] if labels.get("pleural_effusion") else side(r))
    )
    tube = dict(
        side=ct_side,
        entry_v=r.uniform(0.55, 0.8),
        tip_q=r.uniform(0.3, 0.6),
        radius=r.uniform(0.006, 0.009),
        hole=r.uniform(0.15, 0.3),
    )
    frac = dict(
        side=side(r),
        rib=int(r.integers(3, 10)),
        u=r.uniform(0.45, 0.85),
        gap=r.uniform(0.004, 0.008),
        step=r.uniform(0.003, 0.008),
    )
    p_ett = 0.5 if cohort == "icu" else 0.2
    dev = dict(
        ett=r.random() < p_ett,
        line=r.random() < 0.5,
        line_side=side(r),
        ng=r.random() < 0.3,
        pacer=r.random() < 0.1 + 0.2 * (age > 70),
        ecg=[
            (float(r.uniform(-0.5, 0.5)), float(r.uniform(-0.7, 0.3)))
            for _ in range(int(r.integers(2, 5)))
        ]
        if r.random() < 0.4
        else [],
    )
    if not (dev["ett"] or dev["line"] or dev["ng"] or dev["pacer"] or dev["ecg"]):
        dev["line"] = True
    for name, geo in (
        ("pleural_effusion", eff),
        ("lung_opacity", opa),
        ("pneumonia", pna),
        ("pneumothorax", ptx),
        ("chest_tube", tube),
        ("rib_fracture", frac),
    ):
        if labels.get(name):
            fx[name] = geo
    if labels.get("support_devices"):
        if labels.get("chest_tube") and r.random() < 0.5:
            dev = dict(ecg=[])
        fx["support_devices"] = dev
    return fx


def image_pose(seed: int, index: int, view: str, anat: Anatomy) -> tuple[Pose, np.random.Generator]:
    """Pose of image ``index`` (global) and its generator, positioned after the pose draws.

    The single source of an image's pose: :func:`render_task` renders from here (the
    returned generator goes on to noise and acquisition), and
    :mod:`~raddino_lib.data.phantom.landmarks` rebuilds the geometry from it without rendering.
    """
    rng = np.random.default_rng([seed, index])
    return sample_pose(rng, view, anat), rng


def render_task(task: Task) -> tuple[list, str]:
    """Render and write one image (+ masks). Returns (csv row, report text)."""
    subj = make_subject(task.seed, task.subject)
    _, labels = study_plan(task.seed, subj, task.study)
    fx = finding_geometry(
        labels,
        np.random.default_rng([task.seed, task.subject, 2]),
        np.random.default_rng([task.seed, task.subject, 3, task.study]),
        task.view,
        subj.cohort,
        subj.meta.age,
    )
    pose, rng = image_pose(task.seed, task.index, task.view, subj.anat)
    img, masks = render_image(task.size, subj.anat, pose, task.view, subj.cohort, fx, rng)
    image_id = f"I{task.index:07d}"
    rel_img = f"images/{image_id}.png"
    out = Path(task.out_dir)
    _write(out / rel_img, encode_png(float_to_uint16(img)))
    rel_mask = ""
    if masks is not None:
        rel_mask = f"masks/{image_id}.npz"
        _write(out / rel_mask, encode_masks(masks))
    report = _report(
        labels, task.view, subj.cohort, np.random.default_rng([task.seed, task.index, 7])
    )
    m = subj.meta
    row = [
        f"S{task.subject:06d}",
        f"S{task.subject:06d}_{task.study}",
        image_id,
        rel_img,
        subj.split,
        task.view,
        subj.cohort,
        *(labels[f] for f in schema.FINDINGS),
        m.sex,
        m.age,
        m.weight,
        m.height,
        m.bmi,
        report,
        rel_mask,
    ]
    return row, report


def _write(path: Path, data: bytes) -> None:
    # Per-image files are written directly (an atomic rename per file costs ~1 ms of system
    # time); the dataset only becomes valid when records.csv is atomically renamed into place.
    with open(path, "wb") as fh:
        fh.write(data)


def _report(labels: dict[str, int], view: str, cohort: str, rng: np.random.Generator) -> str:
    try:
        from raddino_lib.data.phantom.reports import write_report
    except ImportError:  # TODO(lead): remove once phantom/reports.py exists.
        present = [f.replace("_", " ") for f in schema.FINDINGS if f != "no_finding" and labels[f]]
        return f"{view} chest radiograph. " + (
            "Findings: " + ", ".join(present) + "."
            if present
            else "No acute cardiopulmonary abnormality."
        )
    return write_report(labels, view=view, cohort=cohort, rng=rng)


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {out} exists and is not a folder; choose another path.")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(
                f"out_dir {out} exists and is not empty; pass overwrite=True (CLI: --overwrite) "
                "to replace a previous phantom dataset, or choose an empty/new folder."
            )
        if not ((out / "records.csv").exists() or (out / "dataset.json").exists()):
            raise ValueError(
                f"refusing to clear {out}: it is not empty and does not look like a dataset folder "
                "(no records.csv or dataset.json). Choose an empty/new folder."
            )
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)


def _init_worker(size: int) -> None:
    from raddino_lib.data.phantom.render import get_textures

    _tune_malloc()
    get_textures(size)


def _tune_malloc() -> None:
    """Keep image-sized buffers on the heap (glibc): avoids an mmap/munmap + page faults per
    temporary array, which otherwise costs ~25% of the time in system calls."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 * 1024 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def dataset_description(n: int, size: int, seed: int) -> dict:
    """Content of dataset.json (no timestamps: byte-identical for the same arguments)."""
    return {
        "generator": GENERATOR_NAME,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "n": n,
        "size": size,
        "image_format": "16-bit grayscale PNG",
        "mask_format": "npz: each key np.packbits(mask.ravel()), '__shape__' = [H, W]",
        "lateral_masks": "none (mask_path empty for LATERAL images)",
        "cohorts": list(fnd.COHORTS),
        "prevalences": {c: fnd.COHORT_TABLE[c]["prevalence"] for c in fnd.COHORTS},
        "findings": list(schema.FINDINGS),
        "mask_names": list(schema.MASK_NAMES),
        "split_fractions": SPLIT_FRACTIONS,
        "finding_model": fnd.describe(),
        "creation": {
            "randomness": "np.random.default_rng([seed, index]) per image; see generate.py"
        },
    }


def generate_dataset(
    out_dir: str | Path,
    n: int,
    size: int = 256,
    seed: int = 0,
    *,
    overwrite: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> GenerationSummary:
    """Write ``n`` phantom images (``size`` x ``size``) with records, masks and dataset.json.

    Byte-identical output for the same (n, size, seed), whatever ``workers``.
    Raises ValueError for n <= 0, size < 32, or a non-empty out_dir without overwrite.
    """
    if not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive integer (number of images), got {n!r}.")
    if not isinstance(size, (int, np.integer)) or size < 32:
        raise ValueError(f"size must be an integer >= 32 (pixels per side), got {size!r}.")
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    n, size, seed = int(n), int(size), int(seed)
    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    t0 = time.perf_counter()
    tasks = iter_tasks(seed, n, size, str(out))
    n_subjects = 0
    last_subject = -1
    from tqdm.auto import tqdm

    tmp_csv = out / ".records.csv.tmp"
    with (
        open(tmp_csv, "w", newline="", encoding="utf-8") as fh,
        tqdm(total=n, disable=not progress, desc="phantom", unit="img") as bar,
    ):
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(schema.RECORD_COLUMNS)
        if workers <= 1:
            _init_worker(size)
            results = map(render_task, tasks)
            pool = None
        else:
            import multiprocessing as mp

            methods = mp.get_all_start_methods()
            ctx = mp.get_context("fork" if "fork" in methods else "spawn")
            pool = ctx.Pool(workers, initializer=_init_worker, initargs=(size,))
            results = pool.imap(render_task, tasks, chunksize=8)
        try:
            for row, _ in results:
                writer.writerow(row)
                sid = row[0]
                if sid != last_subject:
                    n_subjects += 1
                    last_subject = sid
                bar.update(1)
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    os.replace(tmp_csv, out / "records.csv")
    atomic_write_text(
        out / "dataset.json",
        json.dumps(dataset_description(n, size, seed), indent=2, sort_keys=True) + "\n",
    )
    secs = time.perf_counter() - t0
    rate = n / secs if secs > 0 else float("inf")
    if True:
        print(
            f"phantom: wrote {n} images of {size}x{size} ({n_subjects} subjects) to {out} "
            f"in {secs:.2f} s = {rate:.1f} images/s"
        )
    return GenerationSummary(n, n_subjects, secs, rate, out)
