"""Rendering: thickness maps -> Beer-Lambert image -> acquisition effects, plus masks.

Every structure adds ``mu * thickness`` to an attenuation map ``A`` (S, S) evaluated in
patient coordinates (see :mod:`anatomy`) on the pixel grid of the *posed* image, inside
its own bounding box only. The detector sees ``I = exp(-A)`` plus scatter, Poisson-like
noise and blur; the result is log-transformed, windowed, gamma-corrected, collimated and
stamped with a side marker, in a style that depends on the cohort.

Masks (frontal views only) are computed from the same coordinate grid, so they are in the
geometry of the final image. Lateral views get no masks (``mask_path`` is empty).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from raddino_lib.data import schema
from raddino_lib.data.phantom.anatomy import Anatomy, Pose

F32 = np.float32
MU_SOFT = 2.0  # attenuation of the full soft-tissue path (soft_depth = 1)
LUNG_AIR = 1.45  # attenuation removed by fully aerated lung
BONE = 0.55  # attenuation of a rib at its centre (bone = 1)
N_TEX = 6  # lung-marking texture variants

# Acquisition style per cohort: photons per pixel (noise), scatter fraction, gamma,
# contrast (sigmoid gain), blur weight, unsharp gain, collimation outside value,
# collimation margin range, marker corner (row, col in {0, 1}), marker value, border prob.
ACQUISITION: dict[str, dict] = {
    "icu": dict(
        n0=900.0,
        scatter=0.55,
        gamma=1.15,
        gain=3.2,
        blur=0.22,
        sharpen=0.0,
        coll_value=0.92,
        coll=(0.0, 0.10),
        marker=(0, 0),
        marker_value=1.0,
        border=0.0,
    ),
    "inpatient": dict(
        n0=2500.0,
        scatter=0.40,
        gamma=0.95,
        gain=4.2,
        blur=0.15,
        sharpen=0.4,
        coll_value=0.0,
        coll=(0.0, 0.06),
        marker=(0, 1),
        marker_value=1.0,
        border=0.5,
    ),
    "outpatient": dict(
        n0=6000.0,
        scatter=0.30,
        gamma=0.85,
        gain=5.0,
        blur=0.10,
        sharpen=0.8,
        coll_value=0.0,
        coll=(0.02, 0.12),
        marker=(1, 1),
        marker_value=0.95,
        border=0.0,
    ),
    "screening": dict(
        n0=3000.0,
        scatter=0.35,
        gamma=1.0,
        gain=3.8,
        blur=0.18,
        sharpen=0.2,
        coll_value=1.0,
        coll=(0.0, 0.04),
        marker=(1, 0),
        marker_value=0.0,
        border=0.3,
    ),
}

# 5x3 block glyphs for the burned-in side marker.
GLYPHS: dict[str, np.ndarray] = {
    "L": np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 1]], dtype=bool),
    "R": np.array([[1, 1, 0], [1, 0, 1], [1, 1, 0], [1, 0, 1], [1, 0, 1]], dtype=bool),
}


# ----------------------------------------------------------------------------- textures
@dataclass
class Textures:
    """Precomputed lung textures in lung-relative coordinates (q, v) in [0, 1]^2.

    vessels: (N_TEX, R, R) float32 branching markings from the hilum, fading laterally.
    reticular: (R, R) float32 net-like pattern (fibrosis).
    mottle: (R, R) float32 smooth noise in [0, 1] (irregular opacity edges).
    """

    res: int
    vessels: np.ndarray
    reticular: np.ndarray
    mottle: np.ndarray


_TEXTURE_CACHE: dict[int, Textures] = {}


def get_textures(size: int) -> Textures:
    """Textures for rendering at ``size`` px (cached per process, fixed seed)."""
    res = 256 if size <= 256 else 512
    if res not in _TEXTURE_CACHE:
        _TEXTURE_CACHE[res] = _build_textures(res)
    return _TEXTURE_CACHE[res]


def _build_textures(res: int) -> Textures:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(20240601)
    c = (np.arange(res, dtype=F32) + 0.5) / res
    vessels = np.zeros((N_TEX, res, res), F32)
    for k in range(N_TEX):
        segs: list[tuple[float, float, float, float, float]] = []
        stack = []
        for ang in np.linspace(-1.35, 1.35, 7) + rng.normal(0, 0.12, 7):
            stack.append((0.06, 0.52 + 0.08 * math.sin(ang), ang, 0.014, 0))
        while stack:
            x, y, ang, w, depth = stack.pop()
            length = rng.uniform(0.08, 0.15) * (0.85**depth)
            x2, y2 = x + length * math.cos(ang), y + length * math.sin(ang) * 1.2
            segs.append((x, y, x2, y2, w))
            if depth < 5 and 0.0 < x2 < 0.92 and 0.02 < y2 < 0.98:
                for da in (-0.35, 0.35):
                    stack.append((x2, y2, ang + da + rng.normal(0, 0.15), w * 0.72, depth + 1))
        img = vessels[k]
        for x1, y1, x2, y2, w in segs:
            i0, i1 = (
                int(max(min(y1, y2) - 2 * w, 0) * res),
                int(min(max(y1, y2) + 2 * w, 1) * res) + 1,
            )
            j0, j1 = (
                int(max(min(x1, x2) - 2 * w, 0) * res),
                int(min(max(x1, x2) + 2 * w, 1) * res) + 1,
            )
            if i1 <= i0 or j1 <= j0:
                continue
            yy, xx = c[i0:i1, None], c[None, j0:j1]
            dx, dy = x2 - x1, y2 - y1
            t = _clip(((xx - x1) * dx + (yy - y1) * dy) / (dx * dx + dy * dy + 1e-12), 0, 1)
            d2 = (xx - x1 - t * dx) ** 2 + (yy - y1 - t * dy) ** 2
            prof = np.sqrt(np.maximum(1.0 - d2 / (w * w), 0)) * (w / 0.014) ** 0.5
            np.maximum(img[i0:i1, j0:j1], prof, out=img[i0:i1, j0:j1])
        img *= _clip(1.15 - c[None, :] * 1.1, 0.15, 1.0)
    n = gaussian_filter(rng.standard_normal((res, res)).astype(F32), res / 90, mode="wrap")
    n2 = gaussian_filter(rng.standard_normal((res, res)).astype(F32), res / 45, mode="wrap")
    reticular = np.exp(-((n / (n.std() * 0.18)) ** 2)) + 0.7 * np.exp(
        -((n2 / (n2.std() * 0.2)) ** 2)
    )
    m = gaussian_filter(rng.standard_normal((res, res)).astype(F32), res / 30, mode="wrap")
    m = (m - m.min()) / (m.max() - m.min())
    return Textures(res, vessels, (reticular / reticular.max()).astype(F32), m.astype(F32))


# ------------------------------------------------------------------------------ canvas
class Canvas:
    """Pixel grid of one image with its patient coordinates.

    x, y: (S, S) float32 patient coordinates of every pixel centre.
    A: (S, S) float32 attenuation accumulator.
    """

    def __init__(self, size: int, pose: Pose) -> None:
        self.size = size
        self.pose = pose
        c = (np.arange(size, dtype=np.float64) + 0.5) * (2.0 / size) - 1.0
        ca, sa = math.cos(pose.angle), math.sin(pose.angle)
        X = (c[None, :] - pose.tx) / pose.scale
        Y = (c[:, None] - pose.ty) / pose.scale
        self.x = (ca * X + sa * Y).astype(F32)
        self.y = (-sa * X + ca * Y).astype(F32)
        self.px = 2.0 / (size * pose.scale)  # patient units per pixel
        self.A = np.zeros((size, size), F32)
        self._rot = (math.cos(pose.angle), math.sin(pose.angle), pose.scale)

    def box(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice] | None:
        """Pixel slices covering the patient-space box [x0, x1] x [y0, y1] (None if off-image)."""
        p = self.pose
        ca, sa, sc = self._rot
        X = [sc * (ca * xx - sa * yy) + p.tx for xx, yy in ((x0, y0), (x1, y0), (x0, y1), (x1, y1))]
        Y = [sc * (sa * xx + ca * yy) + p.ty for xx, yy in ((x0, y0), (x1, y0), (x0, y1), (x1, y1))]
        h = self.size / 2
        S = self.size
        c0 = max(int(math.floor((min(X) + 1) * h)) - 1, 0)
        c1 = min(int(math.ceil((max(X) + 1) * h)) + 1, S)
        r0 = max(int(math.floor((min(Y) + 1) * h)) - 1, 0)
        r1 = min(int(math.ceil((max(Y) + 1) * h)) + 1, S)
        if c1 <= c0 or r1 <= r0:
            return None
        return (slice(r0, r1), slice(c0, c1))

    def to_pixel(self, x: float, y: float) -> tuple[float, float]:
        """Patient point -> (row, col) in pixels."""
        p = self.pose
        ca, sa = math.cos(p.angle), math.sin(p.angle)
        X = p.scale * (ca * x - sa * y) + p.tx
        Y = p.scale * (sa * x + ca * y) + p.ty
        return (Y + 1) * self.size / 2, (X + 1) * self.size / 2


def _clip(a, lo, hi):
    """np.clip without the Python-level wrapper overhead (hot path on small arrays)."""
    return np.minimum(np.maximum(a, lo), hi)


def _sqrt_pos(a: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(a, 0.0))


def polyline_distance(
    x: np.ndarray, y: np.ndarray, pts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distance from every (x, y) to a polyline and the arc length of the nearest point.

    x, y: (h, w); pts: (K, 2). Returns dist (h, w), arclen (h, w).
    """
    best = np.full(x.shape, np.inf, F32)
    arc = np.zeros(x.shape, F32)
    acc = 0.0
    for (x1, y1), (x2, y2) in zip(pts[:-1], pts[1:], strict=True):
        dx, dy = x2 - x1, y2 - y1
        L2 = dx * dx + dy * dy + 1e-12
        t = _clip(((x - x1) * dx + (y - y1) * dy) / L2, 0.0, 1.0)
        d = np.hypot(x - x1 - t * dx, y - y1 - t * dy)
        better = d < best
        best = np.where(better, d, best)
        arc = np.where(better, acc + t * math.sqrt(L2), arc)
        acc += math.sqrt(L2)
    return best, arc


