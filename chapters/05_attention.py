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
# # 5. Where the encoder looks, and which patches match: attention and correspondences
#
# The paper shows two kinds of pictures of what RAD-DINO learnt without labels. Figure A.2:
# the last layer's self-attention of the class token, per head, follows support devices and,
# on an image with effusion and opacities, concentrates in the lung fields, bases and hila.
# Figures 3 and A.3: for a landmark picked on one chest X-ray, the cosine similarity of its
# patch embedding with every patch of another subject's X-ray lights up the corresponding
# anatomy ("anatomical correspondences between images from different subjects are learnt
# during pre-training"); Figure A.4 does the same for findings (a consolidation, a nodule).
# Those figures are qualitative, on hand-picked points.
#
# The phantom knows where its anatomy is, so here the correspondence figure becomes a
# measurement: for ten landmarks (lung apices, costophrenic angles, carina, right and left
# heart borders, aortic knob, hemidiaphragm domes), over many pairs of images of different
# subjects, the distance in pixels between the best-matching target patch and the true
# landmark, per encoder. The encoders are chapter 3's, loaded from the cache.
#
# At the end of the chapter, an interactive figure: click anywhere on the query X-ray and the
# similarity of that patch to every patch of the targets is drawn at once. It works in the
# static book (the page does the arithmetic on the embeddings it carries) and in JupyterLab.

# %% tags=["parameters"]
preset = "laptop"
data_dir = None  # a dataset folder in the generic format (None: the built-in phantom)
# extra_encoders: a list of "name=source" strings (local folders, timm:ARCH, hub ids)
extra_encoders = None
seed = None
# corr_pairs: image pairs for the landmark measurement (None: the preset's)
corr_pairs = None
# corr_image_size: encoder input side for the patch grids (None: the preset's; 0: native)
corr_image_size = None

# %%
import raddino_lib.config as _rc

cfg = _rc.chapter_config(globals(), "05_attention")

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display
from matplotlib_inline.backend_inline import set_matplotlib_formats

from raddino_lib.data.datasets import dataset_dir
from raddino_lib.data.phantom.landmarks import LANDMARKS, landmark_table
from raddino_lib.data.records import load_image, load_masks, load_records
from raddino_lib.eval import compare as cmp
from raddino_lib.eval import correspondence as corr
from raddino_lib.models.registry import EncoderError
from raddino_lib.results import save_results
from raddino_lib.viz.attention import (
    attention_figure,
    cls_attention,
    head_concentration,
    head_table,
    region_focus,
)
from raddino_lib.viz.similarity import correspondence_figure, landmark_error_figure
from raddino_lib.viz.widget import LandmarkSimilarity

display(Markdown(_rc.describe(cfg, ("preset", "data_dir", "extra_encoders", "seed",
                                    "corr_pairs", "corr_image_size"))))  # fmt: skip
set_matplotlib_formats("jpeg")  # heatmap-heavy figures: JPEG keeps the page a few times lighter
results: dict = {}
root = dataset_dir(cfg)
records = load_records(root)
frontal = records[records["view"] != "LATERAL"].reset_index(drop=True)
test = frontal[frontal["split"] == "test"].reset_index(drop=True)
size = int(load_image(root, test.iloc[0]).shape[0])
encoders = {n: e for n, e in cmp.book_encoders(cfg).items() if e.kind != "pixels"}
side = cfg.corr_image_size or next(iter(encoders.values())).preprocess.image_size
results["setup"] = {"n_test_frontal": len(test), "image_px": size, "encoder_side": side,
                    "encoders": {n: e.describe() for n, e in encoders.items()}}  # fmt: skip

# %% [markdown]
# ## Self-attention of the class token (Figure A.2)
#
# The class token's attention over the patch grid in the last block, per head, read from the
# running model (no gradients, no roll-out; the model's output is unchanged). Images: one
# with support devices, one with pleural effusion and opacities, one without findings. Raw
# pixels have no attention and are left out. The concentration of a head is the share of its
# attention on its top 10% of patches (0.10 would be uniform).

