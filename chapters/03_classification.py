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
# # 3. Classification with frozen encoders
#
# The paper's central comparison (its Section 3.2, Tables 3 and 4, Appendix Table A.1): freeze
# each image encoder, fit a linear classifier on its embeddings, and compare the test AUPRC
# per finding. RAD-DINO, trained on images alone, came out ahead of encoders trained with
# radiology reports (BioViL-T, BiomedCLIP, MRM) and of general-domain ones (CLIP, DINOv2),
# most clearly on findings that reports rarely mention (aortic enlargement, pulmonary
# fibrosis, tuberculosis: under 1% of MIMIC-CXR reports) and on lateral views, which share
# their report with the frontal image but show less of what it says.
#
# This chapter runs the same comparison on the phantom, where every image has its true labels
# and the reports under-report some findings on purpose (chapter 1). The paper's encoders
# cannot be downloaded here, so each row has an in-project stand-in trained through the
# library on this machine, with the same ViT shape as RAD-DINO-mini:
#
# * **RAD-DINO-mini**: chapter 2's DINOv2-recipe run on the phantom's training images, no text;
# * **text-supervised CLIP**: a CLIP-style image-report contrastive model on the same training
#   images and their reports (the stand-in for BioViL-T and BiomedCLIP: it can only learn
#   what the reports say);
# * **general-domain DINO**: the same DINOv2 engine and recipe on crops of natural images
#   (the stand-in for DINOv2 trained on LVD-142M);
# * **random init** and **raw pixels** (downsampled and standardised), the floors.
#
# Real encoders (a `microsoft/rad-dino` folder, CLIP or DINOv2 checkpoints on a local disk)
# join the table through the `extra_encoders` parameter, e.g.
# `-p extra_encoders '["RAD-DINO=/data/models/rad-dino"]'`.
#
# **Probe protocol.** Frontal images only (as the paper); splits by subject; for each finding
# a logistic regression on standardised frozen features, its regularisation chosen on the
# validation split; then 5 seeds, each refitting on a different random 80% of the training
# subjects and scoring the test split. Seeds use the same training subsets for every encoder,
# so differences between encoders are compared seed by seed. Each encoder's feature set (CLS;
# CLS + mean patch token, DINOv2's linear evaluation; or those plus the patch tokens pooled to
# a coarse grid) is chosen on validation only. Missing or uncertain labels are masked per
# finding.

# %% tags=["parameters"]
preset = "laptop"
data_dir = None  # a dataset folder in the generic format (None: the built-in phantom)
dataset = None  # or a real dataset by adapter name (vindr, rsna, candid, ...), with data_root
data_root = None  # that dataset's own folder, as downloaded
probe_seeds = None  # e.g. [0, 1, 2, 3, 4]
# extra_encoders: a list of "name=source" strings (local folders, timm:ARCH, hub ids)
extra_encoders = None
probe_epochs = None  # epochs of the augmented (paper) probe
seed = None

# %%
import raddino_lib.config as _rc

cfg = _rc.chapter_config(globals(), "03_classification")

# %%
import time
from dataclasses import replace

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from raddino_lib.data.datasets import dataset_dir
from raddino_lib.data.records import load_records
from raddino_lib.data.schema import CANDID_FINDINGS, FINDING_ABBREV, VINDR_FINDINGS
from raddino_lib.data.summary import NOT_LABELLED, mention_rates, probe_ready
from raddino_lib.eval import compare as cmp
from raddino_lib.eval.paper_numbers import (
    TABLE3_VINDR,
    TABLE4_CANDID_RSNA,
    TABLE_A1_LATERAL,
    paper_frame,
)
from raddino_lib.results import save_results
from raddino_lib.viz.compare import comparison_figure, mean_std_table

pd.set_option("display.precision", 3)
display(Markdown(_rc.describe(cfg, ("preset", "data_dir", "dataset", "data_root", "probe_seeds", "probe_kinds",
                                    "probe_grid", "extra_encoders", "probe_epochs"))))  # fmt: skip
results: dict = {}

