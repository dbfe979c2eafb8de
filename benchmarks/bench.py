"""`make bench`: each figure measured in one run against the peer a user would otherwise pick,
with the outputs checked for agreement before the speed counts (issue 10).

    python benchmarks/bench.py [embed] [mfu] [phantom] [probe] [pretrain] [book] [--quick]

- embed:    raddino's batched bf16 embedding of a folder of images vs the microsoft/rad-dino
            model-card recipe (transformers AutoModel + AutoImageProcessor, fp32, one image at
            a time) on the same randomly initialised ViT-B/14 at 518 (built locally, never
            downloaded); agreement: CLS cosine >= 0.99 for every image.
- mfu:      the ViT-B/14-at-518 forward's FLOP/s in bf16 against this CPU's measured bf16
            matmul peak.
- phantom:  phantom generation, images/s at 256 and 518 px.
- probe:    the finding probe (5 seeds x 6 findings) on 10k cached 1536-d embeddings.
- pretrain: this engine's training step vs lightly's DINOv2 example step (needs `lightly`,
            `pip install -e '.[bench]'`); skipped with a message when lightly is missing.
- book:     per-chapter wall time and peak memory of the last `make book` run at each preset
            (``results/<preset>/_timings.json``, written by the chapter runner).

Prints one line per figure and a JSON summary (also written to ``results/bench.json``); exits 1
when an agreement check fails, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("embed", "mfu", "phantom", "probe", "pretrain", "book")


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {_matrix_isa()}, torch {torch.__version__}"


def _matrix_isa() -> str:
    """The CPU's bf16 / int8 matrix instructions from ``/proc/cpuinfo`` (x86 Linux): AMX tiles
    run bf16 matmuls several times faster than AVX-512 BF16 dot products."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "matrix extensions unknown"
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    have = [f for f in ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni") if f in flags]
    return (" ".join(have) or "no bf16/int8 matrix extensions") + (
        "" if "amx_bf16" in flags else ", no AMX"
    )


def _timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


# ------------------------------------------------------------------------------ embed
def vit_b14_folder(folder: Path, image_size: int = 518) -> Path:
    """A transformers Dinov2Model folder of RAD-DINO's architecture (ViT-B/14, random weights,
    seed 0) with RAD-DINO's image processor settings."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    cfg = Dinov2Config(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        patch_size=14, image_size=image_size, layerscale_value=1e-5,
    )  # fmt: skip
    torch.manual_seed(0)
    Dinov2Model(cfg).eval().save_pretrained(folder)
    BitImageProcessor(
        do_resize=True, size={"shortest_edge": image_size}, resample=3, do_center_crop=True,
        crop_size={"height": image_size, "width": image_size}, do_rescale=True,
        rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5307] * 3,
        image_std=[0.2583] * 3, do_convert_rgb=True,
    ).save_pretrained(folder)  # fmt: skip
    return folder


def image_folder(folder: Path, n: int, side: int) -> Path:
    """``n`` 8-bit grey PNG chest phantoms (``side`` px) with a records.csv (the generic
    format), as a user's JPEG/PNG folder would be."""
    from PIL import Image

    from raddino_lib.data.phantom import generate_dataset
    from raddino_lib.data.records import load_image, load_records

    src = folder / "phantom"
    generate_dataset(src, n, size=side, seed=0, progress=False)
    recs = load_records(src)
    (folder / "png").mkdir(parents=True, exist_ok=True)
    paths = []
    for _, row in recs.iterrows():
        img = load_image(src, row)
        p = f"png/{row['image_id']}.png"
        Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)).save(folder / p)
        paths.append(p)
    recs = recs.assign(path=paths, mask_path="")
    recs.to_csv(folder / "records.csv", index=False)
    return folder