# %%
examples = corr.pick_examples(test, cfg.corr_examples)
ex_images = np.stack([load_image(root, r) for r in examples["row"]])
x = torch.from_numpy(ex_images).float().unsqueeze(1)
att = {}
for name, enc in encoders.items():
    try:
        att[name] = cls_attention(corr.at_side(enc, side), x).numpy()
    except EncoderError as err:
        display(Markdown(f"*{name}: {err}*"))
fig = attention_figure(ex_images, att, heads=range(min(m.shape[1] for m in att.values())))
plt.show()
conc = {n: head_concentration(m) for n, m in att.items()}
results["attention"] = {"images": examples["label"].tolist(),
                        "paths": [r["path"] for r in examples["row"]],
                        "concentration": {n: c.tolist() for n, c in conc.items()}}  # fmt: skip
display(head_table(conc))
display(Markdown("Images: " + " · ".join(examples["label"])))

# %% [markdown]
# The paper reads Figure A.2 as attention "concentrated within the lung fields". On the
# phantom, whose lung masks are known, that is a number: the share of each head's attention
# that falls inside the lungs, divided by the lungs' share of the image (1.0: no preference),
# averaged over test images.

# %%
if cfg.data_dir is None and cfg.dataset is None:  # the phantom writes lung masks
    sample = test.iloc[: min(len(test), 64)]
    lungs = np.stack([(lambda m: m["lung_right"] | m["lung_left"])(load_masks(root, r))
                      for _, r in sample.iterrows()])  # fmt: skip
    xs = np.stack([load_image(root, r) for _, r in sample.iterrows()])
    lung_focus = {n: region_focus(corr.at_side(encoders[n], side), xs, lungs) for n in att}
    results["attention"]["lung_focus"] = {n: v.tolist() for n, v in lung_focus.items()}
    display(Markdown(f"Attention inside the lungs relative to their area ({len(sample)} test "
                     f"images; lungs cover {lungs.mean() * 100:.0f}% of an image on average):"))  # fmt: skip
    display(head_table(lung_focus, digits=2))

# %% [markdown]
# ## Landmark correspondences, measured
#
# Pairs of test-split frontal images of different subjects. For each landmark, the query
# patch that holds it is matched to the most similar target patch (cosine similarity of the
# last layer's patch embeddings); the error is the distance from that patch's centre to the
# target's true landmark, in pixels of the stored image. Two reference rows need no encoder:
# *same position* takes the target patch at the query landmark's position (radiographs are
# roughly aligned, so this is a strong baseline), *random patch* the mean distance over all
# patches. A third reference is the images themselves: *raw pixel patches* (each patch's
# pixels, mean removed) matched the same way show what local appearance alone achieves. No
# patch-level match can beat the *grid floor*, the distance from a landmark to the centre of
# its own patch. *Correct side*: the share of matches on the same side of the target's
# midline (through the carina) as the true landmark; 50% is blind to left and right.