# %% [markdown]
# ## The encoders
#
# Baselines are trained on first use and cached (`.cache/pretrain`, `.cache/baselines`);
# a rerun loads them. With `concurrent_runs` 2 (the laptop preset) the general-domain and CLIP
# runs train side by side, each in its own process on one core, which on a 2-core CPU is
# faster than one after the other on both (`raddino_lib.lanes`). The table gives each
# encoder's input side, token count and size.

# %%
root = dataset_dir(cfg)
REAL = bool(cfg.dataset or cfg.data_dir)  # real data (an adapter's folder may hold blank labels)
DATA = cfg.dataset or ("data_dir" if cfg.data_dir else "phantom")
records = load_records(root)
results["data"] = {"name": DATA, "images": len(records)}
train_rows = records[records["split"] == "train"]
HAS_REPORTS = bool(train_rows["report"].fillna("").str.strip().astype(bool).any())
# The text-supervised stand-in learns from the training reports: without any, it is left out.
names = [n for n in cmp.ENCODER_ROLES if n != cmp.TEXT_SUP or HAS_REPORTS]
names += [e.partition("=")[0] for e in cfg.extra_encoders]
t0 = time.time()
encoders = cmp.book_encoders(cfg, include=names)
results["seconds_encoders"] = time.time() - t0
rows = []
for name, enc in encoders.items():
    d = enc.describe()
    role = [r.replace("phantom", DATA) for r in cmp.ENCODER_ROLES.get(name, ("external encoder", "", ""))]
    rows.append({"encoder": name, "stands in for": role[0], "supervision": role[1],
                 "pretraining data": role[2], "input px": d["image_size"],
                 "tokens": d["tokens"], "width": d["embed_dim"], "params (M)": d["params_m"]})  # fmt: skip
lineup = pd.DataFrame(rows).set_index("encoder")
results["encoders"] = lineup.reset_index().to_dict(orient="records")
display(lineup)

# %% [markdown]
# ## What the text-supervised encoder could learn
#
# Share of the training studies with a finding whose report mentions it (the phantom's
# simulated radiologist; chapter 1). A contrastive image-report model gets a training signal
# for a finding only through these mentions.

# %%
if HAS_REPORTS:
    mentions = mention_rates(train_rows)
    display(mentions)
    results["mention_rate_train"] = mentions.to_dict()
else:
    results["mention_rate_train"] = None
    display(Markdown(f"**{DATA} has no report text**: there are no mentions to count, and the "
                     "in-project text-supervised encoder, which learns from the training "
                     "reports, could not be trained, so it is left out of every table and its "
                     "claims are untested here. Add real text-supervised encoders (BiomedCLIP, "
                     "BioViL-T) through `extra_encoders`."))  # fmt: skip

# %% [markdown]
# ## Frozen features
#
# Embeddings are computed once per encoder, dataset rows, input side and preprocessing, and
# cached (`.cache/embeddings`); the metadata chapter reuses the frontal ones.

# %%
frontal = records[records["view"] != "LATERAL"].reset_index(drop=True)
lateral = records[records["view"] == "LATERAL"].reset_index(drop=True)
t0 = time.time()
feats_frontal = {n: cmp.encoder_features(e, root, frontal, cfg) for n, e in encoders.items()}
feats_lateral = (
    {n: cmp.encoder_features(e, root, lateral, cfg) for n, e in encoders.items()}
    if len(lateral) else {}
)  # fmt: skip
results["seconds_embed"] = time.time() - t0
print(f"{len(frontal)} frontal and {len(lateral)} lateral images embedded or loaded "
      f"in {results['seconds_embed']:.1f} s")  # fmt: skip

# %%
SEEDS = list(cfg.probe_seeds)
REFERENCES = [cmp.PIXELS, cmp.RANDOM]


def show(comp: cmp.Comparison, title: str, metric: str = "auprc") -> None:
    mean = comp.summary(metric).rename(columns=FINDING_ABBREV)
    std = comp.summary(metric, "std").rename(columns=FINDING_ABBREV)
    display(Markdown(f"**{title}** (test {metric.upper()} x 100, mean ± std over "
                     f"{len(comp.seeds)} seeds; best encoder per column in bold, the floors "
                     "excluded)"))  # fmt: skip
    display(mean_std_table(mean, std, exclude=REFERENCES))
    prev = comp.tables[next(iter(comp.tables))]["prevalence"].rename(FINDING_ABBREV)
    fig = comparison_figure(mean, std, prevalence=prev if metric == "auprc" else None,
                            title=title, ylabel=f"test {metric.upper()}")  # fmt: skip
    plt.show()
    plt.close(fig)
    kinds = pd.Series(comp.kinds(), name="features chosen on validation")
    display(kinds.to_frame().T)


