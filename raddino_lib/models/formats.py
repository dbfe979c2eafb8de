"""Checkpoint formats: read DINOv2 / timm / transformers weights, write a ``microsoft/rad-dino``
style folder (reference.md section 3).

The native layout is :class:`~raddino_lib.models.backbone.ViTBackbone`'s, i.e. DINOv2's original
key names (``cls_token [1, 1, D]``, ``pos_embed [1, 1 + N, D]``, ``mask_token [1, D]``,
``patch_embed.proj.*``, ``blocks.i.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1,
mlp.fc2, ls2.gamma}``, ``norm.*``). Three source formats are recognised:

* ``"dinov2"`` -- DINOv2's own keys, possibly under ``teacher.backbone.`` / ``student.backbone.``
  / ``backbone.`` / ``module.`` / ``model.`` and with FSDP block chunks
  (``blocks.<chunk>.<i>.`` -> ``blocks.<i>.``);
* ``"timm"`` -- timm ``vit_*_dinov2``: the same keys without ``mask_token`` (ours stays zero);
* ``"hf"`` -- transformers ``Dinov2Model`` (``embeddings.*``, ``encoder.layer.i.*``,
  ``layernorm.*``; optional ``dinov2.`` prefix); q, k, v are concatenated by rows into qkv.

Register tokens (``reg_token`` / ``register_tokens``) and SwiGLU MLPs (``w12`` /
``weights_in``) are rejected with a :class:`CheckpointFormatError`.

:func:`load_backbone` reads a transformers folder, a folder with
``backbone_compatible.safetensors``, a ``.safetensors`` file or a ``.pth`` / ``.pt`` / ``.bin``
file (``torch.load(weights_only=True)`` only), infers the :class:`BackboneSpec` from the
weights' shapes (+ ``config.json`` / ``preprocessor_config.json`` when present) and loads
strictly. :func:`export_hf` writes the folder that ``transformers.AutoModel`` and
``AutoImageProcessor`` read, with the native keys beside it.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from raddino_lib.atomic import atomic_save, atomic_write_text
from raddino_lib.models.backbone import BackboneSpec, ViTBackbone

__all__ = [
    "CheckpointFormatError",
    "LoadedBackbone",
    "detect_format",
    "export_hf",
    "hf_config_dict",
    "hf_to_native",
    "infer_spec",
    "load_backbone",
    "load_head_state",
    "load_state_dict_file",
    "native_to_hf",
    "preprocessor_config_dict",
    "resample_pos_embed",
    "spec_from_hf_config",
    "split_checkpoint",
    "to_native",
]

StateDict = dict[str, torch.Tensor]

HF_WEIGHTS = "model.safetensors"
NATIVE_WEIGHTS = "backbone_compatible.safetensors"
HEAD_WEIGHTS = "dino_head.safetensors"
SPEC_METADATA_KEY = "raddino_spec"

_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
_ROOT_PREFIXES = ("teacher.", "student.")  # teacher first: DINOv2 evaluates the teacher
_BACKBONE_PREFIXES = ("backbone.", "dinov2.")
_HEAD_PREFIX = "dino_head."
_TORCH_SUFFIXES = (".pth", ".pt", ".bin")
_PTH_WRAPPERS = ("model", "teacher", "state_dict", "module")


class CheckpointFormatError(ValueError):
    """A weights file or folder that cannot be read as a ViT backbone (message names it)."""


@dataclass
class LoadedBackbone:
    """What :func:`load_backbone` read.

    Attributes:
        backbone: the encoder, in eval mode, on the CPU, float32.
        spec: its architecture (inferred from the weights or the one passed in).
        source_format: ``"dinov2"``, ``"timm"`` or ``"hf"``.
        head_state: DINO head state dict (``mlp.*``, ``last_layer.*``) or ``None``.
        missing: backbone keys the file did not hold (only ever ``["mask_token"]``).
        unexpected: keys that were not used (always empty: loading is strict).
        notes: what was adapted, in words (resampling, ignored sibling keys, ...).
    """

    backbone: ViTBackbone
    spec: BackboneSpec
    source_format: str
    head_state: StateDict | None
    missing: list[str]
    unexpected: list[str]
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# Key layouts
# ---------------------------------------------------------------------------------------
_CHUNK_RE = re.compile(r"^blocks\.(\d+)\.(\d+)\.(.+)$")
_HF_LAYER_RE = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_NATIVE_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")

# per-block renames, transformers -> native (both the on-disk and the transformers-5 names)
_HF_BLOCK_MAP = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "attention.output.dense.weight": "attn.proj.weight",
    "attention.output.dense.bias": "attn.proj.bias",
    "attention.o_proj.weight": "attn.proj.weight",
    "attention.o_proj.bias": "attn.proj.bias",
    "layer_scale1.lambda1": "ls1.gamma",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
    "layer_scale2.lambda1": "ls2.gamma",
}
_HF_QKV = {
    "attention.attention.query": "q",
    "attention.attention.key": "k",
    "attention.attention.value": "v",
    "attention.q_proj": "q",
    "attention.k_proj": "k",
    "attention.v_proj": "v",
}
_HF_TOP_MAP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.mask_token": "mask_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
# native -> transformers (the names transformers writes with save_pretrained)
_NATIVE_TOP_MAP = {v: k for k, v in _HF_TOP_MAP.items()}
_NATIVE_BLOCK_MAP = {  # the on-disk names only (not transformers 5's in-memory o_proj)
    v: k for k, v in _HF_BLOCK_MAP.items() if not k.startswith("attention.o_proj")
}
_QKV_NAMES = ("query", "key", "value")


def _where(source: str | Path | None) -> str:
    return str(source) if source is not None else "<state dict>"


def _some(keys: list[str] | set[str], n: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def detect_format(state_dict: Mapping[str, Any], source: str | Path | None = None) -> str:
    """``"dinov2"``, ``"timm"`` or ``"hf"`` for a backbone state dict with prefixes removed.

    Raises:
        CheckpointFormatError: register tokens, SwiGLU MLPs or an unrecognised layout.
    """
    where = _where(source)
    keys = list(state_dict)
    regs = [k for k in keys if "reg_token" in k or "register_tokens" in k]
    if regs:
        raise CheckpointFormatError(
            f"{where}: holds register tokens ({_some(regs, 3)}); DINOv2-with-registers "
            "checkpoints are not supported by ViTBackbone -- use a checkpoint without "
            "registers (e.g. vit_*_dinov2 rather than vit_*_reg4_dinov2)"
        )
    swiglu = [k for k in keys if re.search(r"mlp\.(w12|w3|weights_in|weights_out|gate_proj)\.", k)]
    if swiglu:
        raise CheckpointFormatError(
            f"{where}: has a SwiGLU MLP ({_some(swiglu, 3)}); only the plain GELU MLP "
            "(fc1/fc2) of ViT-S/B/L DINOv2 models is supported"
        )
    if any(k.startswith(("embeddings.", "encoder.layer.")) for k in keys):
        return "hf"
    if {"cls_token", "pos_embed", "patch_embed.proj.weight"} <= set(keys):
        return "dinov2" if "mask_token" in keys else "timm"
    raise CheckpointFormatError(
        f"{where}: unknown checkpoint format (keys: {_some(keys)}); expected DINOv2 keys "
        "(cls_token, pos_embed, patch_embed.proj.weight, blocks.i.*), timm vit_*_dinov2 keys or "
        "transformers Dinov2Model keys (embeddings.*, encoder.layer.i.*, layernorm.*)"
    )


def split_checkpoint(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[StateDict, StateDict | None, list[str], str]:
    """Separate the backbone from a (training) checkpoint's other parts.

    Strips wrapper prefixes shared by every key (``module.``, ``_orig_mod.``, ``model.``),
    prefers ``teacher.`` over ``student.`` when both are present, then takes the keys under
    ``backbone.`` / ``dinov2.`` (if any key has one). Keys under ``dino_head.`` beside the
    backbone become the head state.

    Returns:
        ``(backbone_state, head_state or None, ignored_keys, backbone_prefix)``; the keys of
        ``backbone_state`` have ``backbone_prefix`` removed.
    """
    keys = list(state_dict)
    prefix = ""
    changed = True
    while changed and keys:
        changed = False
        for w in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix + w) for k in keys):
                prefix += w
                changed = True
    for root in _ROOT_PREFIXES:
        if any(k.startswith(prefix + root) for k in keys):
            prefix += root
            break
    bb_prefix = prefix
    for sub in _BACKBONE_PREFIXES:
        if any(k.startswith(prefix + sub) for k in keys):
            bb_prefix = prefix + sub
            break
    head_prefix = prefix + _HEAD_PREFIX
    backbone: StateDict = {}
    head: StateDict = {}
    ignored: list[str] = []
    for k in keys:
        if k.startswith(head_prefix):
            head[k[len(head_prefix) :]] = state_dict[k]
        elif k.startswith(bb_prefix):
            backbone[k[len(bb_prefix) :]] = state_dict[k]
        else:
            ignored.append(k)
    return backbone, (head or None), ignored, bb_prefix


def _unchunk(state_dict: StateDict) -> tuple[StateDict, bool]:
    """``blocks.<chunk>.<i>.x`` -> ``blocks.<j>.x``, ``j`` counting the blocks in order."""
    pairs = {(int(m[1]), int(m[2])) for k in state_dict if (m := _CHUNK_RE.match(k))}
    if not pairs:
        return state_dict, False
    order = {p: j for j, p in enumerate(sorted(pairs))}
    out: StateDict = {}
    for k, v in state_dict.items():
        m = _CHUNK_RE.match(k)
        out[f"blocks.{order[(int(m[1]), int(m[2]))]}.{m[3]}" if m else k] = v
    return out, True


def hf_to_native(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """transformers ``Dinov2Model`` keys -> native DINOv2 keys (q, k, v rows -> ``attn.qkv``).

    Accepts both the on-disk names (``attention.attention.query``, ``attention.output.dense``)
    and transformers-5's in-memory ones (``attention.q_proj``, ``attention.o_proj``), with or
    without a ``dinov2.`` prefix. Unknown keys are passed through unchanged (so strict loading
    reports them); a layer with only part of q, k, v keeps those parts under their names.
    """
    sd = dict(state_dict)
    if sd and all(k.startswith("dinov2.") for k in sd):
        sd = {k[len("dinov2.") :]: v for k, v in sd.items()}
    out: StateDict = {}
    qkv: dict[tuple[int, str], dict[str, tuple[str, torch.Tensor]]] = {}
    for k, v in sd.items():
        if k in _HF_TOP_MAP:
            if k == "embeddings.mask_token":
                v = v.reshape(1, -1)
            out[_HF_TOP_MAP[k]] = v
            continue
        m = _HF_LAYER_RE.match(k)
        if m is None:
            out[k] = v
            continue
        i, rest = int(m[1]), m[2]
        if rest in _HF_BLOCK_MAP:
            out[f"blocks.{i}.{_HF_BLOCK_MAP[rest]}"] = v
            continue
        stem, _, kind = rest.rpartition(".")
        if stem in _HF_QKV and kind in ("weight", "bias"):
            qkv.setdefault((i, kind), {})[_HF_QKV[stem]] = (k, v)
            continue
        out[k] = v
    for (i, kind), parts in sorted(qkv.items()):
        if set(parts) == {"q", "k", "v"}:
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(
                [parts["q"][1], parts["k"][1], parts["v"][1]], dim=0
            )
        else:
            for name, v in parts.values():
                out[name] = v
    return out


def native_to_hf(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Native DINOv2 keys -> transformers ``Dinov2Model`` keys (as ``save_pretrained`` names them).

    ``blocks.i.attn.qkv.{weight [3D, D], bias [3D]}`` is split by rows into
    ``encoder.layer.i.attention.attention.{query,key,value}``. Tensors may be views of the
    input; clone them before writing with safetensors.

    Raises:
        CheckpointFormatError: a key that has no transformers counterpart (e.g. registers).
    """
    out: StateDict = {}
    bad: list[str] = []
    for k, v in state_dict.items():
        if k in _NATIVE_TOP_MAP:
            out[_NATIVE_TOP_MAP[k]] = v
            continue
        m = _NATIVE_BLOCK_RE.match(k)
        if m is None:
            bad.append(k)
            continue
        i, rest = int(m[1]), m[2]
        if rest in _NATIVE_BLOCK_MAP:
            out[f"encoder.layer.{i}.{_NATIVE_BLOCK_MAP[rest]}"] = v
        elif rest in ("attn.qkv.weight", "attn.qkv.bias"):
            if v.shape[0] % 3:
                raise CheckpointFormatError(
                    f"<state dict>: {k} has {v.shape[0]} rows, not a multiple of 3"
                )
            kind = rest.rsplit(".", 1)[1]
            for name, part in zip(_QKV_NAMES, v.chunk(3, dim=0), strict=True):
                out[f"encoder.layer.{i}.attention.attention.{name}.{kind}"] = part
        else:
            bad.append(k)
    if bad:
        raise CheckpointFormatError(
            f"<state dict>: keys with no transformers Dinov2Model counterpart: {_some(bad)}"
        )
    return out


