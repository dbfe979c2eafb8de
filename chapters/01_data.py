# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. The data: a synthetic multi-site chest X-ray phantom
#
# RAD-DINO was trained on 838k chest radiographs from six sources (the paper's Table B.1) and
# evaluated on VinDr-CXR, CANDID-PTX, RSNA Pneumonia, MIMIC-CXR reports and segmentation sets.
# None of these can be downloaded here, and a reader on a laptop has neither them nor a GPU.
# So the book ships a **phantom**: a procedural generator of chest radiographs that carries the
# same *kinds* of signal as the paper's data, with ground truth that real data never has.
#
# What the phantom must reproduce for the later chapters to mean anything:
#
# * **Anatomy that varies per subject** (lungs, heart, mediastinum and aortic knob, diaphragm,
#   20 posterior ribs, clavicles, spine, scapulae, breast shadows, soft tissue driven by body
#   size), rendered by attenuation along the beam, in PA, AP and lateral views.
# * **Several sites** with their own acquisition style and case mix, like Table B.1's cohorts,
#   so the data-size and diversity ablation has something to vary.
# * **Findings with the paper's names**: the six VinDr findings of Table 3, the CANDID-PTX
#   findings of Table 4 and a few more, with *small* findings (chest tube, pneumothorax edge,
#   rib fracture, nodule) faint enough that downsampling loses them (Section 3.1, A.1).
# * **Reports that leave things out**, as MIMIC-CXR's do: the paper found fibrosis, aortic
#   enlargement and tuberculosis in under 1% of reports. That is what lets a later chapter test
#   the claim that text supervision misses what text does not say.
# * **Metadata that shows in the pixels** (sex, age, weight, BMI) but is absent from the
#   reports (Section 4.4).
# * **No pixel shortcut.** Patients differ in pose, position, rotation, scale, field of view
#   and collimation, so no finding sits on fixed pixels. The last section measures this: a
#   logistic regression on downsampled raw pixels is the *floor* every encoder must beat.

# %% tags=["parameters"]
preset = "laptop"
data_dir = None  # a dataset folder in the generic format (None: the built-in phantom)
phantom_n = None
phantom_size = None
phantom_seed = None
pixel_floor_size = None
seeds = None

# %%
import raddino_lib.config as _rc

cfg = _rc.chapter_config(globals(), "01_data")

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from raddino_lib.data import summary
from raddino_lib.data.datasets import dataset_dir, ensure_phantom
from raddino_lib.data.records import load_image, load_masks, load_records
from raddino_lib.data.schema import (
    CANDID_FINDINGS,
    FINDING_ABBREV,
    FINDINGS,
    SMALL_FINDINGS,
    VINDR_FINDINGS,
)
from raddino_lib.eval.floor import pixel_floor
from raddino_lib.results import save_results
from raddino_lib.viz import data as vdata

pd.set_option("display.precision", 3)
display(Markdown(_rc.describe(cfg, ("preset", "data_dir", "phantom_n", "phantom_size",
                                    "phantom_seed", "pixel_floor_size", "seeds"))))

# %% [markdown]
# ## Generating (or loading) the dataset
#
# `dataset_dir(cfg)` returns `cfg.data_dir` when it is set, otherwise the phantom for
# `(phantom_n, phantom_size, phantom_seed)` from the cache, generating it on first use. The
# same seed gives byte-identical files; generation streams to disk, so memory does not grow
# with `phantom_n`. From the command line: `raddino phantom --out DIR --n N --size S --seed K`.

# %%
t0 = time.perf_counter()
root = dataset_dir(cfg)
t_data = time.perf_counter() - t0
df = load_records(root)
print(f"{root}: {len(df)} images of {df.subject_id.nunique()} subjects ({t_data:.1f} s)")
comp = summary.composition(df)
comp

# %% [markdown]
# The paper's pre-training mixture (Table B.1) for comparison: MIMIC-CXR (ICU, frontal) is
# 25% of its images, CheXpert (in- and outpatient, with laterals) 27%, PadChest (all wards,
# with laterals) 19%, NIH-CXR (frontal) 13%, BRAX 5% and a private outpatient set 11%. The
# phantom's cohorts mirror those *kinds* of site: an ICU cohort heavy on AP films and devices,
# an inpatient cohort, an outpatient cohort with laterals and more chronic findings, and a
# screening-like cohort that is mostly healthy.

