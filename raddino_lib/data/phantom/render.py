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
                    0.5 * _sqrt_pos(1.0 - rr) * _clip((cv.y[sl] - cy + ry * 0.6) / 0.15, 0, 1)
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
        marks = (0.3 * a.markings) * vessels * vessel_keep * air * (1.0 - _clip(fill, 0, 1))
        A += marks.astype(F32)
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
                        cv.A[slc] += (0.8 * a.calcification * speck * okc * (dc < r * 0.66)).astype(
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
LAT_AIR = 2.0  # attenuation removed by both (superimposed) fully aerated lungs
N_LAT_JITTER = 4  # per-image draws for a lateral (obliquity, arm angle, gastric bubble, tilt)


@dataclass
class Lateral:
    """Derived geometry of a left-lateral view (x: anterior -> posterior, y: head -> feet).

    The patient faces image left, so the spine is at image right. Scalars are patient
    coordinates; the spine is a kyphotic curve ``xv(y)`` and the sternum a line ``x_st(y)``.
    """

    anat: Anatomy
    y0: float  # lung apex
    dome: dict[int, float]  # -1: right (higher), +1: left hemidiaphragm dome
    dep: float  # half inner AP depth
    xv0: float  # vertebral-body centre at y = -0.15
    kc: float  # kyphotic bow
    y_man: float  # sternal notch
    y_xip: float  # xiphoid
    st0: float  # sternum x at the xiphoid
    st_slope: float  # sternum dx/dy (top more posterior)
    y_car: float  # carina
    x_car: float
    obl: float  # rotation about the vertical axis: offset between the two sides
    arm: float  # arm elevation angle from vertical (radians, towards anterior)
    bubble: float  # gastric bubble radius (0: none)

    def xv(self, y):
        """Vertebral-body centre line at height y (kyphotic bow backwards)."""
        t = (y + 0.15) * (1 / 0.95)
        return self.xv0 + self.kc * (1.0 - t * t)

    def x_st(self, y):
        """Sternum centre line (runs down and forwards)."""
        return self.st0 + self.st_slope * (self.y_xip - y)

    def x_ia(self, y: float) -> float:
        """Anterior inner chest wall (scalar)."""
        return self.x_st(y) + 0.035 + max(self.y_man - y, 0.0) * 0.6

    def x_ip(self, y: float) -> float:
        """Posterior inner chest wall (scalar)."""
        return self.xv(y) + 0.17

    def lung_point(self, u: float, v: float, side: int = 1) -> tuple[float, float]:
        """Lung-relative (u: anterior -> posterior, v: apex -> base) -> patient (x, y)."""
        y = self.y0 + 0.06 + v * (self.dome[side] - self.y0)
        xa, xp = self.x_ia(y), self.x_ip(y)
        return xa + u * (xp - xa), y


def lateral_geometry(anat: Anatomy, pose: Pose, jitter: np.ndarray) -> Lateral:
    """Lateral geometry from the anatomy, pose and ``N_LAT_JITTER`` uniform draws."""
    a = anat
    dep = 0.45 * a.thorax_hw / 0.66 + 0.05 * a.kyphosis
    dome = {-1: a.dome_right + pose.inspiration + 0.02, 1: a.dome_left + pose.inspiration + 0.02}
    kc = 0.02 + 0.07 * a.kyphosis
    xv0 = dep - 0.24 - kc * 0.5
    y_man = a.y_apex + 0.30
    y_xip = dome[1] - 0.02
    st0 = -dep - 0.07 - 0.03 * a.kyphosis
    st_slope = (0.10 + 0.04 * (jitter[3] - 0.5)) / (y_xip - y_man)
    y_car = a.y_apex + 0.45
    t = (y_car + 0.15) / 0.95
    x_car = xv0 + kc * (1 - t * t) - 0.25
    obl = 0.07 * (jitter[0] - 0.5)
    arm = 0.25 + 0.45 * jitter[1] + a.shoulder
    bubble = 0.0 if jitter[2] < 0.15 else 0.03 + 0.06 * jitter[2]
    return Lateral(
        a, a.y_apex, dome, dep, xv0, kc, y_man, y_xip, st0, st_slope, y_car, x_car, obl, arm, bubble
    )


def _seg_dist(x, y, x1: float, y1: float, x2: float, y2: float):
    """Distance to a segment and the position along it (0..1). x, y: (h, w)."""
    dx, dy = x2 - x1, y2 - y1
    L2 = dx * dx + dy * dy + 1e-12
    t = _clip(((x - x1) * dx + (y - y1) * dy) * (1.0 / L2), 0.0, 1.0)
    return np.hypot(x - x1 - t * dx, y - y1 - t * dy), t


def _lat_body(cv: Canvas, g: Lateral) -> None:
    """Soft tissue: chest, back, neck, abdomen, raised arms, breasts; shoulder girdle."""
    a = g.anat
    x, y = cv.x, cv.y
    fat = a.fat
    tn = _clip((g.y_man - y) * (1 / 0.3), 0.0, 1.0)  # 1 in the neck
    front = g.x_st(y) - (0.05 + 0.7 * fat)
    front = np.maximum(front, g.st0 - 0.22 - 1.6 * fat)  # belly
    front += tn * (g.x_car - 0.17 - front)
    back = g.xv(y) + (0.30 + 0.6 * fat) - 0.08 * tn
    mid = 0.5 * (front + back)
    r = (x - mid) / (0.5 * (back - front))
    cv.A += ((MU_SOFT * 1.1 * a.soft_depth) * _sqrt_pos(1.0 - r * r) * (1.0 - 0.45 * tn)).astype(
        F32
    )
    # Shoulder girdle (scapulae, muscles) over the upper posterior chest: the "spine sign".
    sl = cv.box(g.x_car - 0.1, g.xv0 + 0.5, g.y0 - 0.3, g.y0 + 0.9)
    if sl is not None:
        xg, yg = cv.x[sl], cv.y[sl]
        gird = _clip((g.y0 + 0.85 - yg) * (1 / 0.6), 0.0, 1.0) * _clip((xg - g.x_car) * 5.0, 0, 1)
        cv.A[sl] += ((0.55 * a.soft_depth) * gird).astype(F32)
    if a.breast > 0:
        cy = g.dome[1] - 0.1
        cx = g.x_st(cy) - 0.05 - 0.7 * fat
        rx, ry = a.breast * 1.05, a.breast * 1.3
        sl = cv.box(cx - rx, cx + rx, cy - ry, cy + ry)
        if sl is not None:
            xb, yb = cv.x[sl] - cx, cv.y[sl] - cy
            yb = yb - 0.35 * np.maximum(-xb, 0.0)  # droops: lower contour curves back up
            rr = (xb / rx) ** 2 + (yb / ry) ** 2
            cv.A[sl] += ((0.8 * a.soft_depth) * _sqrt_pos(1.0 - rr)).astype(F32)


def _lat_arms(cv: Canvas, g: Lateral) -> None:
    """Arms raised forwards over the upper chest: soft tissue, humeral heads and shafts.

    Both sides are superimposed, offset by the obliquity / magnification.
    """
    a = g.anat
    bone = BONE * a.bone
    xs, ys = g.xv(g.y0) - 0.32, g.y0 + 0.05 + a.shoulder
    dxa, dya = -math.sin(g.arm), -math.cos(g.arm)
    offs = (-0.04 - g.obl, 0.04 + g.obl)  # perpendicular offsets of the two arms
    sl = cv.box(xs + 1.7 * dxa - 0.3, xs + 0.35, ys + 1.7 * dya, ys + 0.35)
    if sl is not None:
        xa, ya = cv.x[sl] - xs, cv.y[sl] - ys
        along = xa * dxa + ya * dya
        perp = xa * dya - ya * dxa
        w = 1.0 / (0.19 + 0.3 * a.fat)
        tot = np.zeros_like(xa)
        shaft = np.zeros_like(xa)
        for off in offs:
            pp = (perp - off) * w
            tot += _sqrt_pos(1.0 - pp * pp)
            ps = np.abs(perp - off) * (1 / 0.045)
            ps *= ps
            shaft += _sqrt_pos(1.0 - ps) - 0.55 * _sqrt_pos(1.0 - ps * 2.56)
        val = (0.75 * a.soft_depth) * tot * _clip(along * 4.0 + 1.0, 0.0, 1.0)
        val += (bone * 1.3) * shaft * _clip(along * 20.0 - 1.0, 0.0, 1.0)
        cv.A[sl] += val.astype(F32)
    for k, off in enumerate(offs):
        hx, hy = xs + off * dya, ys - off * dxa
        hr = 0.105 * (1.0 + 0.04 * k)
        sl = cv.box(hx - hr, hx + hr, hy - hr, hy + hr)
        if sl is not None:
            xa, ya = cv.x[sl] - hx, cv.y[sl] - hy
            rr = (xa * xa + ya * ya) * (1 / (hr * hr))
            head = _sqrt_pos(1.0 - rr) * 0.7 + 0.5 * _clip(1.0 - np.abs(rr - 0.85) * 6, 0, 1)
            cv.A[sl] += (bone * head).astype(F32)


def _lat_bones(cv: Canvas, g: Lateral) -> None:
    """Vertebral column, sternum, humeral heads and shafts, clavicles, scapular borders."""
    a = g.anat
    bone = BONE * a.bone
    # Vertebral bodies (rectangles with disc spaces, cortical rims) and posterior elements.
    sl = cv.box(g.xv0 - 0.15, g.xv0 + 0.4, -2.0, 2.0)
    if sl is not None:
        x, y = cv.x[sl], cv.y[sl]
        xv = g.xv(y)
        dx = x - xv
        sy = y + (2 * g.kc / 0.95**2) * (y + 0.15) * dx  # endplates perpendicular to the axis
        pv = 0.112 + 0.012 * (sy - g.y0)
        ph = (sy - g.y0) / pv + 0.3
        f = ph - np.floor(ph)
        hv = 0.068 + 0.01 * (y - g.y0)
        ex = hv - np.abs(dx)
        ey = np.minimum(f, 0.8 - f) * pv
        e = np.minimum(ex, ey)
        body = _clip(e * 250.0, 0.0, 1.0) * (0.5 + 0.7 * np.exp(np.maximum(e, 0.0) * -120.0))
        # Pedicles / laminae behind the body, spinous processes further back.
        pe = (dx - hv) * (1 / 0.09)
        post = _clip(1.0 - np.abs(pe - 0.5) * 2.0, 0.0, 1.0) * _clip(
            1.2 - np.abs(f - 0.35) * 3, 0, 1
        )
        fs = ph - 0.5 * (dx - hv - 0.09) / pv
        fs = fs - np.floor(fs)
        spin = _clip(1.0 - np.abs(fs - 0.3) * 5.0, 0, 1) * _clip(1.0 - np.abs(pe - 1.6) * 1.4, 0, 1)
        cv.A[sl] += (bone * (1.25 * body + 0.45 * post + 0.35 * spin)).astype(F32)
    # Sternum: manubrium (thicker) and body, cortical edges.
    y1 = g.y_xip + 0.04
    x_top = g.x_st(g.y_man)
    sl = cv.box(g.st0 - 0.06, x_top + 0.06, g.y_man - 0.02, y1)
    if sl is not None:
        x, y = cv.x[sl], cv.y[sl]
        d = x - g.x_st(y)
        w = 0.022 + 0.018 * _clip((g.y_man + 0.22 - y) * 8.0, 0.0, 1.0)
        dn = np.abs(d) / w
        prof = _clip((1.0 - dn) * 6.0, 0.0, 1.0) * (0.45 + 0.7 * _clip(dn * 2.5 - 1.4, 0.0, 1.0))
        prof *= _clip((y - g.y_man) * 60.0, 0.0, 1.0) * _clip((y1 - y) * 30.0, 0.0, 1.0)
        seg = (y - g.y_man - 0.22) * (1 / 0.13)  # sternebrae below the sternal angle
        seg = np.abs(seg - np.floor(seg) - 0.5) * 2.0
        prof *= 1.0 - 0.45 * _clip((0.12 - np.abs(seg - 1.0)) * 10.0, 0.0, 1.0)
        cv.A[sl] += (bone * 0.95 * prof).astype(F32)
    xs, ys = g.xv(g.y0) - 0.32, g.y0 + 0.05 + a.shoulder
    # Clavicles (sternal notch -> acromion) and scapular lateral borders.
    for off in (-0.5, 0.5):
        o = off * (0.04 + g.obl)
        segs = (
            (x_top + 0.03 + o, g.y_man - 0.02, xs + 0.08 + o, ys - 0.14, 0.02, 0.8),
            (xs + 0.1 + o, ys + 0.1, g.xv(g.y0 + 0.8) + 0.15 + o, g.y0 + 0.8, 0.014, 0.6),
        )
        for x1, y1_, x2, y2, r, amp in segs:
            sl = cv.box(min(x1, x2) - r, max(x1, x2) + r, min(y1_, y2) - r, max(y1_, y2) + r)
            if sl is None:
                continue
            d, _ = _seg_dist(cv.x[sl], cv.y[sl], x1, y1_, x2, y2)
            dn = d * (1 / r)
            cv.A[sl] += (
                bone * amp * (_sqrt_pos(1.0 - dn * dn) - 0.4 * _sqrt_pos(0.5 - dn * dn))
            ).astype(F32)


def render_lateral(
    cv: Canvas,
    anat: Anatomy,
    pose: Pose,
    fx: dict,
    tex: Textures,
    jitter: np.ndarray | None = None,
) -> None:
    """Left-lateral projection: spine posterior (image right), sternum and heart anterior.

    jitter: ``N_LAT_JITTER`` uniform draws from the image rng (obliquity, arm elevation,
    gastric bubble, sternal angle); 0.5 each when None.
    """
    if jitter is None:
        jitter = np.full(N_LAT_JITTER, 0.5)
    g = lateral_geometry(anat, pose, jitter)
    a = anat
    # Smooth terms (soft tissue, lung air) at half resolution, then bilinear upsampling.
    lo = Canvas(cv.size // 2, pose) if cv.size % 2 == 0 and cv.size >= 64 else cv
    _lat_body(lo, g)
    _lat_arms(lo, g)
    _lat_lungs(lo, cv, g, fx, tex)
    if lo is not cv:
        cv.A += _Interp.up(lo.A, cv.size)
    _lat_bones(cv, g)
    _lat_devices(cv, g, fx)
    if "nodule" in fx:
        p = fx["nodule"]
        cx, cy = g.lung_point(0.2 + 0.6 * p["q"], p["v"], p["side"])
        r = p["r"]
        sl = cv.box(cx - r, cx + r, cy - r, cy + r)
        if sl is not None:
            rr = ((cv.x[sl] - cx) ** 2 + (cv.y[sl] - cy) ** 2) / (r * r)
            cv.A[sl] += (p["amp"] * 0.9 * _sqrt_pos(1.0 - rr)).astype(F32)
    del a


_LAT_TEXTURED = (
    "lung_opacity",
    "pneumonia",
    "pulmonary_fibrosis",
    "tuberculosis",
    "pleural_thickening",
)


def _lat_frame(g: Lateral, x: np.ndarray, y: np.ndarray):
    """Lung-relative coordinates: (x_ia, x_ip, u, ub, below) with below[s] = 1 above the
    hemidiaphragm of side s (two domes sloping down into the posterior sulci)."""
    dmax = max(g.dome.values())
    x_ia = g.x_st(y) + 0.035 + np.maximum(g.y_man - y, 0.0) * 0.6
    x_ip = g.xv(y) + 0.17
    u = (x - x_ia) / np.maximum(x_ip - x_ia, 0.05)
    xb_a, xb_p = g.x_ia(dmax), g.x_ip(dmax)
    ub = (x - xb_a) * (1 / (xb_p - xb_a))
    below = {}
    for s in (-1, 1):
        du = ub + (s * g.obl - 0.4)
        dia = g.dome[s] + du * du * np.where(du < 0, F32(1.0), F32(0.95))
        below[s] = _clip((dia - y) * 70.0, 0.0, 1.0)
    return x_ia, x_ip, u, ub, below


def _lat_lungs(cv: Canvas, full: Canvas, g: Lateral, fx: dict, tex: Textures) -> None:
    """Both lungs superimposed, two hemidiaphragms, heart, great vessels, airways, findings.

    Smooth air / soft-tissue terms go to ``cv`` (may be a half-resolution canvas); the ribs
    and the mediastinal lines go to ``full``.
    """
    a = g.anat
    y0 = g.y0
    dmax = max(g.dome.values())
    xa_min = g.x_st(dmax + 0.3) - 0.05
    xp_max = g.xv0 + g.kc + 0.25
    sl = cv.box(xa_min, xp_max, y0 - 0.05, dmax + 0.4)
    if sl is None:
        return
    x, y = cv.x[sl], cv.y[sl]
    x_ia, x_ip, u, ub, below = _lat_frame(g, x, y)
    xap = g.xv(y0) - 0.27
    ty = (x - xap) * (1 / g.dep)
    y_top = y0 + 0.55 * ty * ty
    edge = np.minimum(np.minimum((x - x_ia) * 18.0, (x_ip - x) * 9.0), (y - y_top) * 14.0)
    wv = 0.5 + 0.5 * _clip((y - y0) * (1 / 0.75), 0.0, 1.0)
    uu = 2.0 * u - 1.0
    core = (LAT_AIR * _clip(edge, 0.0, 1.0)) * wv * (0.7 + 0.3 * _sqrt_pos(1.0 - uu * uu))
    fills = {-1: None, 1: None}

    def add(s: int, f: np.ndarray) -> None:
        for side in (-1, 1) if s == 0 else (s,):
            fills[side] = f if fills[side] is None else fills[side] + f

    R = tex.res
    if any(k in fx for k in _LAT_TEXTURED):
        v = _clip((y - y0) / (dmax - y0), 0.0, 0.999)
        vi = (v * R).astype(np.int32)
        ui = (_clip(u, 0.0, 0.999) * R).astype(np.int32)
    if "pleural_effusion" in fx:
        p = fx["pleural_effusion"]
        for s in p["sides"]:
            lvl = g.dome[s] + 0.3 - 2.0 * p["height"]
            lvl = lvl - (0.6 * p["height"] + 0.04) * _clip((ub - 0.45) * 2.0, 0.0, 1.0) ** 2
            add(s, 0.95 * _clip((y - lvl) * 30.0, 0.0, 1.0))
    if "lung_opacity" in fx:
        mot = tex.mottle[vi, ui]
        for s, q0, v0, rx, ry, amp in fx["lung_opacity"]["blobs"]:
            cx, cy = g.lung_point(0.15 + 0.7 * q0, v0, s)
            r2 = ((x - cx) / (rx * 1.2)) ** 2 + ((y - cy) / ry) ** 2
            add(s, amp * _clip(1.0 - r2, 0.0, 1.0) ** 0.7 * (0.55 + 0.9 * mot))
    if "pneumonia" in fx:
        p = fx["pneumonia"]
        s = p["side"]
        lower = p["v"] > 0.62
        uc = 0.55 + 0.3 * p["q"] if lower else 0.22
        cx, cy = g.lung_point(uc, p["v"] - 0.1, s)
        r2 = ((x - cx) / (p["rx"] * 1.4)) ** 2 + ((y - cy) / (p["ry"] * 1.3)) ** 2
        b = np.minimum(_clip(1.0 - r2, 0.0, 1.0) * 2.2, 1.0)
        # Major fissure: posterior-superior -> anterior diaphragm; sharp lobar margin.
        f1 = (g.x_ip(y0 + 0.35) - 0.08, y0 + 0.35)
        f2 = (g.x_ia(dmax) + 0.2, g.dome[s] + 0.01)
        nx, ny = f2[1] - f1[1], -(f2[0] - f1[0])
        nn = math.hypot(nx, ny)
        sd = ((x - f1[0]) * nx + (y - f1[1]) * ny) * (1 / nn)  # > 0: posterior-inferior
        b *= _clip((sd if lower else -sd) * 80.0 + 0.5, 0.0, 1.0)
        mot = tex.mottle[vi, ui]
        add(s, p["amp"] * b * (0.8 + 0.3 * mot))
    if "pulmonary_fibrosis" in fx:
        p = fx["pulmonary_fibrosis"]
        ret = tex.reticular[(vi + p["off"]) % R, (ui + p["off"] * 3) % R]
        w = _clip((v - 0.4) * 2.5, 0.0, 1.0) * _clip((u - 0.25) * 2.5, 0.0, 1.0)
        add(0, p["amp"] * 0.8 * ret * w)
    if "tuberculosis" in fx:
        p = fx["tuberculosis"]
        mot = tex.mottle[vi, ui]
        for s, q0, v0, r, amp in p["blobs"]:
            cx, cy = g.lung_point(0.45 + 0.4 * q0, v0, s)
            r2 = ((x - cx) / (r * 1.4)) ** 2 + ((y - cy) / r) ** 2
            add(s, amp * _clip(1.0 - r2, 0.0, 1.0) ** 0.7 * (0.4 + 1.2 * mot))
        for s, q0, v0, r in p["cavities"]:
            cx, cy = g.lung_point(0.45 + 0.4 * q0, v0, s)
            d = np.hypot(x - cx, y - cy)
            add(s, 0.8 * _clip(1.0 - np.abs(d - r) / (0.35 * r), 0, 1) - 0.35 * (d < r * 0.8))
    if "pleural_thickening" in fx:
        p = fx["pleural_thickening"]
        t = p["thick"]
        if p["apical"]:
            add(p["side"], 0.9 * _clip((y_top + t - y) * 150.0, 0.0, 1.0))
        else:
            w = _clip(1.0 - np.abs(v - p["v"]) / p["extent"], 0.0, 1.0)
            add(p["side"], 0.9 * w * _clip((x - x_ip + t * 1.5) * 150.0, 0.0, 1.0))
    extra = None
    if "pneumothorax" in fx:
        p = fx["pneumothorax"]
        dist = y - y_top
        depth = p["depth"] * _clip(1.0 - u, 0.3, 1.0)
        reg = (dist < depth) * _clip(edge, 0.0, 1.0)
        extra = (p["side"], reg, 0.22 * _clip(1.0 - np.abs(dist - depth) / p["line"], 0, 1))
    side_air = []
    for s in (-1, 1):
        f = fills[s]
        side_air.append(below[s] if f is None else below[s] * (1.0 - _clip(f, -0.4, 0.97)))
    air = core * (0.5 * (side_air[0] + side_air[1]))
    # Heart: anterior-inferior, resting on the diaphragm, tilted (apex anterior-inferior).
    ha = 0.95 * a.ctr * a.thorax_hw
    hb = ha * (0.72 + 0.25 * (a.heart_aspect - 0.79))
    phi = -0.6
    hx = g.x_st(g.dome[1] - 0.12) + 0.035 + ha * 0.85
    hy = g.dome[1] - 0.5 * hb + 0.3 * (a.heart_y + 0.16)
    c, s_ = math.cos(phi), math.sin(phi)
    # (heart, IVC, hilum and ribs are evaluated in their own sub-boxes of the lung box)
    e = 1.2 * ha
    hs = _sub(sl, cv.box(hx - e, hx + e, hy - e, hy + e))
    if hs is not None:
        ddx, ddy = x[hs] - hx, y[hs] - hy
        rh = ((c * ddx + s_ * ddy) / (1.15 * ha)) ** 2 + ((-s_ * ddx + c * ddy) / hb) ** 2
        # Denser towards its diaphragmatic surface: silhouettes the anterior left hemidiaphragm.
        hden = 0.62 + 0.33 * _clip(ddy * (1 / hb) + 0.2, 0.0, 1.0)
        air[hs] *= 1.0 - hden * _clip((1.0 - rh) * 7.0, 0.0, 1.0)
    # IVC at the posterior-inferior heart border.
    ix, iy = hx + 0.75 * ha, g.dome[-1] - 0.02
    hs = _sub(sl, cv.box(ix - 0.06, ix + 0.06, iy - 0.1, iy + 0.1))
    if hs is not None:
        r2 = ((x[hs] - ix) / 0.06) ** 2 + ((y[hs] - iy) / 0.1) ** 2
        air[hs] *= 1.0 - 0.5 * _clip(1.0 - r2, 0.0, 1.0)
    # Hilum: pulmonary arteries around the carina.
    ix, iy = g.x_car + 0.04, g.y_car + 0.1
    hs = _sub(sl, cv.box(ix - 0.2, ix + 0.2, iy - 0.27, iy + 0.27))
    if hs is not None:
        r2 = ((x[hs] - ix) / 0.11) ** 2 + ((y[hs] - iy) / 0.15) ** 2
        air[hs] *= 1.0 - 0.35 * np.exp(-2.0 * r2)
    if extra is not None:
        s, reg, line = extra
        air += core * 0.06 * reg * below[s]
    # Lung markings: vessel textures radiating from the hilum, anterior and posterior.
    qv = _clip(np.abs(x - ix) * (1 / 0.55), 0.0, 0.999)
    vv = _clip(0.52 + (y - iy) * (1 / 1.3), 0.0, 0.999)
    k0, k1 = (a.texture % N_TEX) * R * R, ((a.texture + 1) % N_TEX) * R * R
    flat = (vv * R).astype(np.int32) * R + (qv * R).astype(np.int32)
    flat += np.where(x > ix, np.int32(k1), np.int32(k0))
    ves = tex.vessels.reshape(-1).take(flat)
    A = cv.A[sl]
    A -= (air * (1.0 - (0.28 * a.markings / LAT_AIR) * ves)).astype(F32)
    if extra is not None:
        A += (extra[2] * core * (1 / LAT_AIR)).astype(F32)
    # Posterior ribs of both sides (magnification / obliquity offset), down-forwards.
    rb = full.box(g.xv0 - 0.45, xp_max, y0, dmax + 0.36)
    if rb is not None:
        xr, yr = full.x[rb], full.y[rb]
        _, xr_ip, ur, _, br = _lat_frame(g, xr, yr)
        dr = xr_ip - xr
        slope = 0.45 + 2.0 * (a.rib_drop - 0.13) + 0.1 * a.kyphosis
        pitch = (dmax + 0.2 - y0) / 10.0
        wr = 2.5 * a.rib_r * math.sqrt(1.0 + slope * slope) / pitch
        fade = _clip((ur - 0.2) * 3.0, 0.0, 1.0) * _clip(dr * 30.0 + 1.5, 0.0, 1.0)
        fade *= _clip((yr - y0) * 20.0, 0.0, 1.0)
        fade *= np.maximum(br[-1], br[1])
        base = yr - y0 - 0.25 * dr * dr
        ribs = np.zeros_like(xr)
        for k, m in enumerate((1.0, 1.05)):
            o = (k - 0.5) * g.obl
            ph = (base + (m - 1.0) * yr + (0.5 * o - slope * o) - (slope * m) * dr) * (1 / pitch)
            f = ph - np.floor(ph)
            t = f * (1 / wr)
            e = np.minimum(t, 1.0 - t)
            ribs += (
                (ph > 0.0)
                * (ph < 11.0)
                * _clip(e * 12.0, 0.0, 1.0)
                * (0.45 + 0.6 * _clip(1.0 - e * 5.0, 0.0, 1.0))
            )
        full.A[rb] += (BONE * a.bone * 0.45 * ribs * fade).astype(F32)
    # Gastric bubble under the left hemidiaphragm.
    if g.bubble > 0:
        bx, by = g.lung_point(0.3, 1.0, 1)
        by += g.bubble + 0.03
        sb = cv.box(bx - 1.5 * g.bubble, bx + 1.5 * g.bubble, by - g.bubble, by + g.bubble)
        if sb is not None:
            rr = ((cv.x[sb] - bx) / (1.4 * g.bubble)) ** 2 + ((cv.y[sb] - by) / g.bubble) ** 2
            cv.A[sb] -= (0.7 * _sqrt_pos(1.0 - rr) * (cv.y[sb] < by + 0.3 * g.bubble)).astype(F32)
    _lat_mediastinum(full, g)


def _lat_mediastinum(cv: Canvas, g: Lateral) -> None:
    """Trachea (air column), carina bronchus ring, aorta (ascending, arch, descending)."""
    a = g.anat
    xt0, yt0 = g.x_car - 0.14, -2.0
    rt = 0.042
    sl = cv.box(xt0 - rt, g.x_car + rt, yt0, g.y_car + 0.05)
    if sl is not None:
        d, t = _seg_dist(cv.x[sl], cv.y[sl], xt0, yt0, g.x_car, g.y_car)
        dn = d * (1 / rt)
        cv.A[sl] -= (
            0.55 * _sqrt_pos(1.0 - dn * dn) - 0.08 * _clip(1 - np.abs(dn - 1) * 6, 0, 1)
        ).astype(F32)
    # End-on upper lobe bronchus: lucent ring below the carina.
    bx, by, br = g.x_car + 0.05, g.y_car + 0.07, 0.024
    sl = cv.box(bx - 1.5 * br, bx + 1.5 * br, by - 1.5 * br, by + 1.5 * br)
    if sl is not None:
        dn = np.hypot(cv.x[sl] - bx, cv.y[sl] - by) * (1 / br)
        cv.A[sl] += (
            0.12 * _clip(1 - np.abs(dn - 1.1) * 5, 0, 1) - 0.2 * _sqrt_pos(1 - dn * dn)
        ).astype(F32)
    # Aorta: candy cane, radius grows with the knob / mediastinal width (aortic enlargement).
    ra = 0.045 + 0.7 * (a.knob - 0.028) + 0.5 * (a.med_hw - 0.085)
    x_d = g.xv(g.y_car) - 0.068 - 0.01 - ra * 0.6
    x_as = g.x_car - 0.13 - 1.5 * (ra - 0.045)
    R = 0.5 * (x_d - x_as)
    cxa = 0.5 * (x_d + x_as)
    cya = g.y_car - 0.17 - 0.8 * (ra - 0.045) + R
    ybot = g.dome[1] + 0.1
    sl = cv.box(x_as - ra, x_d + ra, cya - R - ra, ybot)
    if sl is None:
        return
    x, y = cv.x[sl], cv.y[sl]
    hyp = np.hypot(x - cxa, y - cya)
    up = y < cya
    d = np.where(
        up, np.abs(hyp - R), np.minimum(np.abs(x - x_as) + 10 * (y > cya + 0.45), np.abs(x - x_d))
    )
    dn = d * (1 / ra)
    prof = _sqrt_pos(1.0 - dn * dn) * _clip((ybot - y) * 20.0, 0.0, 1.0)
    val = 0.3 * prof
    if a.calcification > 0.3:
        val += (
            (0.5 * a.calcification)
            * _clip(1.0 - np.abs(hyp - R - 0.8 * ra) * 150.0, 0, 1)
            * (y < cya - 0.6 * R)
        )
    cv.A[sl] += val.astype(F32)


def _lat_devices(cv: Canvas, g: Lateral, fx: dict) -> None:
    """Chest tube and support devices projected on the lateral view."""
    if "chest_tube" in fx:
        p = fx["chest_tube"]
        ex, ey = g.lung_point(0.55, p["entry_v"], p["side"])
        tx, ty = g.lung_point(0.2 + 0.5 * p["tip_q"], 0.05, p["side"])
        inner = bezier((ex, ey), (ex + 0.05, ty + 0.5 * (ey - ty)), (tx, ty), 9)
        outer = np.array([[ex + 0.05, ey + 0.45], [ex + 0.02, ey + 0.15]])
        pts = np.concatenate([outer, inner], axis=0)
        draw_tube(cv, pts, p["radius"], 0.10, 0.42, hole=(p["hole"] + 0.3, 0.025))
    dev = fx.get("support_devices", {})
    if dev.get("ett"):
        pts = np.array([[g.x_car - 0.14, -2.0], [g.x_car - 0.02, g.y_car - 0.1]])
        draw_tube(cv, pts, 0.014, 0.12, 0.4)
    if dev.get("ng"):
        x_e = g.xv(g.y_car) - 0.1
        bx, by = g.lung_point(0.3, 1.0, 1)
        pts = bezier((x_e - 0.06, -2.0), (x_e + 0.02, g.dome[1] - 0.2), (bx, by + 0.15), 8)
        draw_tube(cv, pts, 0.007, 0.08, 0.4)
    if dev.get("line"):
        pts = bezier(
            (g.x_st(g.y_man) + 0.1, g.y_man - 0.05),
            (g.x_car - 0.1, g.y_man),
            (g.x_car - 0.08, g.y_car + 0.05),
            7,
        )
        draw_tube(cv, pts, 0.005, 0.05, 0.45)
    for ex, ey in dev.get("ecg", []):
        ex = g.x_st(ey) - 0.08 + 0.4 * (ex + 0.5)
        sl = cv.box(ex - 0.03, ex + 0.03, ey - 0.03, ey + 0.03)
        if sl is not None:
            d = np.hypot(cv.x[sl] - ex, cv.y[sl] - ey)
            cv.A[sl] += (
                0.6 * _clip(1 - np.abs(d - 0.018) / 0.004, 0, 1) + 0.9 * (d < 0.006)
            ).astype(F32)
        pts = bezier((ex, ey), (ex - 0.1, ey - 0.1), (ex - 0.15, ey - 0.3), 4)
        draw_tube(cv, pts, 0.003, 0.0, 0.3)
    if dev.get("pacer"):
        px_, py_ = g.x_st(g.y_man + 0.15) - 0.1, g.y_man + 0.12
        sl = cv.box(px_ - 0.04, px_ + 0.04, py_ - 0.07, py_ + 0.07)
        if sl is not None:
            bx_ = np.abs(cv.x[sl] - px_) / 0.025
            by_ = np.abs(cv.y[sl] - py_) / 0.06
            cv.A[sl] += (2.2 * _clip((1.0 - np.maximum(bx_, by_)) / 0.15, 0, 1)).astype(F32)
        hx, hy = g.lung_point(0.12, 0.92, 1)
        pts = bezier((px_, py_), (g.x_car - 0.05, g.y_car + 0.1), (hx, hy), 8)
        draw_tube(cv, pts, 0.005, 0.1, 0.6)


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


def finish(
    img: np.ndarray, cohort: str, view: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Collimation, border and burned-in side marker.

    Returns the image (S, S) in [0, 1] and the exposed field (S, S) bool: the pixels that the
    collimator leaves visible (masks are clipped to it, as an annotator only draws what shows).
    """
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
    return _clip(out, 0.0, 1.0), inside > 0.5


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
        render_lateral(cv, anat, pose, fx, tex, rng.random(N_LAT_JITTER))
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
    img = acquire(cv.A, cohort, view, anat.soft_depth, rng)
    img, exposed = finish(img, cohort, view, rng)
    if masks is not None:
        for m in masks.values():
            m &= exposed
        split_zones(masks)
    return img, masks