def bench_embed(quick: bool) -> dict[str, Any]:
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel

    from raddino_lib.data.records import load_records
    from raddino_lib.eval.cache import cached_embeddings
    from raddino_lib.models.registry import load_encoder

    n = 4 if quick else 16
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = vit_b14_folder(tmp / "vit-b14")
        data = image_folder(tmp / "data", n, 518)
        recs = load_records(data)
        files = [data / p for p in recs["path"]]

        # the model card's recipe (fp32, one image at a time) and ours (cached_embeddings,
        # batched, bf16 where the CPU has it), alternating over halves of the images so that a
        # drift of the host's speed does not favour the one timed first
        torch.set_num_threads(os.cpu_count() or 1)
        model = AutoModel.from_pretrained(model_dir).eval()
        proc = AutoImageProcessor.from_pretrained(model_dir)
        enc = load_encoder(str(model_dir))
        ref, cls, t_ref, t_ours = [], [], 0.0, 0.0
        for part in np.array_split(np.arange(n), 2):
            t = time.perf_counter()
            with torch.inference_mode():
                for i in part:
                    inputs = proc(images=Image.open(files[i]), return_tensors="pt")
                    ref.append(model(**inputs).pooler_output[0].float().numpy())
            t_ref += time.perf_counter() - t
            t = time.perf_counter()
            got = cached_embeddings(enc, data, recs.iloc[part], batch_size=8, progress=False,
                                    cache=False)  # fmt: skip
            t_ours += time.perf_counter() - t
            cls.append(got["cls"])
        ref, got = np.stack(ref), {"cls": np.concatenate(cls)}
        del model
        cos = np.sum(ref * got["cls"], 1) / (
            np.linalg.norm(ref, axis=1) * np.linalg.norm(got["cls"], axis=1)
        )
    ok = bool(cos.min() >= 0.99)
    return {
        "images": n, "reference_s": round(t_ref, 2), "raddino_s": round(t_ours, 2),
        "ratio": round(t_ref / t_ours, 2), "goal": 5.0,
        "cls_cosine_min": round(float(cos.min()), 5), "agree": ok,
        "line": f"embed: {n} images ViT-B/14@518, model-card fp32 {t_ref / n:.2f} s/img, raddino "
        f"{t_ours / n:.2f} s/img -> {t_ref / t_ours:.2f}x (goal 5x); CLS cosine min "
        f"{cos.min():.4f} ({'ok' if ok else 'DISAGREE'})",
    }  # fmt: skip


# -------------------------------------------------------------------------------- mfu
PEAK_SHAPES = (
    (2048, 2048, 2048),
    (4096, 4096, 4096),
    (5480, 768, 2304),
    (5480, 768, 3072),
    (5480, 3072, 768),
)
"""``(M, K, N)`` of the peak probe: two squares and the linear layers of ViT-B/14 at 518 px,
batch 4 (M = 4 x 1370 tokens), which ran above the 4096-square figure on the project's host."""


def matmul_peak(
    dtype: torch.dtype = torch.bfloat16,
    flops_per_shape: float = 2e11,
    shapes: tuple[tuple[int, int, int], ...] = PEAK_SHAPES,
) -> dict[str, Any]:
    """The CPU's bf16 matmul peak: the best FLOP/s over ``shapes`` of ``F.linear``
    (``[M, K] x [N, K]^T``, as ``nn.Linear`` runs) and, where this torch has oneDNN's fused
    linear, of :class:`~raddino_lib.models.packed.PackedLinear` (packed weight, as the
    library's inference copies run; 5-10% faster here), each timed best of three over about
    ``flops_per_shape`` FLOPs, without gradients, with freed memory reused
    (:mod:`raddino_lib.allocator`). Returns ``peak`` (FLOP/s) and ``by_shape`` (TFLOP/s,
    ``F.linear`` and ``packed`` per shape)."""
    from raddino_lib.allocator import reuse_freed_memory
    from raddino_lib.models.packed import PackedLinear, packed_linear_supported

    by_shape: dict[str, dict[str, float]] = {}
    with torch.inference_mode(), reuse_freed_memory():
        for m, k, n in shapes:
            a = torch.randn(m, k, dtype=dtype)
            lin = torch.nn.Linear(k, n, bias=False, dtype=dtype)
            layers = {"F.linear": lin, "packed": PackedLinear(lin)}
            if dtype != torch.bfloat16 or not packed_linear_supported():
                del layers["packed"]  # its fast path is bf16 only: it would time F.linear again
            iters = max(1, round(flops_per_shape / (2 * m * k * n)))
            row = by_shape.setdefault(f"{m}x{k}x{n}", {})
            for name, layer in layers.items():
                layer(a)  # warm up (and pack)

                def run(layer=layer, a=a, iters=iters) -> None:
                    for _ in range(iters):
                        layer(a)

                row[name] = 2 * m * k * n * iters / _timed(run, repeat=3)
    return {
        "peak": max(v for row in by_shape.values() for v in row.values()),
        "by_shape": {
            s: {k: round(v / 1e12, 3) for k, v in row.items()} for s, row in by_shape.items()
        },  # fmt: skip
    }