# %%
t0 = time.time()
grids = {n: corr.patch_grids(e, root, test, cfg) for n, e in encoders.items()}
grid_hw = list(next(iter(grids.values())).shape[1:3])
results["seconds_embed"] = time.time() - t0
have_truth = cfg.data_dir is None and cfg.dataset is None  # only the phantom has landmarks
if have_truth:
    lms = landmark_table(root, test, inside_only=True)
    pairs = corr.sample_pairs(test, cfg.corr_pairs, seed=cfg.seed)
    images = np.stack([load_image(root, r) for _, r in test.iterrows()])
    pix = corr.pixel_patch_grid(images, tuple(grid_hw))
    errors = corr.measure_correspondences({**grids, corr.PIXEL_PATCHES: pix}, lms, LANDMARKS,
                                          pairs, size)  # fmt: skip
    summary = corr.summarize_errors(errors, size)
    sides = corr.side_agreement(errors, lms, size, tuple(grid_hw))
    results["landmarks"] = {"pairs": len(pairs), "grid": grid_hw, "summary": summary,
                            "side_agreement": sides}  # fmt: skip
    order = [*encoders, corr.PIXEL_PATCHES, corr.SAME_POSITION, corr.RANDOM_PATCH]
    table = pd.DataFrame({n: {"median px": summary[n]["median_px"],
                              "mean px": summary[n]["mean_px"],
                              "median % of side": summary[n]["median_pct"],
                              "correct side %": 100 * sides.get(n, np.nan)}
                          for n in order}).T  # fmt: skip
    per_lm = pd.DataFrame({n: {lm: v["median_px"] for lm, v in summary[n]["per_landmark"].items()}
                           for n in order}).T  # fmt: skip
    floor = next(iter(summary.values()))["floor_median_px"]
    display(Markdown(f"**This run**: {len(pairs)} pairs x {len(LANDMARKS)} landmarks, patch "
                     f"grid {grid_hw[0]}x{grid_hw[1]} on {size}-px images (one patch = "
                     f"{size / grid_hw[1]:.0f} px; grid floor: median {floor:.1f} px). "
                     "Best-match error, lower is better:"))  # fmt: skip
    display(table.round(1))
    display(Markdown("Median error per landmark (pixels):"))
    display(per_lm.round(1))
    landmark_error_figure(errors, size, order)
    plt.show()
else:
    display(Markdown("*A real dataset carries no landmark coordinates: the measurement is "
                     "skipped; the figures and the widget below still work.*"))  # fmt: skip

# %% [markdown]
# ## Which claims held here
#
# The paper's figures suggest that RAD-DINO's patch embeddings find the same anatomy in
# another subject's image. Here that becomes: RAD-DINO-mini's median error below the
# text-supervised encoder's, random init's, the general-domain encoder's and the no-feature
# *same position* rule's. The interval is a 95% bootstrap over image pairs of the difference
# in median error (negative: RAD-DINO-mini closer); **held** when the whole interval is below
# zero, **did not hold** when it is above, **inconclusive** otherwise.

# %%
rows = []
for b in [cmp.TEXT_SUP, cmp.RANDOM, cmp.GENERAL, corr.SAME_POSITION]:
    if have_truth and cmp.RAD_DINO in summary and b in summary:
        c = corr.compare_medians(errors, cmp.RAD_DINO, b, seed=cfg.seed)
        verdict = "held" if c["held"] else ("did not hold" if c["lo_px"] > 0 else "inconclusive")
        rows.append({"claim": f"{cmp.RAD_DINO} closer than {b}", **c, "verdict": verdict})
claims = pd.DataFrame(rows, columns=["claim", "diff_px", "lo_px", "hi_px", "held", "n",
                                     "verdict"]).set_index("claim")  # fmt: skip
results["claims"] = claims.reset_index().to_dict(orient="records")
display(claims[["diff_px", "lo_px", "hi_px", "verdict"]].round(2))

# %%
if have_truth and len(claims):
    rd = summary[cmp.RAD_DINO]
    per = rd["per_landmark"]
    best_lm = min(per, key=lambda k: per[k]["median_px"])
    worst_lm = max(per, key=lambda k: per[k]["median_px"])
    said = "; ".join(f"{i.split(' than ')[1]}: {r['diff_px']:+.1f} px "
                     f"[{r['lo_px']:+.1f}, {r['hi_px']:+.1f}] ({r['verdict']})"
                     for i, r in claims.iterrows())  # fmt: skip
    pix_med = summary[corr.PIXEL_PATCHES]["median_px"]
    same_med = summary[corr.SAME_POSITION]["median_px"]
    enc_sides = {n: v for n, v in sides.items() if n in encoders}
    if rd["median_px"] < same_med:
        gist = ("RAD-DINO-mini's patch embeddings localise these landmarks better than copying "
                "the query position, which is what the paper's figures show")
    else:
        gist = (f"no encoder here localises a landmark better than copying the query position "
                f"({same_med:.1f} px): the phantom's images are framed alike, and these "
                f"laptop-scale patch embeddings mostly say what a patch contains (lung, bone, "
                f"mediastinum, background), like the raw pixel patches ({pix_med:.1f} px), "
                f"rather than which anatomical place it is; their matches fall on the correct "
                f"side of the midline in {min(enc_sides.values()) * 100:.0f}-"
                f"{max(enc_sides.values()) * 100:.0f}% of cases (50% is blind to left and "
                f"right). The paper's correspondences come from a ViT-B with 37x37 patches "
                f"trained on 838k images; this one has {grid_hw[0]}x{grid_hw[1]} patches of "
                f"{size / grid_hw[1]:.0f} px and 2.7M parameters trained for minutes")
    display(Markdown(f"""
**Reading.** RAD-DINO-mini's best match lies a median {rd['median_px']:.1f} px from the true
landmark ({rd['median_pct']:.1f}% of the image side; grid floor {floor:.1f} px, random patch
{summary[corr.RANDOM_PATCH]['median_px']:.1f} px). Against the other rows: {said}. Its best
landmark is {best_lm} ({per[best_lm]['median_px']:.1f} px), its worst {worst_lm}
({per[worst_lm]['median_px']:.1f} px). In short: {gist}.
"""))  # fmt: skip

