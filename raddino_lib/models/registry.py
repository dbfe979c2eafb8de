"""One interface for every image encoder the book compares.

An :class:`Encoder` turns grayscale images ``[B, 1, H, W]`` in ``[0, 1]`` into an
:class:`EncoderOutput`: the CLS embedding ``[B, D]``, the patch grid ``[B, h, w, D]`` and,
on request, the patch grids of intermediate blocks (for segmentation heads). Each encoder
carries its own :class:`Preprocess` (input side, normalisation, channels), as the paper ran
every baseline with its own pipeline.

Backends:

* :class:`ViTEncoder` -- this project's :class:`~raddino_lib.models.backbone.ViTBackbone`
  (pretraining runs, exported weights in DINOv2 / timm / transformers formats, random init);
* :class:`HFDinov2Encoder` -- a transformers ``Dinov2Model`` folder (``microsoft/rad-dino``,
  DINOv2 base/giant) used through transformers itself;
* :class:`HFCLIPEncoder` -- a transformers CLIP (vision) folder (the paper's CLIP@224/@336);
* :class:`TimmEncoder` -- any timm model (ViTs and CNNs), weights from a local file;
* :class:`OpenCLIPEncoder` -- the vision tower of an open_clip model (BiomedCLIP and other
  CLIP checkpoints in open_clip's format; the optional ``open_clip_torch`` package); towers
  built on a timm trunk (BiomedCLIP's ViT-B/16) run as a :class:`TimmEncoder`;
* :class:`PixelEncoder` -- downsampled raw pixels, the floor every encoder must beat.

:func:`load_encoder` picks the backend from a source string (a folder, a weights file, a run
folder, ``"timm:NAME"``, ``"open_clip:FOLDER"``, ``"pixels:32"``, or a hub id where a hub is
reachable).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from raddino_lib.models.attention import register_hf_blocked
from raddino_lib.models.backbone import ViTBackbone

__all__ = [
    "Encoder",
    "EncoderError",
    "EncoderOutput",
    "HFCLIPEncoder",
    "HFDinov2Encoder",
    "OpenCLIPEncoder",
    "PixelEncoder",
    "Preprocess",
    "TimmEncoder",
    "ViTEncoder",
    "load_encoder",
]


class EncoderError(ValueError):
    """An encoder source that cannot be loaded (the message says what was found and why)."""


@dataclass(frozen=True)
class Preprocess:
    """An encoder's input pipeline for ``[B, 1, H, W]`` images in ``[0, 1]``.

    The shorter side is resized to ``image_size`` (bicubic, antialiased) and the centre
    ``image_size`` square is cropped (transformers' BitImageProcessor / CLIPImageProcessor
    recipe); the grey channel is repeated to ``channels``; then ``(x - mean) / std`` per channel.
    """

    image_size: int
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)
    channels: int = 3

    def __post_init__(self) -> None:
        if self.image_size < 1:
            raise EncoderError(f"image_size must be positive, got {self.image_size}")
        if len(self.mean) not in (1, self.channels) or len(self.std) not in (1, self.channels):
            raise EncoderError(
                f"mean {self.mean} / std {self.std} need 1 or {self.channels} values"
            )

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, S, S]``: shorter side to ``S``, centre crop."""
        s = self.image_size
        h, w = x.shape[-2:]
        if (h, w) == (s, s):
            return x
        scale = s / min(h, w)
        nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
        top, left = (nh - s) // 2, (nw - s) // 2
        return x[..., top : top + s, left : left + s].clamp(0, 1)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, H, W]`` in [0, 1] -> ``[B, channels, S, S]`` normalised."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise EncoderError(f"expected grayscale images [B, 1, H, W], got {tuple(x.shape)}")
        x = self.resize(x.float())
        x = x.expand(-1, self.channels, -1, -1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std


@dataclass
class EncoderOutput:
    """``cls [B, D]``, ``patches [B, h, w, D]``, ``layers``: one ``[B, h, w, D]`` per
    requested block (in the order requested, final norm applied as DINOv2 does)."""

    cls: torch.Tensor
    patches: torch.Tensor
    layers: tuple[torch.Tensor, ...] = field(default_factory=tuple)


def _digest_state(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        t = t.detach().cpu().contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class Encoder(nn.Module):
    """Base class: subclasses set the attributes and implement :meth:`forward_features`.

    Attributes:
        name: label used in tables and figures.
        kind: backend name (``"vit"``, ``"hf-dinov2"``, ``"hf-clip"``, ``"timm"``, ``"pixels"``).
        preprocess: the input pipeline.
        patch_size: pixels per patch side (1 for pixels).
        embed_dim: ``D``.
        num_layers: number of transformer blocks (stages for CNNs).
    """

    name: str
    kind: str
    preprocess: Preprocess
    patch_size: int
    embed_dim: int
    num_layers: int

    def __init__(self) -> None:
        super().__init__()
        self._identity: str | None = None

    def forward_features(self, x: torch.Tensor, layers: Sequence[int] = ()) -> EncoderOutput:
        """Preprocessed input ``[B, C, S, S]`` -> :class:`EncoderOutput`."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor, layers: Sequence[int] = ()) -> EncoderOutput:  # type: ignore[override]
        return self.encode(images, layers)

    def encode(self, images: torch.Tensor, layers: Sequence[int] = ()) -> EncoderOutput:
        """Grayscale ``[B, 1, H, W]`` in ``[0, 1]`` -> :class:`EncoderOutput`."""
        return self.forward_features(self.preprocess.apply(images), layers)

    def grid_size(self) -> int:
        """Patch-grid side ``h = w`` at the encoder's input size."""
        return self.preprocess.image_size // self.patch_size

    def at_resolution(self, image_size: int) -> Encoder:
        """This encoder run at another input side (position embeddings interpolated)."""
        if image_size % self.patch_size:
            raise EncoderError(
                f"{self.name}: image_size {image_size} is not a multiple of the patch size "
                f"{self.patch_size}"
            )
        self.preprocess = replace(self.preprocess, image_size=image_size)
        self._identity = None
        return self

    def identity(self) -> str:
        """Content hash of the weights, the backend and the preprocessing (cache keys)."""
        if self._identity is None:
            blob = json.dumps(
                {"kind": self.kind, "preprocess": self.preprocess.to_dict(), **self._extra_id()},
                sort_keys=True,
            )
            h = hashlib.sha256(blob.encode())
            h.update(_digest_state(self).encode())
            self._identity = h.hexdigest()[:20]
        return self._identity

    def _extra_id(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        """Plain facts for tables: name, backend, input side, patch, tokens, width, depth."""
        g = self.grid_size()
        return {
            "name": self.name,
            "kind": self.kind,
            "image_size": self.preprocess.image_size,
            "patch_size": self.patch_size,
            "tokens": g * g,
            "embed_dim": self.embed_dim,
            "layers": self.num_layers,
            "params_m": round(sum(p.numel() for p in self.parameters()) / 1e6, 3),
        }


def _pick(n: int, layers: Sequence[int]) -> list[int]:
    out = []
    for i in layers:
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise EncoderError(f"layer index {i} out of range for {n} blocks")
        out.append(j)
    return out


def _to_grid(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return tokens.reshape(tokens.shape[0], h, w, tokens.shape[-1])


# --------------------------------------------------------------------------- native ViT
class ViTEncoder(Encoder):
    """This project's ViT (pretraining runs, converted checkpoints, random init)."""

    kind = "vit"

    def __init__(self, backbone: ViTBackbone, name: str = "ViT") -> None:
        super().__init__()
        spec = backbone.spec
        self.backbone = backbone.eval()
        self.name = name
        self.patch_size = spec.patch_size
        self.embed_dim = spec.embed_dim
        self.num_layers = spec.depth
        self.preprocess = Preprocess(spec.image_size, (spec.pixel_mean,), (spec.pixel_std,), 3)

    def forward_features(self, x: torch.Tensor, layers: Sequence[int] = ()) -> EncoderOutput:
        bb = self.backbone
        h, w = bb.grid(x)
        want = _pick(len(bb.blocks), layers)
        tok = bb.norm_pre(bb._pos_embed(bb.patch_embed(x)))
        inter: dict[int, torch.Tensor] = {}
        for i, blk in enumerate(bb.blocks):
            tok = blk(tok)
            if i in want:
                inter[i] = bb.norm(tok)
        tok = bb.norm(tok)
        k = bb.num_prefix_tokens
        return EncoderOutput(
            cls=tok[:, 0],
            patches=_to_grid(tok[:, k:], h, w),
            layers=tuple(_to_grid(inter[i][:, k:], h, w) for i in want),
        )


# ------------------------------------------------------------------------ transformers
def _processor_preprocess(processor: dict[str, Any], default: int) -> Preprocess:
    crop = processor.get("crop_size") or {}
    size = processor.get("size") or {}
    side = (
        (crop.get("height") if isinstance(crop, dict) else crop)
        or (size.get("shortest_edge") if isinstance(size, dict) else size)
        or default
    )
    mean = tuple(float(v) for v in processor.get("image_mean", (0.485, 0.456, 0.406)))
    std = tuple(float(v) for v in processor.get("image_std", (0.229, 0.224, 0.225)))
    return Preprocess(int(side), mean, std, 3)


def _read_processor(folder: Path | None) -> dict[str, Any]:
    if folder is None:
        return {}
    p = folder / "preprocessor_config.json"
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise EncoderError(f"{p}: not valid JSON ({exc})") from None


class _HFEncoder(Encoder):
    """Shared set-up of the transformers backbones (sizes read from ``model.config``)."""

    def __init__(self, model: nn.Module, preprocess: Preprocess, name: str) -> None:
        super().__init__()
        cfg = model.config
        self.model = model.eval()
        self.name = name
        self.preprocess = preprocess
        self.patch_size = int(cfg.patch_size)
        self.embed_dim = int(cfg.hidden_size)
        self.num_layers = int(cfg.num_hidden_layers)


class HFDinov2Encoder(_HFEncoder):
    """A transformers ``Dinov2Model`` (CLS = ``last_hidden_state[:, 0]``, as RAD-DINO's card)."""

    kind = "hf-dinov2"

    def __init__(self, model: nn.Module, preprocess: Preprocess, name: str = "DINOv2") -> None:
        super().__init__(model, preprocess, name)

    def forward_features(self, x: torch.Tensor, layers: Sequence[int] = ()) -> EncoderOutput:
        want = _pick(self.num_layers, layers)
        out = self.model(pixel_values=x, output_hidden_states=bool(want))
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        last = out.last_hidden_state
        k = last.shape[1] - h * w  # CLS (+ register tokens)
        inter = tuple(
            _to_grid(self.model.layernorm(out.hidden_states[i + 1])[:, k:], h, w) for i in want
        )
        return EncoderOutput(cls=last[:, 0], patches=_to_grid(last[:, k:], h, w), layers=inter)


class HFCLIPEncoder(_HFEncoder):
    """A transformers CLIP vision tower. CLS = ``pooler_output`` (the post-LayerNorm class
    token that CLIP projects into its joint space); patches get the same LayerNorm."""

    kind = "hf-clip"

    def __init__(self, model: nn.Module, preprocess: Preprocess, name: str = "CLIP") -> None:
        super().__init__(model, preprocess, name)
        self._native = int(model.config.image_size)

    def forward_features(self, x: torch.Tensor, layers: Sequence[int] = ()) -> EncoderOutput:
        want = _pick(self.num_layers, layers)
        out = self.model(
            pixel_values=x,
            output_hidden_states=bool(want),
            interpolate_pos_encoding=x.shape[-1] != self._native or x.shape[-2] != self._native,
        )
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        inner = getattr(self.model, "vision_model", self.model)  # transformers < 5 nests it
        post = inner.post_layernorm
        patches = post(out.last_hidden_state[:, 1:])
        inter = tuple(_to_grid(post(out.hidden_states[i + 1][:, 1:]), h, w) for i in want)
        return EncoderOutput(cls=out.pooler_output, patches=_to_grid(patches, h, w), layers=inter)


# -------------------------------------------------------------------------------- timm
class TimmEncoder(Encoder):
    """Any timm model: ViTs (class token or pooled patches) and CNNs (feature-map GAP)."""

    kind = "timm"

    def __init__(self, model: nn.Module, name: str | None = None) -> None:
        super().__init__()
        self.model = model.eval()
        pc = getattr(model, "pretrained_cfg", {}) or {}
        side = int((pc.get("input_size") or (3, 224, 224))[-1])
        self.name = name or getattr(model, "default_cfg", {}).get("architecture", "timm")
        self.preprocess = Preprocess(
            side,
            tuple(pc.get("mean", (0.485, 0.456, 0.406))),
            tuple(pc.get("std", (0.229, 0.224, 0.225))),
            3,
        )
        pe = getattr(model, "patch_embed", None)
        self.is_vit = pe is not None and hasattr(model, "blocks")
        if self.is_vit:
            ps = pe.patch_size
            self.patch_size = int(ps[0] if isinstance(ps, tuple | list) else ps)
            self.num_layers = len(model.blocks)
        else:
            red = model.feature_info[-1]["reduction"] if hasattr(model, "feature_info") else 32
            self.patch_size = int(red)
            self.num_layers = len(getattr(model, "feature_info", [])) or 1
        self.embed_dim = int(model.num_features)

    def forward_features(self, x: torch.Tensor, layers: Sequence[int] = ()) -> EncoderOutput:
        m = self.model
        want = _pick(self.num_layers, layers)
        if not self.is_vit:
            if want:
                raise EncoderError(f"{self.name}: intermediate layers need a timm ViT")
            fmap = m.forward_features(x)  # [B, C, h, w]
            grid = fmap.permute(0, 2, 3, 1)
            return EncoderOutput(cls=fmap.mean((2, 3)), patches=grid)
        if want:
            final, inter = m.forward_intermediates(x, indices=want, norm=True, output_fmt="NCHW")
            inter_t = tuple(t.permute(0, 2, 3, 1) for t in inter)
        else:
            final, inter_t = m.forward_features(x), ()
        k = m.num_prefix_tokens
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        patches = _to_grid(final[:, k:], h, w)
        cls = final[:, 0] if getattr(m, "cls_token", None) is not None else patches.mean((1, 2))
        return EncoderOutput(cls=cls, patches=patches, layers=inter_t)


# --------------------------------------------------------------------------- open_clip
class OpenCLIPEncoder(Encoder):
    """The vision tower of an open_clip model (its own ``VisionTransformer``). CLS = the
    class token after ``ln_post``, before the projection into the joint space (as
    :class:`HFCLIPEncoder`); patches and intermediate blocks get the same LayerNorm. The
    position embeddings are not interpolated: the tower runs at its own input side."""

    kind = "open_clip"

    def __init__(self, visual: nn.Module, preprocess: Preprocess, name: str = "open_clip") -> None:
        super().__init__()
        self.model = visual.eval()
        self.name = name
        self.preprocess = preprocess
        ps = visual.patch_size
        self.patch_size = int(ps[0] if isinstance(ps, tuple | list) else ps)
        self.num_layers = len(visual.transformer.resblocks)
        self.embed_dim = int(visual.transformer.width)
        self._native = preprocess.image_size

    def at_resolution(self, image_size: int) -> Encoder:
        if image_size != self._native:
            raise EncoderError(
                f"{self.name}: an open_clip vision transformer runs at its own side "
                f"({self._native} px), not {image_size}"
            )
        return self

    def forward_features(self, x: torch.Tensor, layers: Sequence[int] = ()) -> EncoderOutput:
        want = _pick(self.num_layers, layers)
        idx = sorted({*want, self.num_layers - 1})
        out = self.model.forward_intermediates(
            x, indices=idx, normalize_intermediates=True, intermediates_only=True,
            output_fmt="NCHW", output_extra_tokens=True,
        )  # fmt: skip
        maps = {
            i: t.permute(0, 2, 3, 1) for i, t in zip(idx, out["image_intermediates"], strict=True)
        }
        cls = out["image_intermediates_prefix"][-1][:, 0]
        return EncoderOutput(
            cls=cls, patches=maps[self.num_layers - 1], layers=tuple(maps[i] for i in want)
        )


def _open_clip_encoder(spec: str, name: str | None) -> Encoder:
    """``open_clip:FOLDER`` (``open_clip_config.json`` + ``open_clip_model.safetensors`` or
    ``open_clip_pytorch_model.bin``, the layout of ``microsoft/BiomedCLIP-...`` on the hub) or
    ``open_clip:MODEL_NAME=WEIGHTS_FILE`` (an open_clip built-in config). Only the vision
    tower is built, so a text tower's tokenizer or hub config is never fetched."""
    try:
        import open_clip
        from open_clip.model import _build_vision_tower
    except ImportError:
        raise EncoderError(
            f"encoder source 'open_clip:{spec}' needs the open_clip package: "
            "pip install open_clip_torch (or pip install -e '.[external]')"
        ) from None
    folder = Path(spec).expanduser()
    preprocess_cfg: dict[str, Any] = {}
    if folder.is_dir():
        cfg_path = folder / "open_clip_config.json"
        if not cfg_path.is_file():
            raise EncoderError(f"{folder}: no open_clip_config.json (an open_clip model folder)")
        blob = json.loads(cfg_path.read_text())
        model_cfg, preprocess_cfg = blob.get("model_cfg", {}), blob.get("preprocess_cfg", {})
        weights = next(
            (folder / f for f in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
             if (folder / f).is_file()),
            None,
        )  # fmt: skip
        if weights is None:
            raise EncoderError(
                f"{folder}: no open_clip_model.safetensors or open_clip_pytorch_model.bin"
            )
        label = name or folder.name
    else:
        arch, _, wpath = spec.partition("=")
        model_cfg = open_clip.get_model_config(arch) or {}
        if not model_cfg:
            raise EncoderError(f"open_clip has no model config {arch!r}")
        weights = Path(wpath).expanduser() if wpath else None
        if weights is None or not weights.is_file():
            raise EncoderError(f"open_clip:{spec}: give a weights file as MODEL_NAME=FILE")
        label = name or arch
    if "vision_cfg" not in model_cfg or "embed_dim" not in model_cfg:
        raise EncoderError(f"open_clip:{spec}: model config without vision_cfg / embed_dim")
    visual = _build_vision_tower(
        model_cfg["embed_dim"],
        model_cfg["vision_cfg"],
        quick_gelu=model_cfg.get("quick_gelu", False),
    )
    from raddino_lib.models.formats import load_state_dict_file

    state = load_state_dict_file(weights)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    sub = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    try:
        missing, unexpected = visual.load_state_dict(sub, strict=False)
    except RuntimeError as exc:  # shape mismatches
        missing, unexpected = [str(exc).splitlines()[-1].strip()], []
    if missing or unexpected or not sub:
        raise EncoderError(
            f"{weights}: weights do not fit the vision tower of {spec!r} "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    side = int(preprocess_cfg.get("size", model_cfg["vision_cfg"].get("image_size", 224)))
    side = side[0] if isinstance(side, list | tuple) else side
    pre = Preprocess(
        side,
        tuple(preprocess_cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        tuple(preprocess_cfg.get("std", open_clip.OPENAI_DATASET_STD)),
        3,
    )
    if hasattr(visual, "trunk"):  # a timm trunk (BiomedCLIP): its tokens through timm
        enc: Encoder = TimmEncoder(visual.trunk, label)
        enc.preprocess = pre
        return enc
    return OpenCLIPEncoder(visual, pre, label)


# ------------------------------------------------------------------------------ pixels
class PixelEncoder(Encoder):
    """Raw pixels downsampled to ``size x size``: CLS = the flattened standardised image
    ``[B, size * size]``, patches = the image itself ``[B, size, size, 1]``."""

    kind = "pixels"

    def __init__(self, size: int = 32, name: str | None = None) -> None:
        super().__init__()
        self.name = name or f"raw pixels {size}px"
        self.preprocess = Preprocess(size, (0.5,), (0.25,), 1)
        self.patch_size = 1
        self.embed_dim = size * size
        self.num_layers = 0

    def forward_features(self, x: torch.Tensor, layers: Sequence[int] = ()) -> EncoderOutput:
        if layers:
            raise EncoderError("raw pixels have no layers")
        return EncoderOutput(cls=x.flatten(1), patches=x.permute(0, 2, 3, 1))

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(embed_dim=self.embed_dim, params_m=0.0)
        return d


# ------------------------------------------------------------------------------- blank
class BlankEncoder(Encoder):
    """No image at all: CLS ``[B, D]`` and patches ``[B, h, w, D]`` are zeros, whatever the
    input. A generator or probe on it learns only its targets' prior (the report chapter's
    no-image row); ``image_size``, ``patch_size`` and ``embed_dim`` give it the token count and
    width of the encoder it stands beside."""

    kind = "blank"

    def __init__(
        self, image_size: int = 64, patch_size: int = 8, embed_dim: int = 192,
        name: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if image_size % patch_size:
            raise EncoderError(f"blank: image_size {image_size} is not a multiple of {patch_size}")
        self.name = name or "no image"
        self.preprocess = Preprocess(image_size, (0.5,), (0.25,), 1)
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.num_layers = 1

    def _extra_id(self) -> dict[str, Any]:
        return {"patch_size": self.patch_size, "embed_dim": self.embed_dim}

    def forward_features(self, x: torch.Tensor, layers: Sequence[int] = ()) -> EncoderOutput:
        b = x.shape[0]
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        patches = x.new_zeros(b, h, w, self.embed_dim)
        want = _pick(self.num_layers, layers)
        return EncoderOutput(
            cls=x.new_zeros(b, self.embed_dim), patches=patches, layers=tuple(patches for _ in want)
        )

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(embed_dim=self.embed_dim, params_m=0.0)
        return d


# ----------------------------------------------------------------------------- loading
def _folder_kind(folder: Path) -> str | None:
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        return None
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise EncoderError(f"{cfg_path}: not valid JSON ({exc})") from None
    mt = cfg.get("model_type")
    if mt in ("dinov2", "dinov2_with_registers"):
        return "hf-dinov2"
    if mt in ("clip", "clip_vision_model", "siglip", "siglip_vision_model"):
        return "hf-clip" if mt.startswith("clip") else "hf-siglip"
    if "architecture" in cfg:
        return "timm"
    return f"unknown model_type {mt!r}"


def _hf_encoder(kind: str, src: str, name: str | None) -> Encoder:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = Path(src) if Path(src).is_dir() else None
    proc = _read_processor(folder)
    # cache-blocked attention on CPU without gradients, transformers' SDPA otherwise
    attn = register_hf_blocked()
    if kind == "hf-dinov2":
        from transformers import AutoModel

        model = AutoModel.from_pretrained(src, attn_implementation=attn)
        pre = _processor_preprocess(proc, int(model.config.image_size))
        return HFDinov2Encoder(model, pre, name or Path(src).name)
    from transformers import CLIPVisionModel

    model = CLIPVisionModel.from_pretrained(src, attn_implementation=attn)
    pre = _processor_preprocess(proc, int(model.config.image_size))
    if not proc:  # CLIP's own statistics (transformers' CLIPImageProcessor defaults)
        pre = replace(
            pre,
            mean=(0.48145466, 0.4578275, 0.40821073),
            std=(0.26862954, 0.26130258, 0.27577711),
        )
    return HFCLIPEncoder(model, pre, name or Path(src).name)


def _timm_encoder(arch: str, weights: Path | None, name: str | None) -> Encoder:
    import timm

    try:  # ViTs: accept other input sides (position embeddings resampled on the fly)
        model = timm.create_model(arch, pretrained=False, num_classes=0, dynamic_img_size=True)
    except TypeError:
        model = timm.create_model(arch, pretrained=False, num_classes=0)
    if weights is not None:
        from raddino_lib.models.formats import load_state_dict_file

        sd = load_state_dict_file(weights)
        sd = {k: v for k, v in sd.items() if not k.startswith(("head.", "fc.", "classifier."))}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise EncoderError(
                f"{weights}: weights do not fit timm model {arch!r} "
                f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
            )
    return TimmEncoder(model, name or arch)


def load_encoder(
    source: str | Path | nn.Module,
    *,
    name: str | None = None,
    image_size: int | None = None,
    cfg: Any = None,
    seed: int = 0,
) -> Encoder:
    """Build an :class:`Encoder` from a source.

    Args:
        source: one of
            * a :class:`ViTBackbone` or :class:`Encoder` instance;
            * ``"random"`` -- a randomly initialised ViT of ``cfg``'s architecture (``seed``);
            * ``"blank"`` or ``"blank:SIDE:PATCH:DIM"`` -- no image: zero tokens of that
              geometry (a prior-only baseline);
            * ``"pixels"`` or ``"pixels:N"`` -- raw pixels at ``N`` px (default
              ``cfg.pixel_floor_size`` or 32);
            * a pretraining run folder (``raddino pretrain --out``; its teacher);
            * a transformers folder (``config.json`` with ``model_type`` ``dinov2`` or
              ``clip``/``clip_vision_model``; its ``preprocessor_config.json`` gives the
              preprocessing);
            * a timm folder (``config.json`` with ``architecture``, weights in
              ``model.safetensors``) or ``"timm:ARCH"`` / ``"timm:ARCH=WEIGHTS_FILE"``;
            * ``"open_clip:FOLDER"`` or ``"open_clip:MODEL=WEIGHTS_FILE"`` -- an open_clip
              model's vision tower (BiomedCLIP; needs ``open_clip_torch``);
            * a weights file or DINOv2-format folder that
              :func:`raddino_lib.models.formats.load_backbone` reads;
            * a hub id such as ``"microsoft/rad-dino"`` (only where the hub is reachable).
        name: label for tables (default: derived from the source).
        image_size: run at this input side instead of the encoder's own.
    """
    enc = _load(source, name=name, cfg=cfg, seed=seed)
    if image_size is not None and image_size != enc.preprocess.image_size:
        enc.at_resolution(image_size)
    return enc


def _load(source: str | Path | nn.Module, *, name: str | None, cfg: Any, seed: int) -> Encoder:
    if isinstance(source, Encoder):
        return source
    if isinstance(source, ViTBackbone):
        return ViTEncoder(source, name or "ViT")
    if isinstance(source, nn.Module):
        return TimmEncoder(source, name)
    src = str(source)
    if src == "random":
        if cfg is None:
            raise EncoderError("source 'random' needs cfg= (the architecture to initialise)")
        from raddino_lib.models.backbone import build_backbone, spec_from_config

        return ViTEncoder(build_backbone(spec_from_config(cfg), seed=seed), name or "random init")
    if src == "pixels" or src.startswith("pixels:"):
        size = int(src.split(":", 1)[1]) if ":" in src else getattr(cfg, "pixel_floor_size", 32)
        return PixelEncoder(size, name)
    if src == "blank" or src.startswith("blank:"):
        try:
            dims = [int(v) for v in src.split(":")[1:]]
            if len(dims) not in (0, 3):
                raise ValueError
        except ValueError:
            raise EncoderError(f"{src!r}: use 'blank' or 'blank:SIDE:PATCH:DIM'") from None
        return BlankEncoder(*dims, name=name)
    if src.startswith("timm:"):
        arch, _, weights = src[5:].partition("=")
        return _timm_encoder(arch, Path(weights) if weights else None, name)
    if src.startswith("open_clip:"):
        return _open_clip_encoder(src[len("open_clip:") :], name)
    path = Path(src).expanduser()
    if path.is_dir():
        if (path / "checkpoints").is_dir():
            from raddino_lib.ssl.train import load_run_backbone

            return ViTEncoder(load_run_backbone(path), name or path.name)
        kind = _folder_kind(path)
        if kind in ("hf-dinov2", "hf-clip"):
            return _hf_encoder(kind, str(path), name)
        if kind == "timm":
            arch = json.loads((path / "config.json").read_text())["architecture"]
            weights = next(
                (path / f for f in ("model.safetensors", "pytorch_model.bin")
                 if (path / f).is_file()),
                None,
            )  # fmt: skip
            return _timm_encoder(arch, weights, name or path.name)
        if kind is not None and not (path / "backbone_compatible.safetensors").is_file():
            raise EncoderError(
                f"{path}/config.json: {kind}; supported: transformers dinov2 or clip folders, "
                "timm folders (config.json with 'architecture'), DINOv2/timm weight files"
            )
    if path.exists():
        from raddino_lib.models.formats import load_backbone

        return ViTEncoder(load_backbone(path).backbone, name or path.stem)
    if "/" in src and not src.startswith((".", "/", "~")):
        return _hub_encoder(src, name)
    raise EncoderError(
        f"encoder source {src!r}: no such file or folder (and not 'random', 'pixels[:N]', "
        "'timm:ARCH[=WEIGHTS]', 'open_clip:FOLDER' or a hub id)"
    )


def _hub_encoder(repo_id: str, name: str | None) -> Encoder:
    try:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(repo_id)
    except OSError as exc:
        raise EncoderError(
            f"hub id {repo_id!r} could not be fetched ({exc.__class__.__name__}); on a machine "
            "without hub access download the folder elsewhere and pass its local path"
        ) from None
    kind = {"dinov2": "hf-dinov2", "clip": "hf-clip", "clip_vision_model": "hf-clip"}.get(
        cfg.model_type
    )
    if kind is None:
        raise EncoderError(f"hub id {repo_id!r}: model_type {cfg.model_type!r} not supported")
    enc = _hf_encoder(kind, repo_id, name or repo_id)
    try:
        from transformers import AutoImageProcessor

        proc = AutoImageProcessor.from_pretrained(repo_id).to_dict()
        enc.preprocess = _processor_preprocess(proc, enc.preprocess.image_size)
    except OSError:
        pass
    return enc
