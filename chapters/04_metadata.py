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
# # 4. What reports leave out: patient metadata from frozen embeddings
#
# Radiology reports rarely state a patient's sex, age, weight or body-mass index, yet all four
# leave traces in a chest radiograph (breast shadows, bone density and cartilage calcification,
# the width of the soft-tissue and fat layers, the mediastinum). The paper's Section 4.4 and
# Table 7 asked whether a frozen encoder's embedding keeps that information: on the MIMIC-CXR
# studies whose reports say "no findings" (60.1k images), a logistic regression on each
# encoder's embedding predicted sex and the three continuous variables, binned into five
# intervals each (Appendix C.3), with 5-fold cross-validation. RAD-DINO reached 99.6% for sex
# against 75-86% for the text-supervised BioViL-T and BiomedCLIP, and led on age, weight and
# BMI by 10-20 points. The explanation offered: a text-supervised encoder has no reason to
# keep what the text never says.
#
# The phantom never writes sex, age, weight or BMI into a report (chapter 1), and renders
# them into the image (breasts, fat layer, body width, age-dependent calcification), so the
# same test applies here. The encoders are the ones of chapter 3, loaded from the cache.
#
# **Protocol.** Frontal images whose labels have no finding (`no_finding = 1`); the paper's
# bins (age < 20, 20-40, 40-60, 60-80, > 80 years; weight < 50, 50-65, 65-80, 80-95, > 95 kg;
# BMI < 18.5, 18.5-25, 25-30, 30-35, > 35); 5 folds grouped by subject and stratified by the
# target; in each fold the regularisation is chosen on an inner split of the training part
# only, and so is the feature kind: each encoder's CLS + mean patch token, or those plus its
# patch tokens pooled to a 4x4 grid (raw pixels: the downsampled image). Accuracy is reported as mean (std) over folds, beside the majority-class rate. On the
# phantom, one more row is not an encoder: the same probe on the subject's true anatomy
# parameters, which the generator sampled from the metadata before rendering (the ceiling).

# %% tags=["parameters"]
preset = "laptop"
data_dir = None  # a dataset folder in the generic format (None: the built-in phantom)
# extra_encoders: a list of "name=source" strings (local folders, timm:ARCH, hub ids)
extra_encoders = None
seed = None

# %%
import raddino_lib.config as _rc

cfg = _rc.chapter_config(globals(), "04_metadata")

# %%
import time

import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from raddino_lib.data.datasets import dataset_dir
from raddino_lib.data.phantom.truth import anatomy_table
from raddino_lib.data.records import load_records
from raddino_lib.eval import compare as cmp
from raddino_lib.eval.paper_numbers import TABLE7_METADATA
from raddino_lib.eval.probe import PAPER_BIN_EDGES, metadata_probe
from raddino_lib.results import save_results
from raddino_lib.viz.compare import mean_std_table

pd.set_option("display.precision", 3)
display(Markdown(_rc.describe(cfg, ("preset", "data_dir", "extra_encoders", "seed"))))
results: dict = {}
VARIABLES = ("sex", "age", "weight", "bmi")
# candidate features per encoder, chosen with C on the inner split of each fold
METADATA_KINDS = ("cls+mean", "cls+mean+grid")

# %% [markdown]
# ## The no-finding subset and its bins

# %%
root = dataset_dir(cfg)
records = load_records(root)
frontal = records[records["view"] != "LATERAL"].reset_index(drop=True)
subset = frontal[frontal["no_finding"] == 1]
rows_nf = subset.index.to_numpy()
subset = subset.reset_index(drop=True)
counts = {}
for var, edges in PAPER_BIN_EDGES.items():
    v = subset[var].dropna().to_numpy(dtype=float)
    labels = [f"< {edges[0]:g}"] + [f"{a:g}-{b:g}" for a, b in zip(edges[:-1], edges[1:], strict=True)] + [
        f"> {edges[-1]:g}"
    ]
    counts[var] = pd.Series(np.bincount(np.digitize(v, edges), minlength=5), index=labels)
sexes = subset["sex"].value_counts().to_dict()
results["subset"] = {"n_images": len(subset), "n_subjects": int(subset["subject_id"].nunique()),
                     "sex": sexes, "bins": {k: v.to_dict() for k, v in counts.items()}}  # fmt: skip