# %% [markdown]
# ## A gallery by finding and cohort
#
# One frontal image per cell (a blank cell means the cohort has no such case in this sample).
# Contours: right lung (blue), left lung (green), pneumothorax (yellow), chest tube (magenta).
# Remember the radiological convention: the patient's left is on the image's right.

# %%
cohorts = sorted(df.cohort.unique())
show = ["no_finding", *VINDR_FINDINGS, *CANDID_FINDINGS, "pleural_effusion", "nodule",
        "support_devices"]
fig = vdata.gallery(root, df, show, cohorts, seed=cfg.seed)
plt.show()

# %% [markdown]
# Views: one PA, one AP and one lateral from each cohort that has them, to show the AP's
# magnified heart and projected scapulae, and the lateral's different silhouette.

# %%
fig = vdata.views_grid(root, df, cohorts)
plt.show()

# %% [markdown]
# ## Segmentation masks
#
# Every frontal image comes with masks in the same geometry as the image: both lungs, six lung
# zones (upper, mid and lower thirds of each lung, which partition it), the 20 posterior ribs,
# pneumothorax, chest tube, and heart and thorax outlines (used below to check the
# cardiothoracic ratio against the cardiomegaly label).

# %%
row = df[(df.view == "PA") & (df.mask_path.fillna("") != "")].iloc[0]
fig = vdata.mask_panels(load_image(root, row.path), load_masks(root, row))
plt.show()

# %% [markdown]
# ## Reports beside their labels
#
# Reports are written from the labels with varied phrasing, negations and hedges. Like real
# reports they never mention sex, age, weight or BMI, and some findings are rarely written
# down at all.

# %%
ex = df[df.view != "LATERAL"].sample(4, random_state=cfg.seed)
for _, r in ex.iterrows():
    pos = [FINDING_ABBREV[f] for f in FINDINGS if r[f] == 1]
    display(Markdown(f"**{r.image_id}** ({r.cohort}, {r.view}) labels: `{', '.join(pos)}`\n\n"
                     f"> {r.report.replace(chr(10), '  ' + chr(10) + '> ')}"))

# %% [markdown]
# ## Prevalence by cohort, and how often reports say so
#
# Left: fraction of images with each finding per cohort. The last column, `reported`, is the
# fraction of *positive* images whose report mentions the finding (as read back by the
# project's offline rule labeller, the same one later chapters use to score generated reports).

# %%
prev = summary.prevalence_by_cohort(df)
mention = summary.mention_rates(df)
fig = vdata.prevalence_heatmap(prev, mention["mentioned"])
plt.show()
mention

# %%
rare = ["pulmonary_fibrosis", "aortic_enlargement", "tuberculosis"]
rare_rate = mention.loc[rare, "mentioned"]
display(Markdown(
    "The paper (Section 4.1): a keyword search of 227.8k MIMIC-CXR reports found fibrosis, "
    "aortic enlargement and tuberculosis in **under 1%** of reports. Here, of the images that "
    "*have* these findings, the reports mention them in "
    + ", ".join(f"{f.replace('_', ' ')} {100 * v:.1f}%" for f, v in rare_rate.items())
    + f"; every other finding is mentioned in {100 * mention.drop(rare)['mentioned'].min():.0f}"
    f"-{100 * mention.drop(rare)['mentioned'].max():.0f}% of positive reports. Reports contradict "
    f"a true positive in {100 * mention['negated_when_positive'].max():.1f}% of cases at most."
))

# %% [markdown]
# ## Patient metadata
#
# Sex, age, weight, height and BMI (consistent with weight and height) differ by cohort. In
# the images they show through breast shadows and thoracic size (sex), bone density, cartilage
# calcification and aortic unfolding (age), and soft-tissue thickness, fat layer and noise
# (weight, BMI).

# %%
fig = vdata.metadata_figure(df)
plt.show()