def bezier(p0, p1, p2, n: int = 14) -> np.ndarray:
    """Quadratic Bezier through control points -> (n, 2)."""
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t**2 * np.asarray(p2)


def draw_tube(
    cv: Canvas,
    pts: np.ndarray,
    radius: float,
    wall: float,
    stripe: float,
    hole: tuple[float, float] | None = None,
    mask: np.ndarray | None = None,
) -> None:
    """Add a tube along a polyline: faint wall, radio-opaque centre stripe, optional side hole.

    hole: (arc start, arc length) where the stripe is interrupted. mask: (S, S) bool to fill.
    """
    m = radius + 2.5 * cv.px
    sl = cv.box(pts[:, 0].min() - m, pts[:, 0].max() + m, pts[:, 1].min() - m, pts[:, 1].max() + m)
    if sl is None:
        return
    d, arc = polyline_distance(cv.x[sl], cv.y[sl], pts)
    sw = max(radius * 0.35, 0.0022)
    val = wall * _sqrt_pos(1.0 - (d / radius) ** 2) + stripe * _clip(1.0 - d / sw, 0.0, 1.0)
    if hole is not None:
        gap = (arc > hole[0]) & (arc < hole[0] + hole[1])
        val = np.where(gap, val * 0.25, val)
    cv.A[sl] += val.astype(F32)
    if mask is not None:
        mask[sl] |= d < radius + 0.5 * cv.px


# --------------------------------------------------------------------------- geometry
@dataclass
class Frontal:
    """Derived per-image geometry of a frontal view (patient coordinates)."""

    anat: Anatomy
    view: str
    dome: dict[int, float]
    y_apex: float
    hw: float
    heart_a: float  # horizontal half-extent of the (tilted) heart
    heart_b: float  # vertical half-extent
    heart_x: float
    heart_y: float
    heart_axes: tuple[float, float, float]  # (major, minor, tilt) of the tilted ellipse
    extra: dict = field(default_factory=dict)

    def hw_of(self, y: np.ndarray) -> np.ndarray:
        """Inner thoracic half-width at height y."""
        yw = 0.22
        r = _clip((yw - y) / (yw - self.y_apex + 0.03), 0.0, 1.0)
        return (self.hw * _sqrt_pos(1.0 - r**2.4)).astype(F32)

    def hw_at(self, y: float) -> float:
        """Scalar version of :meth:`hw_of`."""
        r = min(max((0.22 - y) / (0.22 - self.y_apex + 0.03), 0.0), 1.0)
        return self.hw * math.sqrt(max(1.0 - r**2.4, 0.0))

    def med_of(self, y: np.ndarray, side: int) -> np.ndarray:
        """Medial lung boundary (mediastinum half-width) at height y on a side."""
        a = self.anat
        m = a.med_hw + 0.02 * _clip((y + 0.3) / 0.3, 0, 1)
        if side > 0:
            m = m + a.knob * np.exp(-(((y - a.knob_y) / 0.065) ** 2))
        else:
            m = m + 0.012 * np.exp(-(((y + 0.35) / 0.12) ** 2))
        return m.astype(F32)

    def diaphragm(self, x: np.ndarray, side: int) -> np.ndarray:
        """Diaphragm height under x (y of the dome surface)."""
        xp = 0.42 * self.hw
        return (self.dome[side] + 0.36 * ((np.abs(x) - xp) / self.hw) ** 2).astype(F32)

    def lung_point(self, side: int, q: float, v: float) -> tuple[float, float]:
        """Lung-relative (q: medial->lateral, v: apex->base) -> patient (x, y)."""
        y = self.y_apex + 0.06 + v * (self.dome[side] - self.y_apex - 0.02)
        yy = np.array([y], F32)
        m = float(self.med_of(yy, side)[0])
        w = float(self.hw_of(yy)[0])
        return side * (m + q * max(w - m, 0.02)), y