# %% [markdown]
# ## Probes
#
# One probe per encoder on the frontal images covers the findings of Tables 3 and 4 together
# (the feature set is chosen once per encoder, on validation); the tables below are its
# columns.

# %%
FRONTAL_FINDINGS = (*VINDR_FINDINGS, *CANDID_FINDINGS, "pneumonia")
# A finding the dataset does not label at all is left out; one that is labelled but lacks a
# class in train or test is probed and stays blank in the tables (it cannot be scored).
READY, SKIPPED = probe_ready(frontal, FRONTAL_FINDINGS)
PROBED = [f for f in FRONTAL_FINDINGS if SKIPPED.get(f) != NOT_LABELLED]
results["findings_skipped"] = SKIPPED
if SKIPPED:
    display(Markdown(f"**Not scored on {DATA}** (a score needs both classes among the labelled "
                     "train and test images; findings with labels stay as blank columns):\n\n"
                     + "\n".join(f"* {FINDING_ABBREV[f]} ({f}): {why}"
                                  for f, why in SKIPPED.items())))  # fmt: skip
t0 = time.time()
frontal_comp = cmp.compare_encoders(feats_frontal, frontal, PROBED, seeds=SEEDS,
                                    progress=cfg.progress)  # fmt: skip
results["seconds_probe_frontal"] = time.time() - t0
print(f"frontal probes: {results['seconds_probe_frontal']:.1f} s")

# %% [markdown]
# ## Table 3: the six VinDr-CXR findings
#
# The paper's Table 3 first, then this run's. Aortic enlargement (AE), pulmonary fibrosis (PF)
# and tuberculosis (TB) are the findings the reports rarely mention.

# %%
display(Markdown("**Paper, Table 3** (VinDr-CXR, AUPRC, mean ± std over 5 seeds)"))
display(paper_frame(TABLE3_VINDR))
T3 = [f for f in VINDR_FINDINGS if f in PROBED]
table3 = frontal_comp.subset(T3) if set(T3) & set(READY) else None
if table3 is not None:
    results["table3"] = table3.to_json()
    show(table3, f"This run, Table 3 stand-in ({DATA}, frontal)")
else:
    print(f"none of the six VinDr findings can be probed on {DATA}")

# %% [markdown]
# ## Table 4: pneumothorax, chest tube, rib fracture and pneumonia
#
# The paper's CANDID-PTX findings (small or thin structures) and RSNA pneumonia, with AUROC
# for pneumonia as in the paper.

# %%
display(Markdown("**Paper, Table 4** (CANDID-PTX AUPRC; RSNA Pneumonia AUPRC and AUROC)"))
display(paper_frame(TABLE4_CANDID_RSNA))
T4 = [f for f in (*CANDID_FINDINGS, "pneumonia") if f in PROBED]
table4 = frontal_comp.subset(T4) if set(T4) & set(READY) else None
if table4 is not None:
    results["table4"] = table4.to_json()
    show(table4, f"This run, Table 4 stand-in ({DATA}, frontal)")
if table4 is not None and "pneumonia" in READY:
    auroc = table4.summary("auroc")[["pneumonia"]].rename(columns={"pneumonia": "PNA AUROC"})
    auroc["± std"] = table4.summary("auroc", "std")["pneumonia"]
    display((auroc * 100).round(1))
elif table4 is None:
    print(f"none of the Table 4 findings can be probed on {DATA}")

# %% [markdown]
# ## Table A.1: lateral views
#
# The paper probed three findings on PadChest lateral radiographs: vertebral degenerative
# changes (VDC), pleural effusion (PE) and costophrenic-angle blunting (CAB). The phantom's
# laterals show effusion, pleural thickening (which blunts the costophrenic angles) and lung
# opacity; it has no vertebral degeneration, so the third column is lung opacity. In the
# phantom, as in the paper's data, a lateral image carries the same report as its frontal
# image, and the text-supervised model was trained on both.