# %% [markdown]
# ## Small findings and resolution
#
# The paper's Section 3.1 and Appendix A.1: large findings survive downsampling, small ones do
# not. The same phantom subjects rendered at 518 px (the paper's resolution), then resized to
# 224 and 112 px, zoomed on the finding where a mask locates it.

# %%
n_hi = min(cfg.phantom_n, 160)
root_hi = ensure_phantom(n_hi, 518, cfg.phantom_seed, progress=cfg.progress)
df_hi = load_records(root_hi)
images, titles, boxes = [], [], []
for f in SMALL_FINDINGS:
    sel = df_hi[(df_hi[f] == 1) & (df_hi.view != "LATERAL")]
    if not len(sel):
        continue
    r = sel.iloc[0]
    im = load_image(root_hi, r.path)
    box = None
    m = load_masks(root_hi, r).get(f) if isinstance(r.mask_path, str) and r.mask_path else None
    if m is not None and m.any():
        rr, cc = np.nonzero(m)
        pad = 40
        box = (rr.min() - pad, cc.min() - pad, rr.max() + pad, cc.max() + pad)
    images.append(im)
    titles.append(FINDING_ABBREV[f])
    boxes.append(box)
fig = vdata.resolution_figure(images, titles, boxes)
plt.show()

# %% [markdown]
# ## How real datasets map onto this format
#
# The phantom writes the project's generic on-disk format: `records.csv` (one row per image:
# `subject_id, study_id, image_id, path, split, view, cohort`, one 0/1 column per finding,
# `sex, age, weight, height, bmi, report, mask_path`), images, and one `.npz` of masks per
# image. The real-dataset adapters (a later part of the project) write the same format:
#
# | dataset | images | labels | metadata | reports | masks |
# |---|---|---|---|---|---|
# | MIMIC-CXR-JPG | `files/pXX/pSID/sSTUDY/*.jpg` | CheXpert/NegBio (1/0/-1/blank) | MIMIC-IV | `sSTUDY.txt` | lungs (derived) |
# | CheXpert | `train.csv` paths | 14 labels | Sex, Age | - | - |
# | VinDr-CXR | DICOM | `image_labels_*.csv`, 3 readers | DICOM tags | - | - |
# | CANDID-PTX | DICOM | PTX / tube / fracture CSVs | - | - | RLE pneumothorax, tubes |
# | RSNA Pneumonia | DICOM | boxes -> Target | - | - | boxes |
# | VinDr-RibCXR | PNG | - | - | - | 20 rib polygons |
#
# Uncertain (-1) and missing labels stay as -1 / blank and are masked out of every metric.
# Splits are always by subject.

# %% [markdown]
# ## How hard is this data? The raw-pixel floor
#
# A logistic regression on raw pixels, downsampled to `pixel_floor_size` px, for each finding
# (test AUPRC on frontal images; mean ± std over seeds that resample the training subjects)
# and for patient metadata (5-fold subject-grouped accuracy; age, weight and BMI in the
# paper's five bins). The metadata floor uses the frontal images without findings, the rows
# of the paper's Table 7 and of chapter 4, so chapter 4's encoders are compared with it on
# the same images. Every encoder in this book must beat this floor.

# %%
t0 = time.perf_counter()
floor = pixel_floor(root, df, [f for f in FINDINGS if f != "no_finding"],
                    size=cfg.pixel_floor_size, seeds=cfg.seeds, progress=cfg.progress)
t_floor = time.perf_counter() - t0
print(f"findings: {floor.n_images} frontal images; metadata: {floor.n_metadata} images "
      f"({floor.metadata_rows}); {cfg.pixel_floor_size} px, {t_floor:.1f} s")

# %%
results = {
    "dataset": str(root),
    "n_images": len(df),
    "n_subjects": int(df.subject_id.nunique()),
    "seconds_dataset": t_data,
    "composition": comp.reset_index().to_dict(orient="records"),
    "prevalence": prev.to_dict(),
    "mention_rate": mention.reset_index().to_dict(orient="records"),
    "floor": {
        "size": floor.size,
        "n_images": floor.n_images,
        "metadata_rows": floor.metadata_rows,
        "n_metadata": floor.n_metadata,
        "findings": floor.findings.reset_index().to_dict(orient="records"),
        "metadata": floor.metadata.reset_index().to_dict(orient="records"),
    },
}
path = save_results("01_data", cfg, results)
print("results written to", path)