display(Markdown(f"{len(subset)} frontal no-finding images of {subset['subject_id'].nunique()} "
                 f"subjects; sex {sexes}. Images per bin (paper's edges):"))  # fmt: skip
display(pd.DataFrame({k: [f"{lab}: {n}" for lab, n in v.items()] for k, v in counts.items()}))

# %% [markdown]
# ## Embeddings and probes
#
# The frontal embeddings are the cached ones of chapter 3 (same encoder, rows and
# preprocessing: loaded, not recomputed); the no-finding rows are taken from them.

# %%
t0 = time.time()
encoders = cmp.book_encoders(cfg)
feats = {}
for name, enc in encoders.items():
    f = cmp.encoder_features(enc, root, frontal, cfg)
    kinds = [k for k in METADATA_KINDS if k in f] or list(f)  # raw pixels: one kind
    feats[name] = {k: f[k][rows_nf] for k in kinds}
if cfg.data_dir is None and cfg.dataset is None:  # the phantom knows each subject's anatomy: a ceiling
    feats[cmp.ORACLE] = anatomy_table(root, subset).to_numpy()
results["seconds_embed"] = time.time() - t0
t0 = time.time()
tables = cmp.compare_metadata(feats, subset, subset["subject_id"], variables=VARIABLES,
                              seed=cfg.seed, progress=cfg.progress)  # fmt: skip
results["seconds_probe"] = time.time() - t0
results["metadata"] = {n: t.drop(columns="correct").reset_index().to_dict(orient="records")
                       for n, t in tables.items()}  # fmt: skip

mean = pd.DataFrame({n: t["acc_mean"] for n, t in tables.items()}).T[list(VARIABLES)]
std = pd.DataFrame({n: t["acc_std"] for n, t in tables.items()}).T[list(VARIABLES)]
chance = next(iter(tables.values()))["chance"]
display(Markdown("**Paper, Table 7** (MIMIC-CXR no-finding subset, accuracy %, mean (std) "
                 "over 5 folds)"))  # fmt: skip
display(pd.DataFrame({m: {k: f"{v[0]:.1f} ({v[1]:.1f})" for k, v in r.items()}
                      for m, r in TABLE7_METADATA.items()}).T)  # fmt: skip
display(Markdown("**This run** (phantom no-finding subset, accuracy %, mean ± std over 5 "
                 "folds; best encoder per column in bold, the floors excluded)"))  # fmt: skip
display(mean_std_table(mean, std, exclude=[cmp.PIXELS, cmp.RANDOM, cmp.ORACLE]))
display((chance.to_frame("majority class").T * 100).round(1))

# %% [markdown]
# ## Which of the paper's claims held here
#
# The folds are shared by all encoders, so every image gets one out-of-fold prediction from
# each encoder's probe, and each claim compares the two encoders image by image: the
# accuracy difference over all scored images, with a 95% interval from 2,000 paired bootstrap
# resamples of the *subjects* (a drawn subject brings all its images, which share one
# anatomy). **Held** when the interval lies above zero, **did not hold** when below,
# **inconclusive** otherwise. (An earlier version counted the folds on which A was ahead, 4 of
# 5 needed: a sign test that passes by chance 19% of the time, and at `laptop`, with about
# 150 test images a fold, one or two predictions flipped by float rounding in the embeddings
# turned that count, and the verdict, between runs.)

# %%
rows = []
pairs = [(cmp.RAD_DINO, cmp.TEXT_SUP), (cmp.RAD_DINO, cmp.GENERAL), (cmp.RAD_DINO, cmp.PIXELS)]
for a, b in pairs:
    if a not in tables or b not in tables:
        continue
    for var in VARIABLES:
        v = cmp.accuracy_verdict(tables[a].loc[var, "correct"], tables[b].loc[var, "correct"],
                                 subset["subject_id"], seed=cfg.seed)  # fmt: skip
        rows.append({"claim": f"{a} > {b}: {var}", "acc A": mean.loc[a, var],
                     "acc B": mean.loc[b, var], "A - B": v["diff"], "lo": v["lo"],
                     "hi": v["hi"], "images": v["n"], "subjects": v["subjects"],
                     "verdict": v["verdict"]})  # fmt: skip