def frontal_geometry(anat: Anatomy, pose: Pose, view: str) -> Frontal:
    """Geometry after inspiration and projection (AP magnifies the heart ~17%)."""
    mag = 1.17 if view == "AP" else 1.0
    dome = {-1: anat.dome_right + pose.inspiration, 1: anat.dome_left + pose.inspiration}
    e = anat.ctr * anat.thorax_hw * mag  # horizontal half-extent
    k = 1.0 / anat.heart_aspect  # major / minor
    phi = 0.55 + 0.25 * (anat.heart_aspect - 0.79)
    minor = e / math.sqrt(k * k * math.cos(phi) ** 2 + math.sin(phi) ** 2)
    major = k * minor
    ev = math.sqrt(major**2 * math.sin(phi) ** 2 + minor**2 * math.cos(phi) ** 2)
    hy = dome[1] - 0.55 * ev + 0.3 * (anat.heart_y + 0.16)
    return Frontal(
        anat, view, dome, anat.y_apex, anat.thorax_hw, e, ev, e / 3.0, hy, (major, minor, phi)
    )


# ----------------------------------------------------------------------- frontal parts
def render_body(cv: Canvas, g: Frontal) -> None:
    """Soft tissue: torso, neck, shoulders and arms; fat layer from BMI; breasts."""
    a = g.anat
    y, x = cv.y, cv.x
    torso = g.hw + 0.07 + a.fat
    neck = 0.16 + 0.3 * a.fat
    ysh = g.y_apex - 0.12 + a.shoulder
    wb = neck + (torso + 0.06 - neck) / (1.0 + np.exp(-(y - ysh) / 0.045))
    r = x / wb
    t = _sqrt_pos(1.0 - r * r)
    cv.A += (MU_SOFT * a.soft_depth) * t * (0.82 + 0.18 * _clip(r * r * 2, 0, 1))
    cv.A += (0.8 * MU_SOFT * a.fat) * _sqrt_pos(
        1.0 - ((np.abs(x) - torso) / (0.35 * a.fat + 0.03)) ** 2
    )
    # Arms / humeral soft tissue at the top corners.
    for s in (-1, 1):
        cx, cy = s * (torso + 0.14), g.y_apex + 0.05
        sl = cv.box(cx - 0.2, cx + 0.2, cy - 0.5, cy + 0.6)
        if sl is not None:
            rr = ((cv.x[sl] - cx) / 0.16) ** 2 + ((cv.y[sl] - cy - 0.1) / 0.55) ** 2
            cv.A[sl] += (1.3 * a.soft_depth) * _sqrt_pos(1.0 - rr)
    if a.breast > 0:
        for s in (-1, 1):
            cx, cy = s * 0.55 * g.hw, g.dome[s] - 0.08
            rx, ry = a.breast * 1.4, a.breast
            sl = cv.box(cx - rx, cx + rx, cy - ry, cy + ry)
            if sl is not None:
                rr = ((cv.x[sl] - cx) / rx) ** 2 + ((cv.y[sl] - cy) / ry) ** 2
                cv.A[sl] += (
                    0.3 * _sqrt_pos(1.0 - rr) * _clip((cv.y[sl] - cy + ry * 0.6) / 0.15, 0, 1)
                )


def render_lungs(cv: Canvas, g: Frontal, tex: Textures, fx: dict, masks: dict | None) -> None:
    """Lungs (air), heart silhouette, vessels and the lung findings; fills lung/heart/ptx masks."""
    a = g.anat
    # Heart mask / silhouette.
    hb, hy = g.heart_b, g.heart_y
    for s in (-1, 1):
        xlo, xhi = (-g.hw - 0.05, -0.0) if s < 0 else (0.0, g.hw + 0.05)
        ylo, yhi = g.y_apex - 0.02, g.dome[s] + 0.14
        sl = cv.box(xlo, xhi, ylo, yhi)
        if sl is None:
            continue
        x, y = cv.x[sl], cv.y[sl]
        ax = np.abs(x)
        hwy = g.hw_of(y)
        m = g.med_of(y, s)
        dia = g.diaphragm(x, s)
        side_ok = (x * s) > 0
        region = side_ok & (ax > m) & (ax < hwy) & (y < dia) & (y > g.y_apex)
        u = (ax - m * 0.7) / np.maximum(hwy - m * 0.7, 0.02)
        air = _sqrt_pos(1.0 - u * u)
        air *= _clip(
            np.minimum(
                np.minimum((dia - y) * (1 / 0.015), (hwy - ax) * 50.0), (ax - m) * (1 / 0.006)
            ),
            0,
            1,
        )
        air *= side_ok
        # Heart: removes the air in front, sharp silhouette (computed in its own box).
        hsub = _sub(sl, cv.box(g.heart_x - g.heart_a, g.heart_x + g.heart_a, hy - hb, hy + hb))
        rh = None
        if hsub is not None:
            rh = _heart_r2(g, x[hsub], y[hsub])
            air[hsub] *= 1.0 - 0.85 * _clip((1.0 - rh) * (1 / 0.06), 0.0, 1.0)
        q = _clip((ax - m) / np.maximum(hwy - m, 0.02), 0, 0.999)
        v = _clip((y - g.y_apex) / (g.dome[s] - g.y_apex), 0, 0.999)
        R = tex.res
        qi = (q * R).astype(np.int32)
        vi = (v * R).astype(np.int32)
        vessels = tex.vessels[(a.texture + (s > 0)) % N_TEX][vi, qi]
        fill = np.zeros_like(air)
        extra_air = np.zeros_like(air)
        vessel_keep = np.ones_like(air)
        lung_ctx = dict(
            x=x, y=y, q=q, v=v, qi=qi, vi=vi, side=s, region=region, hwy=hwy, m=m, dia=dia
        )
        _hila(g, lung_ctx, fill)
        for name in (
            "pleural_effusion",
            "lung_opacity",
            "pneumonia",
            "pulmonary_fibrosis",
            "tuberculosis",
            "pleural_thickening",
        ):
            if name in fx:
                _FILLS[name](g, lung_ctx, fx[name], fill, tex, vessel_keep)
        ptx_region = None
        if "pneumothorax" in fx and fx["pneumothorax"]["side"] == s:
            ptx_region = _pneumothorax(cv, g, lung_ctx, fx["pneumothorax"], extra_air, vessel_keep)
        fill = _clip(fill, -0.4, 0.97)
        air_eff = air * (1.0 - fill) + extra_air * air
        A = cv.A[sl]
        A -= (LUNG_AIR * air_eff).astype(F32)
        A += (0.3 * vessels * vessel_keep * air * (1.0 - _clip(fill, 0, 1))).astype(F32)
        if ptx_region is not None:
            A += ptx_region[1].astype(F32)
        if masks is not None:
            lung_m = region.copy()
            if rh is not None:
                heart_m = rh <= 1.0
                lung_m[hsub] &= ~heart_m
                hm = masks["heart"][sl][hsub]
                hm |= heart_m & (y[hsub] < g.dome[1] + 0.05) & side_ok[hsub]
            key = "lung_right" if s < 0 else "lung_left"
            masks[key][sl] |= lung_m
            thor = side_ok & (ax < hwy) & (y > g.y_apex) & (y < g.dome[s] + 0.36 * (0.58) ** 2)
            masks["thorax"][sl] |= thor
            if ptx_region is not None:
                masks["pneumothorax"][sl] |= ptx_region[0] & region