# %%
LATERAL_FINDINGS = ("pleural_effusion", "pleural_thickening", "lung_opacity")
display(Markdown("**Paper, Table A.1** (PadChest laterals, AUPRC)"))
display(paper_frame(TABLE_A1_LATERAL))
LAT_READY, LAT_SKIPPED = probe_ready(lateral, LATERAL_FINDINGS)
LAT_PROBED = [f for f in LATERAL_FINDINGS if LAT_SKIPPED.get(f) != NOT_LABELLED]
if feats_lateral and LAT_READY:
    t0 = time.time()
    table_a1 = cmp.compare_encoders(feats_lateral, lateral, LAT_PROBED, seeds=SEEDS,
                                    progress=cfg.progress)  # fmt: skip
    results["seconds_probe_table_a1"] = time.time() - t0
    results["table_a1"] = table_a1.to_json()
    show(table_a1, f"This run, Table A.1 stand-in ({DATA}, lateral)")
else:
    table_a1 = None
    print("this dataset has no lateral images" if not feats_lateral else
          f"none of {LATERAL_FINDINGS} can be probed on the lateral images of {DATA}")  # fmt: skip

# %% [markdown]
# ## The paper's probe: a linear layer trained on augmented images
#
# The tables above use the fast probe on cached features. The paper trained its linear
# layer with AdamW on augmented images (crops, small affine transforms, intensity jitter,
# noise) through the frozen encoder (Appendix C.3). Here that probe runs for the two encoders
# the central claim is about, on the six VinDr findings, with `probe_epochs` epochs.

# %%
from raddino_lib.eval.augmented_probe import augmented_probe

aug = None
AUG_FINDINGS = T3
if cfg.probe_epochs > 0 and table3 is not None:
    from raddino_lib.ssl.train import resolve_device

    t0 = time.time()
    aug_tables = {}
    for name in [n for n in (cmp.RAD_DINO, cmp.TEXT_SUP) if n in encoders]:
        aug_tables[name] = augmented_probe(
            encoders[name], root, frontal, AUG_FINDINGS, seeds=SEEDS, epochs=cfg.probe_epochs,
            lr=cfg.probe_lr, batch_size=cfg.probe_batch_size,
            device=str(resolve_device(cfg.device)), precision=cfg.precision, progress=cfg.progress,
        )  # fmt: skip
    aug = cmp.Comparison(aug_tables, list(AUG_FINDINGS), SEEDS)
    results["seconds_augmented_probe"] = time.time() - t0
    results["augmented"] = aug.to_json()
    show(aug, f"Augmented probe ({cfg.probe_epochs} epochs), VinDr findings")
    fast_vs_aug = pd.DataFrame({
        "fast probe (macro)": table3.summary()["macro"][list(aug_tables)],
        "augmented probe (macro)": aug.summary()["macro"],
    })  # fmt: skip
    display((fast_vs_aug * 100).round(1))

# %% [markdown]
# ## Which of the paper's claims held here
#
# Each claim compares the macro AUPRC over the named findings, seed by seed (the seeds share
# their training subsets across encoders). A claim **held** when encoder A is ahead on
# average and on at least 4 of 5 seeds, **did not hold** when it is behind in the same way,
# and is **inconclusive** otherwise.