def to_native(
    state_dict: Mapping[str, torch.Tensor], source: str | Path | None = None
) -> tuple[StateDict, str, list[str]]:
    """A backbone state dict (prefixes already removed) in any known format -> native keys.

    Returns:
        ``(native_state, source_format, notes)``.
    """
    fmt = detect_format(state_dict, source)
    notes: list[str] = []
    if fmt == "hf":
        sd = hf_to_native(state_dict)
        notes.append("converted transformers Dinov2Model keys (q, k, v concatenated into qkv)")
    else:
        sd, chunked = _unchunk(dict(state_dict))
        if chunked:
            notes.append("renumbered FSDP block chunks blocks.<chunk>.<i> -> blocks.<i>")
    if "mask_token" in sd:
        sd["mask_token"] = sd["mask_token"].reshape(1, -1)
    return sd, fmt, notes


# ---------------------------------------------------------------------------------------
# Position embeddings and specs
# ---------------------------------------------------------------------------------------
def resample_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``[1, 1 + n*n, D]`` -> ``[1, 1 + h*w, D]`` (bicubic, antialiased; class position kept).

    Uses :func:`timm.layers.resample_abs_pos_embed`, which is what ViTBackbone itself applies
    at other input sizes, so a resampled checkpoint matches the source model run at the new
    size. The source grid must be square.
    """
    from timm.layers import resample_abs_pos_embed

    n = pos_embed.shape[1] - 1
    side = math.isqrt(n)
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1 or side * side != n:
        raise ValueError(
            f"pos_embed must be [1, 1 + n*n, D] with a square grid, got {tuple(pos_embed.shape)}"
        )
    if (side, side) == tuple(grid):
        return pos_embed
    dtype = pos_embed.dtype
    out = resample_abs_pos_embed(
        pos_embed.float(), new_size=list(grid), old_size=[side, side], num_prefix_tokens=1
    )
    return out.to(dtype)


@dataclass
class _Hints:
    """Spec fields that shapes cannot tell, and where they came from."""

    num_heads: int | None = None
    layerscale_init: float | None = None
    pixel_mean: float | None = None
    pixel_std: float | None = None
    shape_fields: dict[str, Any] = field(default_factory=dict)  # to cross-check with weights
    origin: str = ""


def spec_from_hf_config(
    config: Mapping[str, Any],
    preprocessor: Mapping[str, Any] | None = None,
    source: str | Path | None = None,
) -> BackboneSpec:
    """:class:`BackboneSpec` of a transformers Dinov2 ``config.json`` (+ preprocessor config).

    ``pixel_mean`` / ``pixel_std`` are the first channel of ``image_mean`` / ``image_std``
    (RAD-DINO repeats one grey value 3 times); without a preprocessor config they keep the
    :class:`BackboneSpec` defaults.

    Raises:
        CheckpointFormatError: not a plain Dinov2 config (registers, SwiGLU, no qkv bias, ...).
    """
    where = _where(source)
    mt = config.get("model_type")
    if mt != "dinov2":
        hint = " (register tokens are not supported)" if mt and "registers" in str(mt) else ""
        raise CheckpointFormatError(
            f"{where}: config.json has model_type {mt!r}{hint}; expected 'dinov2'"
        )
    if config.get("use_swiglu_ffn"):
        raise CheckpointFormatError(
            f"{where}: config.json has use_swiglu_ffn=true; only the GELU MLP is supported"
        )
    if not config.get("qkv_bias", True):
        raise CheckpointFormatError(
            f"{where}: config.json has qkv_bias=false; ViTBackbone always has a qkv bias"
        )
    act = config.get("hidden_act", "gelu")
    if act != "gelu":
        raise CheckpointFormatError(
            f"{where}: config.json has hidden_act {act!r}; ViTBackbone uses exact 'gelu'"
        )
    eps = float(config.get("layer_norm_eps", 1e-6))
    if abs(eps - 1e-6) > 1e-12:
        raise CheckpointFormatError(
            f"{where}: config.json has layer_norm_eps {eps}; ViTBackbone uses 1e-6"
        )
    try:
        kw: dict[str, Any] = {
            "image_size": int(config["image_size"]),
            "patch_size": int(config["patch_size"]),
            "embed_dim": int(config["hidden_size"]),
            "depth": int(config["num_hidden_layers"]),
            "num_heads": int(config["num_attention_heads"]),
            "mlp_ratio": float(config.get("mlp_ratio", 4.0)),
            "layerscale_init": float(config.get("layerscale_value", 1.0)),
        }
    except KeyError as e:
        raise CheckpointFormatError(f"{where}: config.json lacks the field {e.args[0]!r}") from e
    if preprocessor:
        mean, std = preprocessor.get("image_mean"), preprocessor.get("image_std")
        if mean is not None:
            kw["pixel_mean"] = float(mean[0] if isinstance(mean, list | tuple) else mean)
        if std is not None:
            kw["pixel_std"] = float(std[0] if isinstance(std, list | tuple) else std)
    return BackboneSpec(**kw).check()


def _hints_from_spec(spec: BackboneSpec, has_preprocessor: bool, origin: str) -> _Hints:
    return _Hints(
        num_heads=spec.num_heads,
        layerscale_init=spec.layerscale_init,
        pixel_mean=spec.pixel_mean if has_preprocessor else None,
        pixel_std=spec.pixel_std if has_preprocessor else None,
        shape_fields={
            "embed_dim": spec.embed_dim,
            "depth": spec.depth,
            "patch_size": spec.patch_size,
            "mlp_ratio": spec.mlp_ratio,
        },
        origin=origin,
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointFormatError(f"{path}: cannot read JSON ({e})") from e


def _hints_from_folder(folder: Path) -> _Hints | None:
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        return None
    cfg = _read_json(cfg_path)
    if cfg.get("model_type") not in ("dinov2", "dinov2_with_registers"):
        return None  # some other model's config: not ours to read
    pre_path = folder / "preprocessor_config.json"
    pre = _read_json(pre_path) if pre_path.is_file() else None
    spec = spec_from_hf_config(cfg, pre, source=cfg_path)
    return _hints_from_spec(spec, pre is not None, str(cfg_path))


def _hints_from_metadata(meta: Mapping[str, str] | None, source: Path) -> _Hints | None:
    if not meta or SPEC_METADATA_KEY not in meta:
        return None
    try:
        spec = BackboneSpec.from_dict(json.loads(meta[SPEC_METADATA_KEY]))
    except (json.JSONDecodeError, TypeError) as e:
        raise CheckpointFormatError(f"{source}: unreadable {SPEC_METADATA_KEY} metadata") from e
    return _Hints(
        num_heads=spec.num_heads,
        layerscale_init=spec.layerscale_init,
        pixel_mean=spec.pixel_mean,
        pixel_std=spec.pixel_std,
        shape_fields={
            "embed_dim": spec.embed_dim,
            "depth": spec.depth,
            "patch_size": spec.patch_size,
            "mlp_ratio": spec.mlp_ratio,
        },
        origin=f"{source} (metadata)",
    )


def _shape_fields(native: Mapping[str, torch.Tensor], source: str | Path | None) -> dict[str, Any]:
    where = _where(source)
    need = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight")
    absent = [k for k in need if k not in native]
    if absent:
        raise CheckpointFormatError(
            f"{where}: cannot infer the architecture, missing key(s) {', '.join(absent)}"
        )
    d = int(native["cls_token"].shape[-1])
    pw = native["patch_embed.proj.weight"]
    if pw.ndim != 4 or pw.shape[-1] != pw.shape[-2] or pw.shape[0] != d:
        raise CheckpointFormatError(
            f"{where}: patch_embed.proj.weight has shape {tuple(pw.shape)}; expected "
            f"[{d}, C, p, p] (square patches)"
        )
    n = int(native["pos_embed"].shape[1]) - 1
    side = math.isqrt(max(n, 0))
    if side * side != n or n == 0:
        raise CheckpointFormatError(
            f"{where}: pos_embed has {n} patch positions, not a square grid; shape "
            f"{tuple(native['pos_embed'].shape)}"
        )
    blocks = {int(m[1]) for k in native if (m := _NATIVE_BLOCK_RE.match(k))}
    depth = max(blocks) + 1
    return {
        "embed_dim": d,
        "depth": depth,
        "patch_size": int(pw.shape[-1]),
        "mlp_ratio": native["blocks.0.mlp.fc1.weight"].shape[0] / d,
        "image_size": side * int(pw.shape[-1]),
    }


def infer_spec(
    state_dict: Mapping[str, torch.Tensor],
    num_heads: int | None = None,
    hf_config: Mapping[str, Any] | None = None,
    preprocessor_config: Mapping[str, Any] | None = None,
    source: str | Path | None = None,
) -> BackboneSpec:
    """The :class:`BackboneSpec` of a backbone state dict (any known format).

    ``embed_dim``, ``depth``, ``patch_size``, ``mlp_ratio`` and ``image_size`` (from the
    ``pos_embed`` grid) come from shapes. ``num_heads`` cannot be read from weights: it is
    ``num_heads``, else the config's ``num_attention_heads``, else ``embed_dim // 64`` with a
    warning. Pixel statistics come from the preprocessor config (first channel) or the
    :class:`BackboneSpec` defaults.
    """
    hints = None
    if hf_config is not None:
        spec = spec_from_hf_config(hf_config, preprocessor_config, source)
        hints = _hints_from_spec(spec, preprocessor_config is not None, f"{_where(source)} config")
    elif preprocessor_config is not None:
        mean, std = preprocessor_config.get("image_mean"), preprocessor_config.get("image_std")
        hints = _Hints(
            pixel_mean=None if mean is None else float(mean[0]),
            pixel_std=None if std is None else float(std[0]),
        )
    backbone_sd, _, _, _ = split_checkpoint(state_dict)
    native, _, _ = to_native(backbone_sd, source)
    return _infer(native, num_heads, hints, source)


def _infer(
    native: Mapping[str, torch.Tensor],
    num_heads: int | None,
    hints: _Hints | None,
    source: str | Path | None,
    warn_defaults: bool = True,
) -> BackboneSpec:
    where = _where(source)
    shapes = _shape_fields(native, source)
    hints = hints or _Hints()
    for name, want in hints.shape_fields.items():
        got = shapes[name]
        if (abs(got - want) > 1e-6) if isinstance(want, float) else got != want:
            raise CheckpointFormatError(
                f"{where}: {hints.origin} says {name}={want} but the weights have {name}={got}; "
                "the config does not describe these weights"
            )
    if num_heads is None:
        num_heads = hints.num_heads
    if num_heads is None:
        d = shapes["embed_dim"]
        if d % 64:
            raise CheckpointFormatError(
                f"{where}: the number of attention heads cannot be read from the weights and "
                f"embed_dim {d} is not a multiple of 64; pass num_heads=... or spec=..."
            )
        num_heads = d // 64
        warnings.warn(
            f"{where}: number of attention heads not recorded; assuming embed_dim // 64 = "
            f"{num_heads} (pass num_heads=... or spec=... to be explicit)",
            stacklevel=3,
        )
    default = BackboneSpec()
    kw = dict(shapes)
    kw["num_heads"] = int(num_heads)
    kw["layerscale_init"] = (
        hints.layerscale_init if hints.layerscale_init is not None else default.layerscale_init
    )
    if warn_defaults and (hints.pixel_mean is None or hints.pixel_std is None):
        warnings.warn(
            f"{where}: pixel mean/std not recorded beside the weights; using the BackboneSpec "
            f"defaults {default.pixel_mean}/{default.pixel_std} (pass spec=... with the "
            "statistics the weights were trained with)",
            stacklevel=3,
        )
    kw["pixel_mean"] = hints.pixel_mean if hints.pixel_mean is not None else default.pixel_mean
    kw["pixel_std"] = hints.pixel_std if hints.pixel_std is not None else default.pixel_std
    try:
        return BackboneSpec(**kw).check()
    except ValueError as e:
        raise CheckpointFormatError(f"{where}: {e}") from e


# ---------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------
def _read_safetensors(path: Path) -> tuple[StateDict, dict[str, str] | None]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        return load_file(str(path)), meta
    except Exception as e:  # safetensors raises its own SafetensorError and OSError
        raise CheckpointFormatError(f"{path}: not a readable safetensors file ({e})") from e


def _read_torch(path: Path) -> StateDict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointFormatError(
            f"{path}: refused by torch.load(weights_only=True) -- the file holds pickled "
            "Python objects other than tensors and plain containers, which could run code "
            "when loaded. Re-save only the state dict (torch.save(model.state_dict(), ...)) "
            f"or convert it to .safetensors. Detail: {str(e).splitlines()[0]}"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointFormatError(f"{path}: not a readable torch file ({e})") from e
    while isinstance(obj, Mapping):
        inner = next(
            (obj[k] for k in _PTH_WRAPPERS if k in obj and isinstance(obj[k], Mapping)), None
        )
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(
            f"{path}: holds a {type(obj).__name__}, not a state dict (a mapping of tensors)"
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointFormatError(
            f"{path}: the state dict has non-tensor entries ({_some(bad)}); expected a mapping "
            "of names to tensors, optionally wrapped as {'model': ...}, {'teacher': ...} or "
            "{'state_dict': ...}"
        )
    return {str(k): v for k, v in obj.items()}


def _read_sharded(index: Path) -> StateDict:
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict):
        raise CheckpointFormatError(f"{index}: no 'weight_map' in the shard index")
    out: StateDict = {}
    for shard in sorted(set(weight_map.values())):
        out.update(_read_safetensors(index.parent / shard)[0])
    return out


def load_state_dict_file(path: str | Path) -> StateDict:
    """Tensors of a ``.safetensors`` or ``.pth`` / ``.pt`` / ``.bin`` file (weights only).

    Torch files are read with ``torch.load(weights_only=True)`` only, and a
    ``{"model": ...}`` / ``{"teacher": ...}`` / ``{"state_dict": ...}`` wrapper is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.name.endswith(".safetensors"):
        return _read_safetensors(path)[0]
    if path.name.endswith(".safetensors.index.json"):
        return _read_sharded(path)
    if path.suffix in _TORCH_SUFFIXES:
        return _read_torch(path)
    raise CheckpointFormatError(
        f"{path}: unknown file type {path.suffix!r}; expected .safetensors, .pth, .pt or .bin"
    )


