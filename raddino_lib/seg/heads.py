"""Segmentation heads for a frozen ViT (written here, pure PyTorch).

Every head takes a list of patch-feature maps ``[B, D, h, w]`` (one per encoder block it was
built for, all at the same ``h x w`` patch grid) and returns class logits ``[B, K, h', w']`` at
its own output stride; :func:`upsample_logits` brings them to the mask size. Any patch size and
input size work: every resampling step goes to an explicit target size, so odd grids (37 x 37
for ViT-B/14 at 518 px) round-trip.

* :class:`LinearHead` -- DINOv2's linear evaluation: BatchNorm + 1x1 conv on the patch tokens
  of the last block, or of several blocks concatenated (``[B, n * D, h, w]``).
* :class:`ViTDetHead` -- ViTDet's simple feature pyramid built from ONE map (x4 by two
  transposed convs, x2 by one, x1, x0.5 by max-pooling), a 1x1 + 3x3 conv per level, and a
  light decoder that upsamples the levels to the finest one, sums them and classifies.
* :class:`UPerNetHead` -- the ViT-adapter neck of BEiT/DINOv2 segmentation (four blocks, the
  i-th resampled to x4, x2, x1, x0.5) feeding UPerNet: pyramid pooling (1, 2, 3, 6) on the
  coarsest level, an FPN top-down path, 3x3 convs, all levels fused at the finest one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "HEADS",
    "LinearHead",
    "UPerNetHead",
    "ViTDetHead",
    "build_head",
    "head_layers",
    "upsample_logits",
]


def upsample_logits(logits: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """``[B, K, h, w]`` -> ``[B, K, H, W]`` by bilinear interpolation (no-op at that size)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _conv_bn(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)
    )


def _check(feats: Sequence[torch.Tensor], n: int, dim: int, name: str) -> None:
    if len(feats) != n:
        raise ValueError(f"{name} expects {n} feature map(s), got {len(feats)}")
    for f in feats:
        if f.ndim != 4 or f.shape[1] != dim:
            raise ValueError(f"{name} expects maps [B, {dim}, h, w], got {tuple(f.shape)}")