# %% [markdown]
# ## The correspondence figure (Figure 3)
#
# One query and two targets; each row is one encoder and one landmark (the marker on the
# query). Heatmap: cosine similarity from -1 (dark) to 1 (bright); cyan circle: the
# best-matching patch; green cross: the true landmark (phantom only).

# %%
if have_truth:
    qi, t_idx = int(pairs[0][0]), [int(pairs[0][1]), int(pairs[-1][1])]
    q_row = lms.iloc[qi]
else:
    qi, t_idx, q_row = 0, [1, 2], None
shown = [n for n in (cmp.RAD_DINO, cmp.TEXT_SUP, cmp.RANDOM) if n in grids]
fig_lms = ["apex_right", "heart_border_left", "aortic_knob"]
if q_row is not None and all(np.isfinite(q_row[f"{lm}_x"]) for lm in fig_lms):
    points = {lm: (q_row[f"{lm}_x"], q_row[f"{lm}_y"]) for lm in fig_lms}
    truth = {lm: [(lms.iloc[j][f"{lm}_x"], lms.iloc[j][f"{lm}_y"]) for j in t_idx]
             for lm in fig_lms}  # fmt: skip
else:  # fixed points in image fractions when no landmarks are known
    points = {"upper left lung": (0.3 * size, 0.25 * size), "centre": (0.5 * size, 0.5 * size)}
    truth = None
fig = correspondence_figure(
    load_image(root, test.iloc[qi]), [load_image(root, test.iloc[j]) for j in t_idx],
    {n: (grids[n][qi], grids[n][t_idx]) for n in shown}, points, truth=truth,
)  # fmt: skip
plt.show()
save_results("05_attention", cfg, results)

# %% [markdown]
# ## Try it: click a point on the query
#
# The widget carries the query's and the targets' patch embeddings (RAD-DINO-mini, int8) and
# computes the cosine similarities in the page, so it responds without a kernel. First two
# images without findings (click an apex, a costophrenic angle, the aortic knob), then, as in
# Figure A.4, a query with a consolidation (pneumonia) beside another subject's consolidation
# and a nodule. The arrow keys move the selected patch too.

# %%
w_grid = grids.get(cmp.RAD_DINO, next(iter(grids.values())))
index = {p: i for i, p in enumerate(test["path"])}


def similarity_widget(kinds: tuple[str, ...]) -> LandmarkSimilarity:
    rows = list(corr.pick_examples(test, len(kinds), labels=kinds)["row"])
    return LandmarkSimilarity.from_patches(
        load_image(root, rows[0]), w_grid[index[rows[0]["path"]]],
        [load_image(root, r) for r in rows[1:]], [w_grid[index[r["path"]]] for r in rows[1:]],
        labels=[f"target: {k}" for k in kinds[1:]], query_label=f"query: {kinds[0]}",
    )  # fmt: skip


similarity_widget(("no finding", "no finding"))

# %%
similarity_widget(("pneumonia", "pneumonia", "nodule"))