def _strip_head_prefixes(state: Mapping[str, torch.Tensor]) -> StateDict:
    sd = dict(state)
    changed = True
    while changed and sd:
        changed = False
        for p in ("module.", "teacher.", "student.", "dino_head.", "head."):
            if all(k.startswith(p) for k in sd):
                sd = {k[len(p) :]: v for k, v in sd.items()}
                changed = True
    return sd


def load_head_state(path: str | Path) -> StateDict:
    """A DINO head state dict (e.g. ``dino_head.safetensors``) with any ``dino_head.`` /
    ``head.`` prefix removed; keys like ``mlp.0.weight``, ``last_layer.*``."""
    path = Path(path)
    sd = _strip_head_prefixes(load_state_dict_file(path))
    if not sd:
        raise CheckpointFormatError(f"{path}: holds no tensors")
    if not any(k.startswith(("mlp.", "last_layer.")) for k in sd):
        raise CheckpointFormatError(
            f"{path}: does not look like a DINO head (keys: {_some(list(sd))}); expected "
            "mlp.* and last_layer.* keys"
        )
    return sd


@dataclass
class _Source:
    """Raw tensors of one checkpoint and the side information found beside them."""

    state: StateDict
    path: Path
    hints: _Hints | None
    head_path: Path | None


def _resolve(path: Path) -> _Source:
    if path.is_dir():
        hints = _hints_from_folder(path)
        head = path / HEAD_WEIGHTS
        head_path = head if head.is_file() else None
        if (path / "config.json").is_file() and (path / HF_WEIGHTS).is_file():
            return _Source(
                _read_safetensors(path / HF_WEIGHTS)[0], path / HF_WEIGHTS, hints, head_path
            )
        index = path / f"{HF_WEIGHTS}.index.json"
        if (path / "config.json").is_file() and index.is_file():
            return _Source(_read_sharded(index), index, hints, head_path)
        if (path / NATIVE_WEIGHTS).is_file():
            sd, meta = _read_safetensors(path / NATIVE_WEIGHTS)
            return _Source(
                sd,
                path / NATIVE_WEIGHTS,
                hints or _hints_from_metadata(meta, path / NATIVE_WEIGHTS),
                head_path,
            )
        if (path / "config.json").is_file() and (path / "pytorch_model.bin").is_file():
            return _Source(
                _read_torch(path / "pytorch_model.bin"),
                path / "pytorch_model.bin",
                hints,
                head_path,
            )
        raise CheckpointFormatError(
            f"{path}: folder holds no backbone weights; expected config.json + "
            f"{HF_WEIGHTS} (a transformers folder such as microsoft/rad-dino) or "
            f"{NATIVE_WEIGHTS}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    meta: dict[str, str] | None = None
    if path.name.endswith(".safetensors"):
        sd, meta = _read_safetensors(path)
    else:
        sd = load_state_dict_file(path)
    hints = _hints_from_folder(path.parent) or _hints_from_metadata(meta, path)
    head = path.parent / HEAD_WEIGHTS
    head_path = head if path.name in (HF_WEIGHTS, NATIVE_WEIGHTS) and head.is_file() else None
    return _Source(sd, path, hints, head_path)


def load_backbone(
    path: str | Path,
    spec: BackboneSpec | None = None,
    drop_path: float = 0.0,
    num_heads: int | None = None,
) -> LoadedBackbone:
    """Build a :class:`ViTBackbone` from a checkpoint on disk.

    Args:
        path: a transformers folder (``config.json`` + ``model.safetensors``, optionally
            ``dino_head.safetensors``), a folder with ``backbone_compatible.safetensors``, a
            ``.safetensors`` file or a ``.pth`` / ``.pt`` / ``.bin`` file (read with
            ``weights_only=True``; training checkpoints: the teacher backbone is taken).
        spec: the wanted architecture; ``None`` infers it (:func:`infer_spec`). Its widths,
            depth and patch size must match the weights; a different ``image_size`` resamples
            ``pos_embed`` (:func:`resample_pos_embed`); its pixel statistics are used as given.
        drop_path: stochastic-depth rate of the new backbone.
        num_heads: number of heads when ``spec`` is ``None`` and no config records it.

    Raises:
        CheckpointFormatError: unknown format, registers / SwiGLU, missing or unexpected keys,
            shape mismatches; the message names the file.
    """
    src = _resolve(Path(path))
    where = str(src.path)
    backbone_sd, head_state, ignored, bb_prefix = split_checkpoint(src.state)
    if not backbone_sd:
        raise CheckpointFormatError(f"{where}: no backbone keys (keys: {_some(list(src.state))})")
    native, fmt, notes = to_native(backbone_sd, where)
    if bb_prefix:
        notes.insert(0, f"took the backbone from keys under {bb_prefix!r}")
    if ignored:
        notes.append(f"ignored {len(ignored)} non-backbone key(s): {_some(ignored, 4)}")
    if head_state is None and src.head_path is not None:
        head_state = load_head_state(src.head_path)
        notes.append(f"DINO head from {src.head_path.name}")

    if spec is None:
        inferred = _infer(native, num_heads, src.hints, where)
    else:
        inferred = _infer(native, spec.num_heads, src.hints, where, warn_defaults=False)
    if spec is None:
        spec = inferred
    else:
        spec.check()
        diff = [
            f"{name}: weights {getattr(inferred, name)} vs spec {getattr(spec, name)}"
            for name in ("embed_dim", "depth", "patch_size", "mlp_ratio")
            if abs(getattr(inferred, name) - getattr(spec, name)) > 1e-6
        ]
        if src.hints and src.hints.num_heads is not None and src.hints.num_heads != spec.num_heads:
            diff.append(
                f"num_heads: {src.hints.origin} {src.hints.num_heads} vs spec {spec.num_heads}"
            )
        if diff:
            raise CheckpointFormatError(
                f"{where}: the weights do not fit the requested BackboneSpec ({'; '.join(diff)}); "
                "pass spec=None to use the checkpoint's architecture, or a matching spec"
            )
        h = src.hints
        if (
            h
            and h.pixel_mean is not None
            and h.pixel_std is not None
            and (
                abs(h.pixel_mean - spec.pixel_mean) > 1e-6
                or abs(h.pixel_std - spec.pixel_std) > 1e-6
            )
        ):
            warnings.warn(
                f"{where}: the checkpoint was trained with pixel mean/std {h.pixel_mean:.4f}/"
                f"{h.pixel_std:.4f} but the spec normalises with {spec.pixel_mean:.4f}/"
                f"{spec.pixel_std:.4f}",
                stacklevel=2,
            )
    grid = spec.image_size // spec.patch_size
    if inferred.image_size != spec.image_size:
        native["pos_embed"] = resample_pos_embed(native["pos_embed"], (grid, grid))
        src_grid = inferred.image_size // inferred.patch_size
        notes.append(
            f"resampled pos_embed {src_grid}x{src_grid} -> {grid}x{grid} "
            f"(image {inferred.image_size} -> {spec.image_size})"
        )

    model = ViTBackbone(spec, drop_path=drop_path)
    own = model.state_dict()
    missing = sorted(set(own) - set(native))
    unexpected = sorted(set(native) - set(own))
    allowed_missing = {"mask_token"}
    if set(missing) - allowed_missing or unexpected:
        raise CheckpointFormatError(
            f"{where}: keys do not match ViTBackbone ({fmt} format); missing: "
            f"[{_some([k for k in missing if k not in allowed_missing], 12)}]; unexpected: "
            f"[{_some(unexpected, 12)}]"
        )
    bad_shapes = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in native.items()
        if tuple(v.shape) != tuple(own[k].shape)
    ]
    if bad_shapes:
        raise CheckpointFormatError(
            f"{where}: tensor shapes do not match the architecture {spec}: "
            + "; ".join(bad_shapes[:8])
            + (f" ... (+{len(bad_shapes) - 8} more)" if len(bad_shapes) > 8 else "")
        )
    model.load_state_dict(native, strict=False)
    if missing:
        notes.append("mask_token not in the checkpoint (timm format): kept zero-initialised")
    return LoadedBackbone(
        backbone=model.eval(),
        spec=spec,
        source_format=fmt,
        head_state=head_state,
        missing=missing,
        unexpected=unexpected,
        notes=notes,
    )