def _op_group(name: str) -> str:
    """The group of an op name: attention (its matmuls and softmax), linear, conv or other.

    Every linear layer of the ViT has a bias, so it runs ``addmm`` (or oneDNN's fused linear,
    ``mkldnn::_linear_pointwise``, in the packed inference copy); the bias-free 2-D ``mm`` calls
    are the blocked attention's one-head matmuls (``q k^T`` and ``attn v``)."""
    if any(k in name for k in ("scaled_dot_product", "bmm", "softmax", "aten::mm", "aten.mm")):
        return "attention"
    if "addmm" in name or "linear" in name:
        return "linear"
    if "conv" in name:
        return "conv"
    return "other"


def vit_forward_flops(model: torch.nn.Module, x: torch.Tensor) -> dict[str, int]:
    """FLOPs of one forward of a :class:`ViTBackbone` by op group (``linear``, ``attention``,
    ``conv``) and ``total``. Counted on the plain-softmax attention path: torch's FlopCounterMode
    has no formula for the CPU flash-attention op (``_scaled_dot_product_flash_attention_for_
    cpu``), so counting the fused path silently leaves out the attention's 4 N^2 d per head;
    the two paths do the same matmul work (q k^T and attn v)."""
    from torch.utils.flop_counter import FlopCounterMode

    fused = bool(getattr(model.blocks[0].attn, "fused_attn", False))
    model.set_fused_attention(False)
    try:
        with FlopCounterMode(display=False) as fc, torch.inference_mode():
            model(x)
    finally:
        model.set_fused_attention(fused)
    out = {"linear": 0, "attention": 0, "conv": 0, "other": 0}
    for op, n in fc.get_flop_counts().get("Global", {}).items():
        out[_op_group(str(op))] += int(n)
    out["total"] = sum(out.values())
    return out