# %% [markdown]
# The table below is rendered from the results file just written. The paper's columns are the
# VinDr-CXR AUPRCs of its weakest (CLIP@224) and strongest (RAD-DINO) encoder in Table 3: they
# are a different dataset, shown only to mark the range a useful benchmark leaves between a
# floor and a good encoder.

# %%
PAPER_TABLE3 = {  # VinDr-CXR AUPRC, Table 3
    "lung_opacity": (22.95, 47.55), "cardiomegaly": (52.91, 82.51),
    "pleural_thickening": (22.31, 46.13), "aortic_enlargement": (56.45, 83.53),
    "pulmonary_fibrosis": (25.12, 69.67), "tuberculosis": (18.41, 70.36),
}
saved = pd.DataFrame(results["floor"]["findings"]).set_index("finding")
table = pd.DataFrame({
    "prevalence": saved["prevalence"],
    "pixel floor AUPRC": saved["auprc_mean"],
    "± std": saved["auprc_std"],
    "paper CLIP@224": {k: v[0] / 100 for k, v in PAPER_TABLE3.items()},
    "paper RAD-DINO": {k: v[1] / 100 for k, v in PAPER_TABLE3.items()},
}).reindex(saved.index)
table

# %%
meta_saved = pd.DataFrame(results["floor"]["metadata"]).set_index("variable")
PAPER_TABLE7 = {"sex": (75.1, 99.6), "age": (56.5, 72.3), "weight": (43.8, 62.4),
                "bmi": (47.6, 71.3)}  # accuracy %, weakest baseline and RAD-DINO
meta_table = meta_saved.assign(
    **{"paper weakest": {k: v[0] / 100 for k, v in PAPER_TABLE7.items()},
       "paper RAD-DINO": {k: v[1] / 100 for k, v in PAPER_TABLE7.items()}}
)
meta_table

# %% [markdown]
# ## Verdict

# %%
fl = saved.dropna(subset=["auprc_mean"])
lines = []
if fl.empty:
    lines.append("* **Too few test positives** at this preset to measure the floor on any finding.")
else:
    worst = fl["auprc_mean"].idxmax()
    lift = fl["auprc_mean"] - fl["prevalence"]
    headroom_ok = bool(fl["auprc_mean"].max() < 0.9)
    small = [f for f in SMALL_FINDINGS if f in fl.index]
    lines += [
        f"* **Headroom:** the highest raw-pixel AUPRC is {fl.loc[worst, 'auprc_mean']:.2f} "
        f"({worst.replace('_', ' ')}, prevalence {fl.loc[worst, 'prevalence']:.2f}); "
        + ("no finding is near 1, so the phantom leaves room for encoders to differ."
           if headroom_ok else
           "**at least one finding is nearly solved by raw pixels: a shortcut remains.**"),
        f"* Median lift of the floor over prevalence: {lift.median():.2f} AUPRC; small findings "
        "(floor vs prevalence): "
        + (", ".join(f"{f.replace('_', ' ')} {fl.loc[f, 'auprc_mean']:.2f} vs "
                     f"{fl.loc[f, 'prevalence']:.2f}" for f in small) or "none measurable")
        + ".",
    ]
lines += [
    f"* Metadata from raw pixels ({results['floor']['n_metadata']} images, "
    f"{results['floor']['metadata_rows']}): "
    + ", ".join(f"{v} {m.acc_mean:.2f} (chance {m.chance:.2f})" for v, m in meta_saved.iterrows())
    + ".",
    f"* Reports: fibrosis, aortic enlargement and tuberculosis are mentioned in "
    f"{100 * rare_rate.max():.1f}% or fewer of positive reports "
    + ("(the paper's under-reporting holds here by construction)." if rare_rate.max() < 0.05
       else "(**more often than the paper's MIMIC-CXR**; at small sample sizes this is noise)."),
]
display(Markdown("\n".join(lines)))