# ---------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------
def hf_config_dict(spec: BackboneSpec) -> dict[str, Any]:
    """transformers ``Dinov2Config`` (as a JSON-ready dict) of a :class:`BackboneSpec`."""
    from transformers import Dinov2Config

    mlp_ratio: float | int = spec.mlp_ratio
    if float(mlp_ratio).is_integer():
        mlp_ratio = int(mlp_ratio)
    cfg = Dinov2Config(
        hidden_size=spec.embed_dim,
        num_hidden_layers=spec.depth,
        num_attention_heads=spec.num_heads,
        mlp_ratio=mlp_ratio,
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        num_channels=3,
        qkv_bias=True,
        layerscale_value=spec.layerscale_init,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
        use_swiglu_ffn=False,
        drop_path_rate=0.0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        architectures=["Dinov2Model"],
    )
    return json.loads(cfg.to_json_string(use_diff=False))


def preprocessor_config_dict(spec: BackboneSpec) -> dict[str, Any]:
    """``BitImageProcessor`` settings of RAD-DINO's kind for a :class:`BackboneSpec`.

    Resize the shortest edge to ``image_size`` (bicubic), centre-crop ``image_size``, scale to
    [0, 1], normalise with the spec's grey-level statistics repeated over 3 RGB channels.
    """
    return {
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"shortest_edge": spec.image_size},
        "resample": 3,
        "do_center_crop": True,
        "crop_size": {"height": spec.image_size, "width": spec.image_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [float(spec.pixel_mean)] * 3,
        "image_std": [float(spec.pixel_std)] * 3,
        "image_processor_type": "BitImageProcessor",
    }