def op_seconds(fn) -> dict[str, float]:
    """Self CPU seconds of one call of ``fn`` by op group (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    out = {"linear": 0.0, "attention": 0.0, "conv": 0.0, "other": 0.0}
    for e in prof.key_averages():
        out[_op_group(e.key)] += e.self_cpu_time_total / 1e6
    return out


MFU_ROUNDS = 3
"""Rounds of the MFU measurement. Each round measures the peak and then the forward, so that
each ratio compares two figures taken within seconds of each other: this shared host has slow
spells of a few seconds to minutes, and a peak probed in a fast spell against a forward timed
in a slow one (or the reverse) moved single-shot MFU by several points (67-72% over six runs
at 3d0d82e)."""


def mfu_of_rounds(flops: float, rounds: list[tuple[float, float]]) -> dict[str, Any]:
    """MFU of interleaved rounds ``[(peak FLOP/s, forward seconds), ...]`` for a forward of
    ``flops`` FLOPs: ``ratios`` (each round's achieved / peak), ``mfu`` (their median; with an
    even count the lower middle one, so that it is a ratio some round measured),
    ``median_round`` (its index) and ``best_of_bests`` (fastest forward over highest peak)."""
    if not rounds or any(p <= 0 or s <= 0 for p, s in rounds):
        raise ValueError(f"rounds must be (peak > 0, seconds > 0) pairs, got {rounds!r}")
    ratios = [flops / s / p for p, s in rounds]
    order = sorted(range(len(ratios)), key=ratios.__getitem__)
    mid = order[(len(order) - 1) // 2]
    best = flops / min(s for _, s in rounds) / max(p for p, _ in rounds)
    return {"ratios": ratios, "mfu": ratios[mid], "median_round": mid, "best_of_bests": best}


def bench_mfu(quick: bool) -> dict[str, Any]:
    """ViT-B/14 at 518 forward FLOP/s against the bf16 matmul peak, in interleaved rounds
    (:data:`MFU_ROUNDS`): ``mfu`` is the median of the per-round ratios, ``mfu_rounds`` all of
    them; ``best_of_bests`` the best forward over the best peak of all rounds."""
    from raddino_lib.allocator import reuse_freed_memory
    from raddino_lib.config import make_config
    from raddino_lib.eval.embed import bf16_copy
    from raddino_lib.models.backbone import ViTBackbone, spec_from_config

    torch.set_num_threads(os.cpu_count() or 1)
    spec = spec_from_config(make_config("paper"))  # ViT-B/14 at 518, as RAD-DINO
    model = ViTBackbone(spec).eval()
    # the plain kernel, blocked a few heads at a time without gradients (models.attention):
    # 1.4x the fused CPU flash kernel at 1370 tokens on the project's host
    model.set_fused_attention(False)
    batch = 1 if quick else 4
    x = torch.randn(batch, 3, spec.image_size, spec.image_size)
    flops = vit_forward_flops(model, x)
    # as embed_array runs bf16: bf16 parameters (linear layers packed, bias and GELU fused)
    # under autocast, freed memory reused
    model = bf16_copy(model)
    rounds: list[dict[str, Any]] = []
    # fp32 against bf16 on the largest ViT-B/14 layer shape: how much bf16 can gain at all
    # over an fp32 forward (the model card's recipe) on this CPU
    fp32 = matmul_peak(torch.float32, flops_per_shape=2e10 if quick else 5e10,
                       shapes=((5480, 768, 3072),))["peak"]  # fmt: skip
    for r in range(MFU_ROUNDS):
        probe = matmul_peak(flops_per_shape=5e10 if quick else 2e11)
        with (
            torch.inference_mode(),
            torch.autocast("cpu", dtype=torch.bfloat16),
            reuse_freed_memory(),
        ):
            model(x)
            s = _timed(lambda: model(x), repeat=2 if quick else 3)
            if r == 0:
                split = op_seconds(lambda: model(x))
        rounds.append({"peak": probe["peak"], "seconds": s, "probe": probe})
    summary = mfu_of_rounds(flops["total"], [(rd["peak"], rd["seconds"]) for rd in rounds])
    ratios, mfu = summary["ratios"], summary["mfu"]
    mid = rounds[summary["median_round"]]
    peak, s = mid["peak"], mid["seconds"]
    achieved = flops["total"] / s
    prof_total = sum(split.values()) or 1.0
    groups = {
        g: {"gflop": round(flops[g] / 1e9, 1), "time_share": round(split[g] / prof_total, 3),
            "of_peak": round(flops[g] / split[g] / peak, 3) if split[g] > 0 else None}
        for g in ("linear", "attention")
    }  # fmt: skip
    parts = ", ".join(
        f"{g} {v['of_peak']:.0%} of peak over {v['time_share']:.0%} of the time"
        for g, v in groups.items() if v["of_peak"] is not None
    )  # fmt: skip
    per_round = ", ".join(f"{q:.1%}" for q in ratios)
    return {
        "bf16_matmul_peak_tflops": round(peak / 1e12, 3),
        "fp32_matmul_peak_tflops": round(fp32 / 1e12, 3), "peak_by_shape_tflops":
        mid["probe"]["by_shape"], "vit_b14_518_forward_gflop_per_image":
        round(flops["total"] / batch / 1e9, 1), "batch": batch, "seconds": round(s, 3),
        "achieved_tflops": round(achieved / 1e12, 3), "mfu": round(mfu, 3),
        "mfu_rounds": [round(q, 3) for q in ratios],
        "rounds": [{"peak_tflops": round(rd["peak"] / 1e12, 3), "seconds": round(rd["seconds"], 3)}
                   for rd in rounds],
        "best_of_bests": round(summary["best_of_bests"], 3),
        "goal": 0.70, "groups": groups,
        "line": f"mfu: ViT-B/14@518 forward bf16, batch {batch}: {achieved / 1e12:.2f} TFLOP/s of "
        f"a {peak / 1e12:.2f} TFLOP/s bf16 matmul peak = {mfu:.0%} (goal 70%; median of "
        f"{len(ratios)} interleaved rounds: {per_round}); {parts}",
    }  # fmt: skip


def embed_ceiling(embed: dict[str, Any], mfu: dict[str, Any]) -> dict[str, Any]:
    """The embedding speed-up this CPU allows at all: the model-card recipe's seconds per image
    against the ViT-B/14 forward's FLOPs at 100% of the bf16 matmul peak; and the bf16 over
    fp32 matmul ratio, which bounds what bf16 can gain over an fp32 forward."""
    best_s = mfu["vit_b14_518_forward_gflop_per_image"] / (mfu["bf16_matmul_peak_tflops"] * 1e3)
    ref_s = embed["reference_s"] / embed["images"]
    ceiling = ref_s / best_s
    bf16_over_fp32 = mfu["bf16_matmul_peak_tflops"] / mfu["fp32_matmul_peak_tflops"]
    return {
        "ceiling": round(ceiling, 2), "bf16_over_fp32_matmul": round(bf16_over_fp32, 2),
        "line": f"embed ceiling: the forward alone at 100% of the bf16 peak takes {best_s:.2f} "
        f"s/img against the model card's {ref_s:.2f}: at most {ceiling:.1f}x without fewer "
        f"FLOPs or lower precision (measured {embed['ratio']:.2f}x); bf16 matmul is "
        f"{bf16_over_fp32:.1f}x fp32 matmul on this CPU",
    }  # fmt: skip


# ---------------------------------------------------------------------------- phantom
def bench_phantom(quick: bool) -> dict[str, Any]:
    from raddino_lib.data.phantom import generate_dataset

    out: dict[str, Any] = {}
    parts = []
    for side, n in ((256, 8 if quick else 64), (518, 4 if quick else 16)):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            generate_dataset(Path(tmp) / "p", n, size=side, seed=0, progress=False)
            s = time.perf_counter() - t
        out[f"images_per_s_{side}"] = round(n / s, 2)
        parts.append(f"{n / s:.1f} img/s at {side}")
    out["line"] = "phantom: " + ", ".join(parts)
    return out


# ------------------------------------------------------------------------------ probe
def bench_probe(quick: bool) -> dict[str, Any]:
    import pandas as pd

    from raddino_lib.eval.probe import finding_probe

    n, d, f = (2000, 384, 6) if quick else (10000, 1536, 6)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=(d, f)) / np.sqrt(d)
    y = (x @ w + rng.normal(size=(n, f)) > 1.0).astype(float)
    subjects = np.arange(n) // 2
    split = np.where(subjects % 20 < 14, "train", np.where(subjects % 20 < 17, "val", "test"))
    labels = pd.DataFrame(y, columns=[f"finding_{j}" for j in range(f)])
    s = _timed(lambda: finding_probe(x, labels, split, subjects, seeds=range(5)))
    return {
        "embeddings": n, "dims": d, "findings": f, "seeds": 5, "seconds": round(s, 2),
        "line": f"probe: 5 seeds x {f} findings on {n} x {d} embeddings: {s:.1f} s",
    }  # fmt: skip


# --------------------------------------------------------------------------- pretrain
def bench_pretrain(quick: bool) -> dict[str, Any]:
    try:
        import lightly  # noqa: F401
    except ImportError:
        msg = "pretrain: skipped (lightly is not installed: pip install -e '.[bench]')"
        return {"skipped": True, "line": msg}
    from benchmarks.lightly_step import compare_steps  # type: ignore[import-not-found]

    return compare_steps(quick)


# ------------------------------------------------------------------------------- book
def bench_book(quick: bool) -> dict[str, Any]:
    del quick
    out: dict[str, Any] = {}
    lines = []
    for preset in ("smoke", "laptop"):
        path = ROOT / "results" / preset / "_timings.json"
        if not path.is_file():
            lines.append(f"{preset}: no timings yet (make book PRESET={preset})")
            continue
        t = json.loads(path.read_text())
        total = sum(v["seconds"] for v in t.values())
        peak = max(v.get("peak_rss_mb", 0) for v in t.values())
        out[preset] = {"chapters": t, "total_s": round(total, 1), "peak_rss_mb": peak}
        per = ", ".join(f"{k[:2]} {v['seconds'] / 60:.1f}" for k, v in t.items())
        lines.append(f"{preset} {total / 60:.1f} min, peak {peak:.0f} MB ({per} min)")
    out["line"] = "book: " + "; ".join(lines)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sections", nargs="*", default=list(SECTIONS), help=f"of {SECTIONS}")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    args = ap.parse_args(argv)
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        print(f"unknown sections {bad}; choose from {SECTIONS}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    fns = {"embed": bench_embed, "mfu": bench_mfu, "phantom": bench_phantom,
           "probe": bench_probe, "pretrain": bench_pretrain, "book": bench_book}  # fmt: skip
    summary: dict[str, Any] = {"machine": _machine(), "quick": args.quick}
    print(f"machine: {summary['machine']}", flush=True)
    for name in args.sections:
        res = fns[name](args.quick)
        summary[name] = res
        print(res["line"], flush=True)
    if "embed" in summary and "mfu" in summary:
        summary["embed_ceiling"] = embed_ceiling(summary["embed"], summary["mfu"])
        print(summary["embed_ceiling"]["line"], flush=True)
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "bench.json").write_text(json.dumps(summary, indent=1) + "\n")
    failed = [k for k, v in summary.items() if isinstance(v, dict) and v.get("agree") is False]
    if failed:
        print(f"outputs disagree in: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