def _sub(sl: tuple[slice, slice], inner: tuple[slice, slice] | None) -> tuple[slice, slice] | None:
    """``inner`` (absolute pixel slices) relative to ``sl``, intersected; None if empty."""
    if inner is None:
        return None
    out = []
    for a, b in zip(sl, inner, strict=True):
        lo, hi = max(a.start, b.start), min(a.stop, b.stop)
        if hi <= lo:
            return None
        out.append(slice(lo - a.start, hi - a.start))
    return (out[0], out[1])


def _heart_r2(g: Frontal, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Normalised squared radius of the tilted heart ellipse (<= 1 inside)."""
    major, minor, phi = g.heart_axes
    c, s = math.cos(phi), math.sin(phi)
    dx, dy = x - g.heart_x, y - g.heart_y
    return ((c * dx + s * dy) / major) ** 2 + ((-s * dx + c * dy) / minor) ** 2


def _hila(g: Frontal, c: dict, fill: np.ndarray) -> None:
    x0, y0 = g.lung_point(c["side"], 0.05, 0.5)
    r2 = ((c["x"] - x0) / 0.09) ** 2 + ((c["y"] - y0) / 0.12) ** 2
    fill += 0.35 * np.exp(-r2 * 2.0)


def _blob_fill(c: dict, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    r2 = ((c["x"] - cx) / rx) ** 2 + ((c["y"] - cy) / ry) ** 2
    return _clip(1.0 - r2, 0.0, 1.0) ** 0.7


def _fill_effusion(
    g: Frontal, c: dict, p: dict, fill: np.ndarray, tex: Textures, vk: np.ndarray
) -> None:
    if c["side"] not in p["sides"]:
        return
    h = p["height"]
    q = c["q"]
    level = c["dia"] - h - p["rise"] * q**2
    level = np.minimum(level, g.dome[c["side"]] + 0.1 - h * 0.6 - p["rise"] * q**2)
    f = _clip((c["y"] - level) / 0.05, 0.0, 1.0)
    if g.view == "AP":
        f = np.maximum(f * 0.8, 0.35 * _clip((c["v"] - 0.3) / 0.7, 0, 1))
    fill += 0.95 * f


def _fill_opacity(
    g: Frontal, c: dict, p: dict, fill: np.ndarray, tex: Textures, vk: np.ndarray
) -> None:
    mot = tex.mottle[c["vi"], c["qi"]]
    for side, q0, v0, rx, ry, amp in p["blobs"]:
        if side != c["side"]:
            continue
        cx, cy = g.lung_point(side, q0, v0)
        fill += amp * _blob_fill(c, cx, cy, rx, ry) * (0.55 + 0.9 * mot)


def _fill_pneumonia(
    g: Frontal, c: dict, p: dict, fill: np.ndarray, tex: Textures, vk: np.ndarray
) -> None:
    if p["side"] != c["side"]:
        return
    cx, cy = g.lung_point(p["side"], p["q"], p["v"])
    b = _blob_fill(c, cx, cy, p["rx"], p["ry"])
    b = np.minimum(b * 2.2, 1.0) * (c["y"] > cy - p["ry"] * 0.45 + 0.05 * (c["q"] - 0.5))
    mot = tex.mottle[c["vi"], c["qi"]]
    vt = tex.vessels[p["tex"]][c["vi"], c["qi"]]
    f = p["amp"] * b * (0.8 + 0.3 * mot) * (1.0 - 0.7 * _clip(vt * 2, 0, 1))  # air bronchograms
    fill += f
    vk *= 1.0 - _clip(b, 0, 1)


def _fill_fibrosis(
    g: Frontal, c: dict, p: dict, fill: np.ndarray, tex: Textures, vk: np.ndarray
) -> None:
    R = tex.res
    ret = tex.reticular[(c["vi"] + p["off"]) % R, (c["qi"] + p["off"] * 3) % R]
    w = _clip((c["v"] - 0.35) / 0.45, 0, 1) * _clip((c["q"] - 0.3) / 0.5, 0, 1)
    fill += p["amp"] * ret * w


def _fill_tb(g: Frontal, c: dict, p: dict, fill: np.ndarray, tex: Textures, vk: np.ndarray) -> None:
    mot = tex.mottle[c["vi"], c["qi"]]
    for side, q0, v0, r, amp in p["blobs"]:
        if side != c["side"]:
            continue
        cx, cy = g.lung_point(side, q0, v0)
        fill += amp * _blob_fill(c, cx, cy, r * 1.3, r) * (0.4 + 1.2 * mot)
    for side, q0, v0, r in p["cavities"]:
        if side != c["side"]:
            continue
        cx, cy = g.lung_point(side, q0, v0)
        d = np.hypot(c["x"] - cx, c["y"] - cy)
        ring = _clip(1.0 - np.abs(d - r) / (0.35 * r), 0, 1)
        fill += 0.8 * ring - 0.35 * (d < r * 0.8)
    for side, q0, v0 in p["scars"]:
        if side != c["side"]:
            continue
        x1, y1 = g.lung_point(side, q0, v0)
        x2, y2 = g.lung_point(side, 0.1, 0.45)
        d, _ = polyline_distance(c["x"], c["y"], np.array([[x1, y1], [x2, y2]]))
        fill += 0.5 * _clip(1.0 - d / 0.008, 0, 1)


def _fill_thickening(
    g: Frontal, c: dict, p: dict, fill: np.ndarray, tex: Textures, vk: np.ndarray
) -> None:
    if c["side"] != p["side"]:
        return
    dist_lat = c["hwy"] - np.abs(c["x"])
    t = p["thick"]
    if p["apical"]:
        dist = c["y"] - (g.y_apex + 0.02)
        dist = np.minimum(dist, dist_lat + (c["v"] > 0.25) * 1.0)
        w = 1.0
    else:
        dist = dist_lat
        w = _clip(1.0 - np.abs(c["v"] - p["v"]) / p["extent"], 0, 1)
    fill += 0.9 * w * _clip((t - dist) / 0.006, 0, 1)


_FILLS = {
    "pleural_effusion": _fill_effusion,
    "lung_opacity": _fill_opacity,
    "pneumonia": _fill_pneumonia,
    "pulmonary_fibrosis": _fill_fibrosis,
    "tuberculosis": _fill_tb,
    "pleural_thickening": _fill_thickening,
}


def _pneumothorax(cv: Canvas, g: Frontal, c: dict, p: dict, extra_air: np.ndarray, vk: np.ndarray):
    """Pleural air: no markings, thin visceral pleural line. Returns (region, line attenuation)."""
    v = c["v"]
    dist_lat = c["hwy"] - np.abs(c["x"])
    dist_top = c["y"] - g.y_apex
    if p["supine"]:
        taper = _clip((v - 0.25) / 0.55, 0, 1) ** 0.7
        dist = dist_lat
    else:
        taper = _clip(1.0 - v / 0.85, 0, 1) ** 0.6
        dist = np.minimum(dist_lat, dist_top * 1.3)
    depth = p["depth"] * taper
    region = (dist < depth) & c["region"]
    vk *= 1.0 - region
    extra_air += 0.12 * region
    line = _clip(1.0 - np.abs(dist - depth) / p["line"], 0, 1) * (depth > 0.01) * c["region"]
    return region, 0.22 * line


def render_ribs(cv: Canvas, g: Frontal, fx: dict, masks: dict | None) -> None:
    """20 posterior ribs (masked), anterior ribs and costal cartilage calcification."""
    a = g.anat
    fr = fx.get("rib_fracture")
    y_first = g.y_apex + 0.07
    bone = BONE * a.bone
    for s in (-1, 1):
        base = (a.dome_left if s > 0 else a.dome_right) + 0.10
        pitch = (base - y_first) / 9.0
        for k in range(1, 11):
            y0 = y_first + (k - 1) * pitch
            drop = a.rib_drop * (1.6 if k <= 2 else 1.45)
            x0 = 0.065
            x1 = g.hw_at(y0 + drop) + 0.035
            x1 = max(x1, x0 + 0.12)
            r = a.rib_r * (0.85 + 0.03 * k)
            sl = cv.box(
                s * x0 if s > 0 else -x1 - 0.02,
                x1 + 0.02 if s > 0 else -x0,
                y0 - 0.06,
                y0 + drop + 0.08,
            )
            if sl is None:
                continue
            x, y = cv.x[sl], cv.y[sl]
            L = x1 - x0
            u = x * (s / L) - x0 / L
            uc = _clip(u, 0.0, 1.0)
            u2 = uc * uc
            yc = y0 - 0.16 * uc * (1.0 - uc) + drop * u2 * uc
            slope = (drop * 3.0 * u2 - 0.16 * (1.0 - 2.0 * uc)) / L
            frac = fr is not None and fr["side"] == s and fr["rib"] == k
            if frac:
                yc = yc + fr["step"] * (uc > fr["u"])
            d = np.abs(y - yc) / np.sqrt(1.0 + slope * slope)
            rr = r + (0.25 * r) * uc
            dn = d / rr
            d2 = dn * dn
            prof = _sqrt_pos(1.0 - d2) - (0.72 * 0.78) * _sqrt_pos(1.0 - d2 * (1 / 0.78**2))
            taper = _clip(np.minimum(u * (1 / 0.06), (1.0 - u) * 20.0), 0, 1)
            if frac:
                taper = taper * _clip(np.abs(u - fr["u"]) * L / fr["gap"] - 0.5, 0, 1)
            prof *= taper
            prof *= bone
            cv.A[sl] += prof
            if masks is not None:
                masks[f"rib_{'R' if s < 0 else 'L'}{k}"][sl] |= (dn < 1.0) & (u >= 0.0) & (u <= 1.0)
            # Anterior rib: from the lateral end, sloping down medially (fainter, no mask).
            if k <= 6:
                ya0 = y0 + drop + 0.02
                xa1 = 0.24 + 0.01 * k
                sla = cv.box(
                    s * xa1 if s > 0 else -x1, x1 if s > 0 else -xa1, ya0 - 0.04, ya0 + 0.34
                )
                if sla is None:
                    continue
                xa, ya = cv.x[sla], cv.y[sla]
                ua = (x1 - xa * s) * (1.0 / (x1 - xa1))
                ok = (ua > 0) & (ua < 1)
                yca = ya0 + 0.22 * ua + 0.05 * ua * ua
                da = (ya - yca) * (0.9 / (r * 0.95))
                pa = _sqrt_pos(1.0 - da * da)
                pa *= ok
                pa *= bone * 0.35
                cv.A[sla] += pa
                if a.calcification > 0.25 and k >= 3:
                    # Costal cartilage: medial continuation, calcified with age.
                    xc0 = 0.1
                    slc = cv.box(
                        s * xc0 if s > 0 else -xa1, xa1 if s > 0 else -xc0, ya0 + 0.2, ya0 + 0.4
                    )
                    if slc is not None:
                        xc, yc2 = cv.x[slc], cv.y[slc]
                        uc2 = _clip((xa1 - xc * s) / (xa1 - xc0), 0, 1)
                        ycc = ya0 + 0.27 + 0.06 * uc2
                        dc = np.abs(yc2 - ycc)
                        speck = np.cos(xc * 180.0 + k) * np.cos(yc2 * 150.0) > 0.3
                        okc = ((xc * s) > xc0) & ((xc * s) < xa1)
                        cv.A[slc] += (0.5 * a.calcification * speck * okc * (dc < r * 0.66)).astype(
                            F32
                        )


def render_spine_etc(cv: Canvas, g: Frontal) -> None:
    """Spine, trachea, clavicles, scapulae and humeral heads."""
    a = g.anat
    bone = BONE * a.bone
    # Spine.
    sl = cv.box(-0.1, 0.1, -1.6, 1.6)
    if sl is not None:
        x, y = cv.x[sl], cv.y[sl]
        w = 0.052 + 0.006 * (y + 1.0)
        vb = _sqrt_pos(1.0 - (x / w) ** 2)
        ph = np.cos(2 * np.pi * (y - a.heart_y) / 0.105)
        mod = 0.62 + 0.38 * np.tanh(4.0 * (ph + 0.55))
        ped = np.exp(-(((np.abs(x) - 0.042) / 0.011) ** 2)) * (ph > 0.4)
        spinous = np.exp(-((x / 0.01) ** 2)) * (
            np.cos(2 * np.pi * (y - a.heart_y - 0.05) / 0.105) > 0.6
        )
        cv.A[sl] += (bone * (0.5 * vb * mod + 0.25 * ped + 0.15 * spinous)).astype(F32)
    # Trachea and main bronchi (air).
    carina = g.y_apex + 0.42
    sl = cv.box(-0.2, 0.2, -1.6, carina + 0.15)
    if sl is not None:
        x, y = cv.x[sl], cv.y[sl]
        xt = -0.012 * _clip((y - g.y_apex) / (carina - g.y_apex), 0, 1)
        d = np.abs(x - xt) + 10.0 * np.maximum(y - carina, 0)
        dy = y - carina
        db = np.where(x > 0, np.abs(dy - 0.9 * x), np.abs(dy + 0.85 * x)) + 10.0 * np.maximum(
            -dy, 0
        )
        tr = _sqrt_pos(1.0 - (d / 0.03) ** 2) + 0.7 * _sqrt_pos(1.0 - (db / 0.02) ** 2) * (
            np.abs(x) < 0.1
        )
        cv.A[sl] -= (0.45 * np.minimum(tr, 1.0)).astype(F32)
    # Clavicles.
    lordotic = -0.05 if g.view == "AP" else 0.0
    for s in (-1, 1):
        x0c, x1c = 0.06, 0.58 * g.hw / 0.66
        yb = g.y_apex + 0.15 + lordotic
        sl = cv.box(
            s * x0c if s > 0 else -x1c - 0.05, x1c + 0.05 if s > 0 else -x0c, yb - 0.2, yb + 0.06
        )
        if sl is not None:
            x, y = cv.x[sl], cv.y[sl]
            u = (x * s - x0c) / (x1c - x0c)
            uc = _clip(u, 0, 1)
            yc = yb - 0.11 * uc + 0.025 * np.sin(2 * np.pi * uc)
            d = np.abs(y - yc)
            r = 0.022 * (1.0 + 0.3 * (uc < 0.1)) * (1.0 - 0.2 * uc)
            prof = (_sqrt_pos(r * r - d * d) - 0.6 * _sqrt_pos((0.75 * r) ** 2 - d * d)) / r
            cv.A[sl] += (bone * 1.5 * prof * ((u > 0) & (u < 1))).astype(F32)
        # Scapula: medial border over the lungs on AP, lateral on PA.
        mx = g.hw * (0.62 if g.view == "AP" else 0.93)
        G = (s * (g.hw + 0.09), g.y_apex + 0.12)
        Sm = (s * mx, g.y_apex + 0.05)
        In = (s * (mx + 0.08), g.y_apex + 0.62)
        xs = [G[0], Sm[0], In[0]]
        ys = [G[1], Sm[1], In[1]]
        sl = cv.box(min(xs), max(xs), min(ys), max(ys))
        if sl is not None:
            x, y = cv.x[sl], cv.y[sl]
            dmin = None
            pts = [G, Sm, In]
            for i in range(3):
                (x1, y1), (x2, y2) = pts[i], pts[(i + 1) % 3]
                nx, ny = y2 - y1, -(x2 - x1)
                nn = math.hypot(nx, ny)
                cx3, cy3 = pts[(i + 2) % 3]
                sign = 1.0 if (cx3 - x1) * nx + (cy3 - y1) * ny > 0 else -1.0
                di = sign * ((x - x1) * nx + (y - y1) * ny) / nn
                dmin = di if dmin is None else np.minimum(dmin, di)
            plate = _clip(dmin / 0.012, 0, 1)
            rim = np.exp(-(((dmin - 0.012) / 0.008) ** 2))
            cv.A[sl] += (bone * (0.3 * plate + 0.4 * rim) * (dmin > 0)).astype(F32)
        # Humeral head.
        hxh, hyh, hr = s * (g.hw + 0.2), g.y_apex + 0.06 + a.shoulder, 0.13
        sl = cv.box(hxh - hr, hxh + hr, hyh - hr, hyh + hr)
        if sl is not None:
            rr = ((cv.x[sl] - hxh) ** 2 + (cv.y[sl] - hyh) ** 2) / (hr * hr)
            cv.A[sl] += (bone * 1.1 * _sqrt_pos(1.0 - rr)).astype(F32)


def render_nodule(cv: Canvas, g: Frontal, p: dict) -> None:
    """Small round opacity (physical radius ~2-4 mm to 1 cm)."""
    cx, cy = g.lung_point(p["side"], p["q"], p["v"])
    r = p["r"]
    sl = cv.box(cx - r, cx + r, cy - r, cy + r)
    if sl is None:
        return
    rr = ((cv.x[sl] - cx) ** 2 + (cv.y[sl] - cy) ** 2) / (r * r)
    cv.A[sl] += (p["amp"] * _sqrt_pos(1.0 - rr)).astype(F32)


def render_devices(cv: Canvas, g: Frontal, fx: dict, masks: dict | None) -> None:
    """Chest tube (masked) and other support devices."""
    if "chest_tube" in fx:
        p = fx["chest_tube"]
        s = p["side"]
        ex, ey = g.lung_point(s, 1.0, p["entry_v"])
        ex = s * (abs(ex) + 0.05)
        tx, ty = g.lung_point(s, p["tip_q"], 0.08)
        mid = (s * (abs(ex) - 0.05), ty + 0.55 * (ey - ty))
        inner = bezier((ex, ey), mid, (tx, ty), 9)
        outer = np.array([[s * (abs(ex) + 0.22), ey + 0.18], [s * (abs(ex) + 0.08), ey + 0.05]])
        pts = np.concatenate([outer, inner], axis=0)
        draw_tube(
            cv,
            pts,
            p["radius"],
            0.10,
            0.42,
            hole=(p["hole"], 0.025),
            mask=None if masks is None else masks["chest_tube"],
        )
    dev = fx.get("support_devices", {})
    if dev.get("ett"):
        carina = g.y_apex + 0.42
        pts = np.array([[0.0, -1.6], [0.0, g.y_apex - 0.2], [-0.005, carina - 0.08]])
        draw_tube(cv, pts, 0.014, 0.12, 0.4)
    if dev.get("ng"):
        pts = bezier((0.01, -1.6), (0.0, 0.0), (0.16, g.dome[1] + 0.2), 7)
        draw_tube(cv, pts, 0.007, 0.08, 0.4)
    if dev.get("line"):
        s = dev["line_side"]
        pts = bezier(
            (s * g.hw * 0.75, g.y_apex + 0.1),
            (s * 0.05, g.y_apex + 0.12),
            (-0.07, g.y_apex + 0.5),
            8,
        )
        draw_tube(cv, pts, 0.005, 0.05, 0.45)
    for ex, ey in dev.get("ecg", []):
        sl = cv.box(ex - 0.03, ex + 0.03, ey - 0.03, ey + 0.03)
        if sl is not None:
            d = np.hypot(cv.x[sl] - ex, cv.y[sl] - ey)
            cv.A[sl] += (
                0.6 * _clip(1 - np.abs(d - 0.018) / 0.004, 0, 1) + 0.9 * (d < 0.006)
            ).astype(F32)
        pts = bezier((ex, ey), (ex * 1.2, ey - 0.08), (ex * 1.35, ey - 0.25), 4)
        draw_tube(cv, pts, 0.003, 0.0, 0.3)
    if dev.get("pacer"):
        px_, py_ = 0.55 * g.hw, g.y_apex + 0.2
        sl = cv.box(px_ - 0.07, px_ + 0.07, py_ - 0.05, py_ + 0.05)
        if sl is not None:
            bx = np.abs(cv.x[sl] - px_) / 0.06
            by = np.abs(cv.y[sl] - py_) / 0.04
            cv.A[sl] += (2.2 * _clip((1.0 - np.maximum(bx, by)) / 0.15, 0, 1)).astype(F32)
        pts = bezier(
            (px_ - 0.04, py_),
            (-0.05, g.y_apex + 0.3),
            (g.heart_x - g.heart_a * 0.4, g.heart_y + 0.05),
            8,
        )
        draw_tube(cv, pts, 0.005, 0.1, 0.6)


# --------------------------------------------------------------------------- lateral
def render_lateral(cv: Canvas, anat: Anatomy, pose: Pose, fx: dict, tex: Textures) -> None:
    """Lateral projection: spine posterior (image right), heart anterior, both lungs overlap."""
    a = anat
    x, y = cv.x, cv.y
    depth = 0.5 + 0.12 * a.soft_depth + 0.6 * a.fat
    yk = y + 0.1
    neck_w = 0.2
    ysh = a.y_apex - 0.1
    wb = neck_w + (depth - neck_w) / (1.0 + np.exp(-(y - ysh) / 0.06))
    cx = 0.02 * np.ones_like(x)
    r = (x - cx) / wb
    cv.A += (MU_SOFT * 1.5 * a.soft_depth) * _sqrt_pos(1.0 - r * r) ** 0.7
    # Arms raised: soft tissue over the upper anterior chest.
    sl = cv.box(-0.6, 0.3, -1.5, -0.2)
    if sl is not None:
        rr = ((cv.x[sl] + 0.15) / 0.28) ** 2 + ((cv.y[sl] + 0.8) / 0.5) ** 2
        cv.A[sl] += (1.2 * _sqrt_pos(1.0 - rr)).astype(F32)
    dome = a.dome_left + pose.inspiration + 0.03
    ant, post = -depth + 0.1, depth - 0.18
    # Spine (kyphotic with age) at the back.
    xs = post - 0.02 - 0.1 * a.kyphosis * (1.0 - ((yk) / 0.9) ** 2)
    sp = np.abs(x - xs)
    ph = np.cos(2 * np.pi * (y - a.heart_y) / 0.105)
    body = (sp < 0.075) * (0.55 + 0.45 * np.tanh(4 * (ph + 0.5)))
    cv.A += (BONE * a.bone * 1.6 * body).astype(F32)
    # Lungs (both superimposed).
    sl = cv.box(ant - 0.05, post + 0.05, a.y_apex - 0.05, dome + 0.35)
    if sl is not None:
        xl, yl = cv.x[sl], cv.y[sl]
        xsl = xs[sl]
        dia = dome + 0.22 * ((xl - ant) / (post - ant)) ** 2 - 0.05
        top = a.y_apex + 0.25 * ((xl - 0.5 * (ant + post)) / (post - ant)) ** 2 * 4
        u = (xl - 0.5 * (ant + xsl)) / (0.5 * (xsl - ant))
        vv = _clip((yl - a.y_apex) / (dome - a.y_apex), 0, 1)
        prof = (
            _sqrt_pos(1.0 - u * u) * _clip((dia - yl) / 0.02, 0, 1) * _clip((yl - top) / 0.1, 0, 1)
        )
        prof *= _clip(1.2 - 0.5 * (1 - vv) ** 2, 0, 1)
        ha = a.ctr * a.thorax_hw * 0.75
        hx, hy = ant + ha * 0.9, dome - 0.18
        rh = ((xl - hx) / ha) ** 2 + ((yl - hy) / (ha * 0.85)) ** 2
        prof *= 1.0 - 0.8 * _clip((1.0 - rh) / 0.08, 0, 1)
        fill = np.zeros_like(prof)
        v = _clip((yl - a.y_apex) / (dome - a.y_apex), 0, 1)
        if "pleural_effusion" in fx:
            h = fx["pleural_effusion"]["height"]
            lvl = dia - h * 0.8 - 0.15 * _clip((xl - ant) / (post - ant), 0, 1)
            fill += 0.9 * _clip((yl - lvl) / 0.04, 0, 1) * (xl > 0.5 * (ant + post))
        if "lung_opacity" in fx or "pneumonia" in fx:
            p = fx.get("pneumonia") or {"v": 0.6}
            cyo = a.y_apex + p["v"] * (dome - a.y_apex)
            fill += 0.6 * _clip(1 - ((xl - 0.1) / 0.25) ** 2 - ((yl - cyo) / 0.18) ** 2, 0, 1)
        if "pulmonary_fibrosis" in fx:
            R = tex.res
            ret = tex.reticular[
                (_clip(v, 0, 0.999) * R).astype(np.int32),
                (_clip(xl * 0.5 + 0.5, 0, 0.999) * R).astype(np.int32),
            ]
            fill += 0.35 * _clip((v - 0.5) / 0.4, 0, 1) * ret
        if "tuberculosis" in fx:
            fill += 0.5 * _clip(
                1 - ((xl - 0.15) / 0.15) ** 2 - ((yl - a.y_apex - 0.2) / 0.12) ** 2, 0, 1
            )
        cv.A[sl] -= (LUNG_AIR * 1.15 * prof * (1.0 - _clip(fill, 0, 0.95))).astype(F32)
    # Sternum anteriorly, aortic arch, trachea.
    sl = cv.box(ant - 0.08, ant + 0.08, a.y_apex, dome)
    if sl is not None:
        d = np.abs(cv.x[sl] - (ant + 0.03 + 0.05 * (cv.y[sl] - a.y_apex)))
        cv.A[sl] += (
            BONE * a.bone * 0.9 * _clip(1 - d / 0.018, 0, 1) * (cv.y[sl] > a.y_apex + 0.12)
        ).astype(F32)
    pts = np.array([[-0.1, -1.6], [-0.05, a.y_apex], [0.05, a.y_apex + 0.42]])
    draw_tube(cv, pts, 0.028, -0.35, 0.0)
    if "support_devices" in fx or "chest_tube" in fx:
        pts = np.array([[-0.12, -1.6], [-0.07, a.y_apex], [-0.02, a.y_apex + 0.3]])
        draw_tube(cv, pts, 0.01, 0.1, 0.4)
    if "nodule" in fx:
        p = fx["nodule"]
        cx_, cy_ = 0.1 + 0.2 * (p["q"] - 0.5), a.y_apex + p["v"] * (dome - a.y_apex)
        sl = cv.box(cx_ - p["r"], cx_ + p["r"], cy_ - p["r"], cy_ + p["r"])
        if sl is not None:
            rr = ((cv.x[sl] - cx_) ** 2 + (cv.y[sl] - cy_) ** 2) / p["r"] ** 2
            cv.A[sl] += (p["amp"] * 0.7 * _sqrt_pos(1 - rr)).astype(F32)


# --------------------------------------------------------------------------- acquisition
class _Interp:
    """Cached bilinear upsampling indices/weights (n -> S) for the low-frequency scatter field."""

    cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    @classmethod
    def get(cls, S: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        key = (S, n)
        if key not in cls.cache:
            pos = (np.arange(S) + 0.5) * n / S - 0.5
            i0 = _clip(np.floor(pos).astype(int), 0, n - 1)
            i1 = _clip(i0 + 1, 0, n - 1)
            w = _clip(pos - np.floor(pos), 0, 1).astype(F32)
            cls.cache[key] = (i0, i1, w)
        return cls.cache[key]

    @classmethod
    def up(cls, low: np.ndarray, S: int) -> np.ndarray:
        """(n, n) -> (S, S) bilinear, without BLAS (tiny matmuls are slow with threads)."""
        i0, i1, w = cls.get(S, low.shape[0])
        r = low[i0] * (1 - w)[:, None] + low[i1] * w[:, None]
        return r[:, i0] * (1 - w)[None, :] + r[:, i1] * w[None, :]


def _blur3(img: np.ndarray, w: float) -> np.ndarray:
    """Separable 3-tap blur [w, 1-2w, w] with edge replication. (S, S) -> (S, S)."""
    out = img * (1 - 2 * w)
    out[:, 1:] += w * img[:, :-1]
    out[:, :-1] += w * img[:, 1:]
    out[:, 0] += w * img[:, 0]
    out[:, -1] += w * img[:, -1]
    o2 = out * (1 - 2 * w)
    o2[1:] += w * out[:-1]
    o2[:-1] += w * out[1:]
    o2[0] += w * out[0]
    o2[-1] += w * out[-1]
    return o2


def acquire(
    A: np.ndarray, cohort: str, view: str, body: float, rng: np.random.Generator
) -> np.ndarray:
    """Attenuation (S, S) -> processed image (S, S) float32 in [0, 1] (no marker yet)."""
    st = ACQUISITION[cohort]
    S = A.shape[0]
    expo = float(np.exp(rng.normal(0.0, 0.25)))
    I = np.exp(-A)  # noqa: E741 (intensity, physics notation)
    n = 16 if S >= 64 else 8
    f = S // n
    low = I[: n * f, : n * f].reshape(n, f, n, f).mean(axis=(1, 3))
    low = _blur3(_blur3(low, 0.3), 0.3)
    sc = st["scatter"] * (0.7 + 0.45 * body) * (1.25 if view == "AP" else 1.0)
    It = I + F32(sc) * _Interp.up(low.astype(F32), S)
    n0 = st["n0"] * expo / (body**2) * (0.6 if view == "AP" else 1.0)
    noise = rng.random((S, S), dtype=F32) - F32(0.5)  # uniform, unit variance after * sqrt(12)
    noise *= F32(math.sqrt(12.0))
    noise *= np.sqrt(It * F32(1.0 / n0))
    It += noise  # Poisson-like: variance = signal / n0
    np.maximum(It, F32(1e-4), out=It)
    L = np.log(It)  # log intensity; the tone curve maps low log I (dense) to bright
    sub = L[:: max(S // 64, 1), :: max(S // 64, 1)]
    q_lo, q_hi = (float(q) for q in np.quantile(sub, [0.005, 0.99 - rng.uniform(0, 0.02)]))
    # Tone curve (window -> sigmoid contrast -> gamma) as a lookup table over [q_lo, q_hi].
    gain = st["gain"] * float(np.exp(rng.normal(0, 0.08)))
    t = np.linspace(0.0, 1.0, 1024)
    dens = 1.0 - t  # high attenuation (low log I) -> bright
    curve = 1.0 / (1.0 + np.exp(-gain * (dens - 0.55 + rng.normal(0, 0.03))))
    curve = (curve - curve.min()) / (curve.max() - curve.min())
    curve = (curve ** (st["gamma"] * float(np.exp(rng.normal(0, 0.06))))).astype(F32)
    L -= F32(q_lo)
    L *= F32(1023.0 / max(q_hi - q_lo, 1e-3))
    idx = np.clip(L, 0, 1023, out=L).astype(np.int16)
    v = curve[idx]
    w = st["blur"] * (S / 256.0) ** 0.3 - 0.12 * st["sharpen"]  # w < 0: unsharp masking
    return _blur3(v, float(w))


def finish(img: np.ndarray, cohort: str, view: str, rng: np.random.Generator) -> np.ndarray:
    """Collimation, border and burned-in side marker. (S, S) -> (S, S) in [0, 1]."""
    st = ACQUISITION[cohort]
    S = img.shape[0]
    lo_c, hi_c = st["coll"]
    m = rng.uniform(lo_c, hi_c, size=4)
    c = (np.arange(S, dtype=F32) + 0.5) / S
    edge = 0.004
    cols = _clip((c - m[0]) / edge, 0, 1) * _clip((1 - m[1] - c) / edge, 0, 1)
    rows = _clip((c - m[2]) / edge, 0, 1) * _clip((1 - m[3] - c) / edge, 0, 1)
    inside = (rows[:, None] * cols[None, :]).astype(F32)
    out = img * inside + F32(st["coll_value"]) * (1 - inside)
    if rng.random() < st["border"]:
        b = max(1, S // 64)
        out[:b] = 0
        out[-b:] = 0
        out[:, :b] = 0
        out[:, -b:] = 0
    # Side marker: "L" on the patient's left (image right) or "R", cohort corner + jitter.
    letter = "L" if rng.random() < 0.7 else "R"
    cell = max(1, round(S / 70))
    g = np.kron(GLYPHS[letter], np.ones((cell, cell), dtype=bool))
    gh, gw = g.shape
    rc, cc = st["marker"]
    r0 = int(rng.uniform(0.04, 0.16) * S) if rc == 0 else S - gh - int(rng.uniform(0.04, 0.16) * S)
    c0 = int(rng.uniform(0.04, 0.2) * S) if cc == 0 else S - gw - int(rng.uniform(0.04, 0.2) * S)
    r0 = int(_clip(r0, 0, S - gh))
    c0 = int(_clip(c0, 0, S - gw))
    patch = out[r0 : r0 + gh, c0 : c0 + gw]
    patch[g] = st["marker_value"]
    return _clip(out, 0.0, 1.0)


# ------------------------------------------------------------------------------- entry
def empty_masks(size: int) -> dict[str, np.ndarray]:
    """All schema.MASK_NAMES as (size, size) False arrays."""
    return {k: np.zeros((size, size), dtype=bool) for k in schema.MASK_NAMES}


def split_zones(masks: dict[str, np.ndarray]) -> None:
    """Zones: each lung split by image rows into thirds of its vertical extent (exact partition)."""
    for side, key in (("right", "lung_right"), ("left", "lung_left")):
        lung = masks[key]
        rows = np.flatnonzero(lung.any(axis=1))
        if rows.size == 0:
            continue
        top, bot = rows[0], rows[-1] + 1
        h = bot - top
        cuts = [top, top + int(round(h / 3)), top + int(round(2 * h / 3)), bot]
        for name, r0, r1 in zip(("upper", "mid", "lower"), cuts[:-1], cuts[1:], strict=True):
            z = masks[f"zone_{side}_{name}"]
            z[r0:r1] = lung[r0:r1]


def render_image(
    size: int,
    anat: Anatomy,
    pose: Pose,
    view: str,
    cohort: str,
    fx: dict,
    rng: np.random.Generator,
    with_masks: bool = True,
) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """Render one image. Returns image (S, S) float32 in [0, 1] and masks (name -> (S, S) bool).

    fx: finding name -> geometry dict (see generate.finding_geometry); only present findings.
    """
    cv = Canvas(size, pose)
    tex = get_textures(size)
    if view == "LATERAL":
        render_lateral(cv, anat, pose, fx, tex)
        masks = None
    else:
        g = frontal_geometry(anat, pose, view)
        masks = empty_masks(size) if with_masks else None
        render_body(cv, g)
        render_spine_etc(cv, g)
        render_lungs(cv, g, tex, fx, masks)
        render_ribs(cv, g, fx, masks)
        if "nodule" in fx:
            render_nodule(cv, g, fx["nodule"])
        render_devices(cv, g, fx, masks)
        if masks is not None:
            split_zones(masks)
    img = acquire(cv.A, cohort, view, anat.soft_depth, rng)
    img = finish(img, cohort, view, rng)
    return img, masks