# %%
RARE = ("aortic_enlargement", "pulmonary_fibrosis", "tuberculosis")
COMMON = ("lung_opacity", "cardiomegaly", "pleural_thickening")
R, T, G = cmp.RAD_DINO, cmp.TEXT_SUP, cmp.GENERAL
claims_3 = [
    cmp.Claim("RAD-DINO-mini > text-supervised, rarely reported findings (AE, PF, TB)", R, T, RARE),
    cmp.Claim("RAD-DINO-mini > text-supervised, well reported findings (LO, CM, PL-T)", R, T,
              COMMON),
    cmp.Claim("RAD-DINO-mini > text-supervised, all six VinDr findings", R, T, VINDR_FINDINGS),
    cmp.Claim("RAD-DINO-mini > general-domain DINO, all six VinDr findings", R, G,
              VINDR_FINDINGS),
    cmp.Claim("RAD-DINO-mini > raw pixels, all six VinDr findings", R, cmp.PIXELS,
              VINDR_FINDINGS),
    cmp.Claim("text-supervised > raw pixels, all six VinDr findings", T, cmp.PIXELS,
              VINDR_FINDINGS),
]  # fmt: skip
claims_4 = [
    cmp.Claim("RAD-DINO-mini > text-supervised, pneumothorax and chest tube", R, T,
              ("pneumothorax", "chest_tube")),
    cmp.Claim("RAD-DINO-mini > text-supervised, rib fracture", R, T, ("rib_fracture",)),
    cmp.Claim("RAD-DINO-mini > text-supervised, pneumonia (paper: no gap, -0.45)", R, T,
              ("pneumonia",)),
]  # fmt: skip
UNTESTED: list[str] = []


def ready_claims(comp, claims) -> pd.DataFrame:
    """Claims restricted to the findings ``comp`` probed (a claim left with none is listed
    as untested): on a real dataset some of the paper's findings have no labels."""
    kept = []
    for c in claims:
        fs = tuple(f for f in c.findings if comp is not None and f in comp.findings)
        gone = [e for e in (c.a, c.b) if comp is not None and e not in comp.tables]
        if not fs:
            UNTESTED.append(f"{c.text} (no probed finding)")
        elif gone:
            UNTESTED.append(f"{c.text} (no {' or '.join(gone)} encoder)")
        elif fs != c.findings:
            kept.append(replace(c, findings=fs, text=f"{c.text} [only {', '.join(FINDING_ABBREV[f] for f in fs)}]"))
        else:
            kept.append(c)
    return cmp.claims_table(comp, kept) if kept else pd.DataFrame()


verdicts = pd.concat(
    [ready_claims(table3, claims_3), ready_claims(table4, claims_4),
     ready_claims(table_a1, [cmp.Claim("RAD-DINO-mini > text-supervised, lateral views", R, T,
                                       LATERAL_FINDINGS)]),
     ready_claims(aug, [cmp.Claim("RAD-DINO-mini > text-supervised, augmented probe, rarely "
                                  "reported", R, T, RARE)])]
)  # fmt: skip
results["claims"] = verdicts.reset_index().to_dict(orient="records") if len(verdicts) else []
results["claims_untested"] = UNTESTED
if UNTESTED:
    display(Markdown(f"**Untested on {DATA}**: " + "; ".join(UNTESTED)))
display(verdicts.style.format({c: "{:.3f}" for c in verdicts.columns if c not in
                               ("A ahead on seeds", "verdict")}))  # fmt: skip

# %%
save_results("03_classification", cfg, results)


def _v(claim_start: str) -> str:
    hit = [r for r in results["claims"] if r["claim"].startswith(claim_start)]
    if not hit:
        return "not measured"
    r = hit[0]
    return f"{r['verdict']} ({r['A - B'] * 100:+.1f} AUPRC points, ahead on {r['A ahead on seeds']} seeds)"


display(Markdown(f"""
**Reading.** The paper's headline, an image-only encoder ahead of text-supervised ones on the
findings that reports rarely mention: {_v("RAD-DINO-mini > text-supervised, rarely")}. On the
well reported findings: {_v("RAD-DINO-mini > text-supervised, well")}. Against the
general-domain encoder: {_v("RAD-DINO-mini > general-domain")}. Against raw pixels:
{_v("RAD-DINO-mini > raw pixels")}. On laterals: {_v("RAD-DINO-mini > text-supervised, lateral")}.

{"The phantom is small (a few thousand images) and the encoders are narrow ViTs trained for "
 "minutes on a CPU, so the margins are in AUPRC points, not the paper's tens." if not REAL else
 f"This run read {DATA} ({len(records)} images) at the `{cfg.preset}` preset; the in-project "
 "encoders were trained on it at that preset's budget."}
Where a claim is inconclusive, the seeds' spread is as large as the difference at this budget.
"""))
