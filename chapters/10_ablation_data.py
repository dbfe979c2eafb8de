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
# # 10. Ablation: pretraining data size and diversity (Figure 2)
#
# Section 3.3 of the paper grows the pretraining set the way the data became available:
# MIMIC-CXR first (197k images, an ICU cohort), then the frontal images of more cohorts
# (CheXpert, NIH-CXR; 546k frontal images in all with PadChest and BRAX, whose outpatient
# studies "provide an additional performance boost, due to the increased diversity of
# findings"), and last the lateral views and a private set. Each set pretrains RAD-DINO; the
# small sets stop early on a validation probe, since they overfit. The claims: (1) VinDr-CXR
# macro AUPRC grows with the pretraining data, and (2) even the smallest, MIMIC-only model
# stays above the text-supervised baselines.
#
# Here the phantom's cohorts play the datasets' parts: the ICU cohort (MIMIC-CXR), the
# inpatient and screening cohorts (CheXpert, NIH-CXR), the outpatient cohort (PadChest, BRAX),
# then the laterals; `ablation_data_points` rungs of that ladder are trained (the last is
# always all images, the random-init reference run of chapters 8 and 9). All runs get the same
# `ablation_steps`; every rung but the last is probed at the teacher snapshot of best
# validation AUPRC (snapshots every `ablation_snapshot_every` steps), the last at its final
# step. At `paper` the same code trains ViT-B/14 runs on the real datasets through the
# adapters (chapter 1), whose cohort names replace the phantom's.

# %% tags=["parameters"]
preset = "laptop"
seed = None
ablation_steps = None  # optimiser steps of each pretraining run (None: the preset's)
ablation_data_points = None  # rungs of the data ladder (2 to 4; the last is all images)
probe_seeds = None  # e.g. [0, 1, 2, 3, 4]

# %%
import raddino_lib.config as _rc

cfg = _rc.chapter_config(globals(), "10_ablation_data")

# %%
import time

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display
from matplotlib_inline.backend_inline import set_matplotlib_formats

from raddino_lib.data.datasets import dataset_dir
from raddino_lib.data.records import load_records
from raddino_lib.data.schema import FINDING_ABBREV, VINDR_FINDINGS
from raddino_lib.data.summary import probe_ready
from raddino_lib.eval import ablation as ab
from raddino_lib.eval import compare as cmp
from raddino_lib.eval.pretrain_probe import frontal_records
from raddino_lib.results import save_results
from raddino_lib.viz.ablation import sweep_figure
from raddino_lib.viz.compare import mean_std_table

display(Markdown(_rc.describe(cfg, ("preset", "seed", "image_size", "ablation_steps",
                                    "ablation_snapshot_every", "ablation_data_points",
                                    "ablation_batch_size", "batch_size", "probe_seeds"))))  # fmt: skip
set_matplotlib_formats("jpeg")
results: dict = {}
t_start = time.time()
root = dataset_dir(cfg)
records = load_records(root)
frontal = frontal_records(records)
FINDINGS, SKIPPED = probe_ready(frontal, VINDR_FINDINGS)
results["findings"], results["findings_skipped"] = FINDINGS, SKIPPED

# %% [markdown]
# ## The runs

# %%
points = ab.data_points(cfg)
sweep = ab.run_sweep(cfg, points, root, frontal, FINDINGS)
sweep["x"] = sweep["pretrain_images"].astype(float)
base = ab.probe_baselines(cfg, [cmp.GENERAL, cmp.TEXT_SUP], root, frontal, FINDINGS)
results["sweep"] = sweep.to_dict(orient="records")
results["baselines"] = base.to_dict(orient="records")
display(sweep[["label", "pretrain_images", "pretrain_steps", "trained_steps", "pretrain_seconds",
               "probed_step", "val_macro", "kind", "seconds"]].set_index("label"))  # fmt: skip
display(Markdown(
    f"`probed_step`: the snapshot each run was probed at. Every rung but the last stops early on "
    f"the validation probe (one seed, every {cfg.ablation_snapshot_every} steps): training ends "
    f"once {ab.EARLY_STOP_PATIENCE} snapshots in a row have not beaten the best one "
    f"(`trained_steps`), and the best is probed; {cfg.ablation_steps} is the full budget."))  # fmt: skip
curves = {r["label"]: r["val_curve"] for r in results["sweep"] if r["val_curve"]}
if curves:
    display(pd.DataFrame(curves).rename_axis("step").round(4))

# %% [markdown]
# ## Figure 2, this run
#
# VinDr-style macro AUPRC (mean ± std over the probe seeds) against the number of pretraining
# images (log axis); dashed lines: the frozen baselines. The paper's figure rises from the
# MIMIC-only model to the full set and stays above BioViL-T, BiomedCLIP and the CLIP models
# throughout.

# %%
fig = sweep_figure(sweep, {"VinDr-style findings": FINDINGS}, x="x",
                   xlabel="pretraining images", baselines=base, log_x=True)  # fmt: skip
plt.show()
plt.close(fig)
rows = pd.concat([sweep, base], ignore_index=True)
mean, std = ab.sweep_frames(rows, FINDINGS, FINDING_ABBREV)
display(mean_std_table(mean, std))

# %% [markdown]
# ## Which claims held here
#
# Each rung against the one before it and the smallest rung against the text-supervised
# baseline, per-seed macro AUPRC; verdicts as in chapter 8.

# %%
claims = []
for i in range(1, len(sweep)):
    a, b = sweep.iloc[i], sweep.iloc[i - 1]
    claims.append(ab.claim(f"'{a['label']}' beats '{b['label']}'", a["macro_seeds"],
                           b["macro_seeds"]))  # fmt: skip
small = sweep.iloc[0]
for _, b in base.iterrows():
    claims.append(ab.claim(f"'{small['label']}' beats {b['label']} (frozen)",
                           small["macro_seeds"], b["macro_seeds"]))  # fmt: skip
claims_df = pd.DataFrame(claims).round(2).set_index("claim")
results["claims"] = claims_df.reset_index().to_dict(orient="records")
display(claims_df)
results["seconds"] = round(time.time() - t_start, 1)
save_results("10_ablation_data", cfg, results)

# %%
first, last = sweep.iloc[0], sweep.iloc[-1]
text_rows = [c for c in claims_df.index if cmp.TEXT_SUP in c]
vs_text = claims_df.loc[text_rows[0], "verdict"] if text_rows else "not measured (no such encoder)"
grows = (claims_df["verdict"].iloc[: len(sweep) - 1] == "held").sum()
display(Markdown(f"""
**Reading.** Macro AUPRC went from {100 * first['macro_mean']:.1f} with
{first['pretrain_images']} pretraining images ({first['label']}) to
{100 * last['macro_mean']:.1f} with {last['pretrain_images']} ({last['label']}); the growth
held on {grows} of {len(sweep) - 1} steps of the ladder. The paper's second claim, that the
smallest set already beats the text-supervised encoders: **{vs_text}**.
Caveats: every rung gets the same {cfg.ablation_steps} steps, so the small sets are seen many
more times per image (early stopping picked steps
{", ".join(str(s) for s in sweep['probed_step'][:-1])}); and the phantom's cohorts differ in
what its generator varies (acquisition style, view mix, age and finding prevalences), a
narrow stand-in for the hospitals, scanners and patients the paper's datasets added. Whole chapter: {results['seconds'] / 60:.1f} min.
"""))  # fmt: skip