def _detached(sd: Mapping[str, torch.Tensor]) -> StateDict:
    # clone: views (qkv chunks, tied tensors) share storage, which safetensors refuses
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in sd.items()}


def _save_safetensors(path: Path, sd: StateDict, meta: dict[str, str] | None = None) -> None:
    atomic_save(path, lambda p: save_file(sd, str(p), metadata={"format": "pt", **(meta or {})}))


def export_hf(
    backbone: ViTBackbone,
    out_dir: str | Path,
    head: Mapping[str, torch.Tensor] | nn.Module | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``backbone`` (+ DINO head) as a folder laid out like ``microsoft/rad-dino``.

    Files: ``config.json`` (Dinov2Config), ``model.safetensors`` (transformers keys),
    ``preprocessor_config.json`` (BitImageProcessor), ``backbone_compatible.safetensors``
    (native DINOv2 keys, the spec in its metadata) and, with ``head``,
    ``dino_head.safetensors``. The folder is assembled beside ``out_dir`` and renamed into
    place, so readers never see a partial export.

    Raises:
        FileExistsError: ``out_dir`` exists and is not empty, and ``overwrite`` is False.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{out_dir}: folder exists and is not empty; pass overwrite=True to replace it"
        )
    spec = backbone.spec
    native = _detached(backbone.state_dict())
    hf = _detached(native_to_hf(native))
    head_sd: StateDict | None = None
    if head is not None:
        raw = head.state_dict() if isinstance(head, nn.Module) else head
        head_sd = _detached(_strip_head_prefixes(raw))
        if not head_sd:
            raise ValueError("export_hf: head state dict is empty")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        atomic_write_text(tmp / "config.json", json.dumps(hf_config_dict(spec), indent=2) + "\n")
        atomic_write_text(
            tmp / "preprocessor_config.json",
            json.dumps(preprocessor_config_dict(spec), indent=2) + "\n",
        )
        _save_safetensors(tmp / HF_WEIGHTS, hf)
        _save_safetensors(
            tmp / NATIVE_WEIGHTS, native, {SPEC_METADATA_KEY: json.dumps(spec.to_dict())}
        )
        if head_sd is not None:
            _save_safetensors(tmp / HEAD_WEIGHTS, head_sd)
        old: Path | None = None
        if out_dir.exists():  # empty, or overwrite=True: move it aside, restore on failure
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / out_dir.name)
        try:
            os.replace(tmp, out_dir)
        except BaseException:
            if old is not None:
                os.replace(old / out_dir.name, out_dir)
                old.rmdir()
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
