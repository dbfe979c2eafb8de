"""Multi-crop views for grayscale chest X-rays (RAD-DINO appendix C.1 on top of DINOv2).

Given one image ``[1, H, W]`` in ``[0, 1]`` (already at the encoder's resolution), produce

* 2 **global** crops: a square of side ``U(global_crop_scale) * min(H, W)`` at a uniform
  position, resized to ``global_crop_size`` (paper: side ``U(259, 518)`` of a 518 image ->
  518, i.e. scale ``(0.5, 1.0)``);
* ``n_local_crops`` **local** crops: side ``U(local_crop_scale) * min(H, W)`` resized to
  ``local_crop_size`` (paper: ``U(104, 259)`` -> 196, i.e. ``(0.2, 0.5)``).

DINOv2 uses ``RandomResizedCrop`` (area scale, aspect 3/4-4/3); RAD-DINO describes square
crops by side, which is what is done here (no aspect jitter: anatomy proportions are kept).

Photometric augmentation, per crop, in this order:

* horizontal flip with p = 0.5 (as DINOv2; a flipped chest X-ray is still a plausible chest
  X-ray for representation learning, though laterality is lost);
* mild brightness / contrast jitter with p = 0.8 (factors ``U(1 - b, 1 + b)``, default
  b = c = 0.2, half of DINOv2's 0.4; no saturation / hue on grayscale). Kept mild because
  global intensity carries signal in chest X-rays (exposure, age-related bone density) and
  the phantom study in ``notes/cpu-ssl-feasibility.md`` suggests heavy intensity jitter
  erases such cues;
* Gaussian blur, **milder on the teacher branch** as RAD-DINO says. DINOv2's config asks for
  blur p = 1.0 on global crop 1, 0.1 on global crop 2, 0.5 on local crops, but its
  ``GaussianBlur`` wrapper applies the blur with probability ``1 - p`` (a known bug; so global
  crop 1 is never blurred and global crop 2 almost always). Here the intended behaviour,
  softened for X-rays: global 1: p = 0.5 with a weak sigma ``U(0.1, 1.0)``; global 2: p = 0.1,
  sigma ``U(0.1, 2.0)``; locals: p = 0.5, sigma ``U(0.1, 2.0)``. Sigmas are in pixels of a
  224-pixel crop (DINOv2's setting) and scale with the output crop size;
* no solarisation by default (DINOv2 solarises global crop 2 with p = 0.2): inverting the bright
  half of the intensity range turns bone and mediastinum dark while the lungs stay dark too --
  an image no X-ray detector produces, and the inversion destroys the density ordering that
  findings such as effusion or consolidation are read from. ``solarize_p`` enables it (on the
  second global crop only, as DINOv2).

Everything is drawn from the ``torch.Generator`` passed in, so a seeded generator gives the same
views. Resizing uses ``torch.nn.functional.interpolate`` (bilinear, antialiased) on the crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from raddino_lib.config import Config

__all__ = ["CropBox", "MultiCropViews", "gaussian_blur"]

_REF_SIZE = 224.0  # DINOv2's blur sigmas are for 224-pixel crops


@dataclass(frozen=True)
class CropBox:
    """Where a crop came from: ``image[:, top:top+side, left:left+side]``, then maybe flipped."""

    top: int
    left: int
    side: int
    flipped: bool
    blurred: bool


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[C, H, W]`` with reflect padding (radius ``ceil(3 sigma)``)."""
    if sigma <= 0:
        return img
    radius = max(1, math.ceil(3.0 * sigma))
    radius = min(radius, img.shape[-1] - 1, img.shape[-2] - 1)
    if radius < 1:
        return img
    x = torch.arange(-radius, radius + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    c = img.shape[0]
    out = F.pad(img.unsqueeze(0), (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return out.squeeze(0)


class MultiCropViews:
    """Callable ``views(image [1, H, W], generator) -> {'global': [...], 'local': [...]}``.

    Args:
        global_crop_size: side ``G`` of the global crops.
        local_crop_size: side ``L`` of the local crops.
        n_local_crops: number of local crops (0 allowed).
        global_crop_scale / local_crop_scale: ``(min, max)`` crop side as a fraction of the
            image's shorter side.
        flip_p: horizontal flip probability.
        jitter_p, brightness, contrast: brightness / contrast jitter.
        blur_p: ``(global 1, global 2, local)`` blur probabilities.
        blur_sigma_global1 / blur_sigma: sigma ranges (pixels at 224) for global crop 1 / others.
        solarize_p: solarisation probability of global crop 2 (threshold 0.5).

    Output: ``'global'``: 2 tensors ``[1, G, G]``; ``'local'``: ``n_local_crops`` tensors
    ``[1, L, L]``; float32 in ``[0, 1]``. With ``return_boxes=True`` also ``'global_boxes'`` and
    ``'local_boxes'`` (lists of :class:`CropBox`).
    """

    def __init__(
        self,
        global_crop_size: int,
        local_crop_size: int,
        n_local_crops: int,
        global_crop_scale: tuple[float, float] = (0.5, 1.0),
        local_crop_scale: tuple[float, float] = (0.2, 0.5),
        flip_p: float = 0.5,
        jitter_p: float = 0.8,
        brightness: float = 0.2,
        contrast: float = 0.2,
        blur_p: tuple[float, float, float] = (0.5, 0.1, 0.5),
        blur_sigma_global1: tuple[float, float] = (0.1, 1.0),
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        solarize_p: float = 0.0,
    ) -> None:
        for name, sc in (
            ("global_crop_scale", global_crop_scale),
            ("local_crop_scale", local_crop_scale),
        ):
            if not 0.0 < sc[0] <= sc[1] <= 1.0:
                raise ValueError(f"{name} must satisfy 0 < min <= max <= 1, got {sc}")
        if global_crop_size < 1 or local_crop_size < 1 or n_local_crops < 0:
            raise ValueError(
                f"bad crop sizes/count: global {global_crop_size}, local {local_crop_size}, "
                f"n_local {n_local_crops}"
            )
        self.global_crop_size = global_crop_size
        self.local_crop_size = local_crop_size
        self.n_local_crops = n_local_crops
        self.global_crop_scale = tuple(global_crop_scale)
        self.local_crop_scale = tuple(local_crop_scale)
        self.flip_p = flip_p
        self.jitter_p = jitter_p
        self.brightness = brightness
        self.contrast = contrast
        self.blur_p = tuple(blur_p)
        self.blur_sigma_global1 = tuple(blur_sigma_global1)
        self.blur_sigma = tuple(blur_sigma)
        self.solarize_p = solarize_p

    @classmethod
    def from_config(cls, cfg: Config, **overrides: Any) -> MultiCropViews:
        """Crop sizes, count and scales from the config; augmentation strengths as defaults."""
        kw: dict[str, Any] = dict(
            global_crop_size=cfg.global_crop_size,
            local_crop_size=cfg.local_crop_size,
            n_local_crops=cfg.n_local_crops,
            global_crop_scale=cfg.global_crop_scale,
            local_crop_scale=cfg.local_crop_scale,
        )
        kw.update(overrides)
        return cls(**kw)

    # -- random helpers (all draws from ``g``) -------------------------------------------
    @staticmethod
    def _u(g: torch.Generator | None, lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=g))

    def _crop(
        self,
        img: torch.Tensor,
        scale: tuple[float, float],
        size: int,
        g: torch.Generator | None,
        blur_p: float,
        sigma_range: tuple[float, float],
        solarize_p: float,
    ) -> tuple[torch.Tensor, CropBox]:
        _, h, w = img.shape
        short = min(h, w)
        side = int(round(self._u(g, *scale) * short))
        side = min(max(side, 1), short)
        top = int(torch.randint(0, h - side + 1, (), generator=g))
        left = int(torch.randint(0, w - side + 1, (), generator=g))
        crop = img[:, top : top + side, left : left + side]
        if side != size:
            crop = F.interpolate(
                crop.unsqueeze(0),
                size=(size, size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            ).squeeze(0)
        else:
            crop = crop.clone()
        flipped = self._u(g) < self.flip_p
        if flipped:
            crop = crop.flip(-1)
        if self._u(g) < self.jitter_p:
            b = self._u(g, 1.0 - self.brightness, 1.0 + self.brightness)
            c = self._u(g, 1.0 - self.contrast, 1.0 + self.contrast)
            if self._u(g) < 0.5:  # torchvision ColorJitter applies them in random order
                crop = crop * b
                crop = (crop - crop.mean()) * c + crop.mean()
            else:
                crop = (crop - crop.mean()) * c + crop.mean()
                crop = crop * b
            crop = crop.clamp(0.0, 1.0)
        blurred = self._u(g) < blur_p
        if blurred:
            sigma = self._u(g, *sigma_range) * size / _REF_SIZE
            crop = gaussian_blur(crop, sigma)
        if solarize_p > 0 and self._u(g) < solarize_p:
            crop = torch.where(crop >= 0.5, 1.0 - crop, crop)
        return crop.contiguous(), CropBox(top, left, side, flipped, blurred)

    def __call__(
        self,
        image: torch.Tensor,
        generator: torch.Generator | None = None,
        return_boxes: bool = False,
    ) -> dict[str, list[Any]]:
        if image.ndim != 3 or image.shape[0] != 1:
            raise ValueError(f"expected a grayscale image [1, H, W], got {tuple(image.shape)}")
        img = image.float()
        g = generator
        gs, ls = self.global_crop_size, self.local_crop_size
        g1 = self._crop(
            img, self.global_crop_scale, gs, g, self.blur_p[0], self.blur_sigma_global1, 0.0
        )
        g2 = self._crop(
            img, self.global_crop_scale, gs, g, self.blur_p[1], self.blur_sigma, self.solarize_p
        )
        locs = [
            self._crop(img, self.local_crop_scale, ls, g, self.blur_p[2], self.blur_sigma, 0.0)
            for _ in range(self.n_local_crops)
        ]
        out: dict[str, list[Any]] = {
            "global": [g1[0], g2[0]],
            "local": [c for c, _ in locs],
        }
        if return_boxes:
            out["global_boxes"] = [g1[1], g2[1]]
            out["local_boxes"] = [b for _, b in locs]
        return out