def head_layers(depth: int, head: str, linear_layers: int = 1) -> tuple[int, ...]:
    """The encoder blocks (0-based) a head reads: the last ``linear_layers`` for the linear
    head, the last for ViTDet, four evenly spaced ending at the last for UPerNet (ViT-B:
    2, 5, 8, 11 as in BEiT/DINOv2 segmentation; depth 6: 1, 2, 4, 5; depth 2: 0, 0, 1, 1)."""
    if head == "linear":
        n = max(1, min(linear_layers, depth))
        return tuple(range(depth - n, depth))
    if head == "vitdet":
        return (depth - 1,)
    if head == "upernet":  # ceil(depth * k / 4) - 1; shallow encoders repeat blocks
        return tuple(max(0, -(-depth * k // 4) - 1) for k in (1, 2, 3, 4))
    raise ValueError(f"unknown head {head!r}; choose one of {HEADS}")


class LinearHead(nn.Module):
    """BatchNorm + 1x1 conv over ``n_maps`` concatenated maps ``[B, n D, h, w]`` ->
    ``[B, K, h, w]``."""

    stride_factor = 1

    def __init__(self, embed_dim: int, n_classes: int, n_maps: int = 1) -> None:
        super().__init__()
        self.embed_dim, self.n_maps = embed_dim, n_maps
        self.bn = nn.BatchNorm2d(n_maps * embed_dim)
        self.conv = nn.Conv2d(n_maps * embed_dim, n_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        _check(feats, self.n_maps, self.embed_dim, "LinearHead")
        return self.conv(self.bn(torch.cat(list(feats), dim=1)))


def _rescale(dim: int, factor: float) -> tuple[nn.Module, int]:
    """One of the simple-pyramid resamplers: (module, output channels)."""
    if factor == 4:
        half, quarter = max(dim // 2, 1), max(dim // 4, 1)
        m = nn.Sequential(
            nn.ConvTranspose2d(dim, half, 2, stride=2),
            nn.BatchNorm2d(half),
            nn.GELU(),
            nn.ConvTranspose2d(half, quarter, 2, stride=2),
        )
        return m, quarter
    if factor == 2:
        half = max(dim // 2, 1)
        return nn.ConvTranspose2d(dim, half, 2, stride=2), half
    if factor == 1:
        return nn.Identity(), dim
    if factor == 0.5:
        return nn.MaxPool2d(2, ceil_mode=True), dim
    raise ValueError(f"unsupported pyramid factor {factor}")


SCALES = (4, 2, 1, 0.5)


class ViTDetHead(nn.Module):
    """Simple feature pyramid from one map + light decoder: ``[B, D, h, w] -> [B, K, 4h, 4w]``."""

    stride_factor = 4

    def __init__(self, embed_dim: int, n_classes: int, channels: int = 128) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.rescale = nn.ModuleList()
        self.lateral = nn.ModuleList()
        for s in SCALES:
            m, c = _rescale(embed_dim, s)
            self.rescale.append(m)
            self.lateral.append(
                nn.Sequential(_conv_bn(c, channels, 1), _conv_bn(channels, channels, 3))
            )
        self.fuse = _conv_bn(channels, channels, 3)
        self.cls = nn.Conv2d(channels, n_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        _check(feats, 1, self.embed_dim, "ViTDetHead")
        x = feats[0]
        h, w = x.shape[-2:]
        top = (4 * h, 4 * w)
        out = sum(
            _resize(lat(rs(x)), top) for rs, lat in zip(self.rescale, self.lateral, strict=True)
        )
        return self.cls(self.fuse(out))


class UPerNetHead(nn.Module):
    """Four maps (shallow to deep) -> multi-scale neck -> UPerNet: ``-> [B, K, 4h, 4w]``."""

    stride_factor = 4

    def __init__(
        self,
        embed_dim: int,
        n_classes: int,
        channels: int = 128,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.rescale = nn.ModuleList()
        self.lateral = nn.ModuleList()
        dims = []
        for s in SCALES:
            m, c = _rescale(embed_dim, s)
            self.rescale.append(m)
            dims.append(c)
        # laterals for the three finer levels; the coarsest goes through the PPM
        self.lateral = nn.ModuleList(_conv_bn(c, channels, 1) for c in dims[:-1])
        self.ppm = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(p), _conv_bn(dims[-1], channels, 1))
            for p in pool_scales
        )
        self.bottleneck = _conv_bn(dims[-1] + len(pool_scales) * channels, channels, 3)
        self.fpn = nn.ModuleList(_conv_bn(channels, channels, 3) for _ in dims[:-1])
        self.fuse = _conv_bn(4 * channels, channels, 3)
        self.drop = nn.Dropout2d(dropout)
        self.cls = nn.Conv2d(channels, n_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        _check(feats, 4, self.embed_dim, "UPerNetHead")
        levels = [rs(f) for rs, f in zip(self.rescale, feats, strict=True)]  # x4, x2, x1, x0.5
        top = levels[-1]
        size = tuple(top.shape[-2:])
        pooled = [_resize(p(top), size) for p in self.ppm]
        lat = [lat(x) for lat, x in zip(self.lateral, levels[:-1], strict=True)]
        lat.append(self.bottleneck(torch.cat([top, *pooled], dim=1)))
        for i in range(len(lat) - 1, 0, -1):  # top-down
            lat[i - 1] = lat[i - 1] + _resize(lat[i], tuple(lat[i - 1].shape[-2:]))
        outs = [conv(x) for conv, x in zip(self.fpn, lat[:-1], strict=True)] + [lat[-1]]
        fine = tuple(outs[0].shape[-2:])
        fused = self.fuse(torch.cat([_resize(o, fine) for o in outs], dim=1))
        return self.cls(self.drop(fused))


HEADS = ("linear", "vitdet", "upernet")


def build_head(
    head: str, embed_dim: int, n_classes: int, *, channels: int = 128, linear_layers: int = 1
) -> nn.Module:
    """A head by name (see :data:`HEADS`); ``channels`` is the decoder width of ViTDet/UPerNet
    (mmseg's UPerNet: 512; presets size it)."""
    if head == "linear":
        return LinearHead(embed_dim, n_classes, n_maps=linear_layers)
    if head == "vitdet":
        return ViTDetHead(embed_dim, n_classes, channels)
    if head == "upernet":
        return UPerNetHead(embed_dim, n_classes, channels)
    raise ValueError(f"unknown head {head!r}; choose one of {HEADS}")