verdicts = pd.DataFrame(rows).set_index("claim")
results["claims"] = verdicts.reset_index().to_dict(orient="records")
display(verdicts.style.format({"acc A": "{:.3f}", "acc B": "{:.3f}", "A - B": "{:+.3f}",
                               "lo": "{:+.3f}", "hi": "{:+.3f}"}))  # fmt: skip

# %%
held = verdicts[verdicts.index.str.startswith(f"{cmp.RAD_DINO} > {cmp.TEXT_SUP}")]
n_held = int((held["verdict"] == "held").sum())
encoders_only = mean.drop(index=[cmp.ORACLE], errors="ignore")
lines = []
for var in VARIABLES:
    best = encoders_only[var].idxmax()
    line = (f"- **{var}**: best encoder {best} {encoders_only.loc[best, var]:.3f}, "
            f"majority class {chance[var]:.3f}")  # fmt: skip
    if cmp.ORACLE in mean.index:
        line += f", anatomy oracle {mean.loc[cmp.ORACLE, var]:.3f}"
    if encoders_only[var].max() <= chance[var] + 0.01:
        line += " (no encoder, not even raw pixels, rises above the majority class)"
    lines.append(line)
pix_age = mean.loc[cmp.PIXELS, "age"] if cmp.PIXELS in mean.index else float("nan")
raw_age = ("find it" if pix_age > chance["age"] + 0.02 else "do not find it either") + (
    f" ({pix_age:.3f} against a majority class of {chance['age']:.3f})")
# Is the raw-pixel signal brightness? Probe age from each image's mean and spread alone.
if cmp.PIXELS in feats:
    px = next(iter(feats[cmp.PIXELS].values()))
    bright = metadata_probe(np.stack([px.mean(1), px.std(1)], 1), subset, subset["subject_id"],
                            variables=("age",), seed=cfg.seed).loc["age", "acc_mean"]  # fmt: skip
    results["age_from_brightness"] = float(bright)
    bright_line = (f"an image's mean and standard deviation alone give {bright:.3f}, so the "
                   "signal is " + ("spatial, not brightness" if bright <= chance["age"] + 0.01
                                   else "partly brightness"))  # fmt: skip
else:
    bright_line = "n/a"
kinds_line = "; ".join(
    f"{n}: " + ", ".join(f"{v} {pd.Series(t.loc[v, 'kinds']).mode()[0]}" for v in VARIABLES)
    for n, t in tables.items() if n not in (cmp.PIXELS, cmp.ORACLE)
)
display(Markdown(f"""
**Reading.** The paper's claim, RAD-DINO ahead of the text-supervised encoders on every
metadata variable, held here for {n_held} of {len(held)} variables:
{", ".join(f"{i.split(': ')[1]} {r['A - B'] * 100:+.1f} points [{r['lo'] * 100:+.1f}, {r['hi'] * 100:+.1f}] ({r['verdict']})" for i, r in held.iterrows())}.
The phantom's no-finding subset is {results["subset"]["n_images"]} images of
{results["subset"]["n_subjects"]} subjects, not the paper's 60k images, so the intervals span several points; differences
smaller than that are reported as inconclusive.

Where is the information? The oracle row probes the phantom's own anatomy parameters (thorax
width, domes, heart, aortic knob, fat, breasts, bone density, calcification, ...), so it is
the most any image encoder could extract:

{chr(10).join(lines)}

A variable on which the oracle is high but no encoder rises far above the majority rate is one
the phantom samples into its anatomy but draws faintly, or in a form these small encoders do not
keep linearly; the encoder comparison says little there. Age is that variable at `laptop`. In
phantom 1.1 no encoder, not even raw pixels, rose above the majority class (a ridge regression
of age measured R² 0.05 for RAD-DINO-mini and 0.01 for raw pixels): the cues were a few pixels at
64 px. Phantom 1.2 (this run) draws age into the image's layout (lower, flatter domes, a wider
mediastinum and aortic knob, earlier cartilage calcification, more prominent lung markings).
Raw pixels {raw_age}; {bright_line}. The encoders keep less of it in their CLS and mean patch
token; the pooled patch grid gives some back. The feature kind chosen on the
inner splits, per variable, was: {kinds_line}.
"""))
save_results("04_metadata", cfg, results)
