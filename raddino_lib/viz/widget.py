"""``LandmarkSimilarity``: click a patch of a query X-ray, see its cosine similarity to every
patch of each target image, at once, in JupyterLab and in the static HTML book alike.

The widget is an :class:`anywidget.AnyWidget` whose JavaScript (``landmark_similarity.js``)
does all the work: it decodes the patch embeddings from the synced state, computes the cosine
similarities for the selected patch and paints the heatmaps. Python callbacks never run in the
static book (there is no kernel), so nothing interactive may depend on them.

Wire format (the synced traits):

* ``query_image`` / ``target_images``: PNG data URLs (grayscale, at most ``image_side`` px on
  the longer side).
* ``grid = [h, w]``, ``dim = D``: the patch grid and the embedding width.
* ``embeddings``: base64 of an int8 array ``[(1 + T), h * w, D]`` in C order; slab 0 holds the
  query's patches, slab ``1 + t`` those of target ``t``, patch ``(r, c)`` at row ``r * w + c``.
  Each vector is L2-normalised, then stored as ``round(127 * v)``. Norms are recomputed from
  the integers, so the cosine is exact for the quantised vectors (error about 1e-2 against
  float cosine). Size: ``(1 + T) * h * w * D * 4 / 3`` bytes in the page.
* ``landmark = [row, col]``: the selected query patch; a click (or the arrow keys) sets it.
* ``best``: per target the ``[row, col]`` of the most similar patch, kept up to date by Python
  (when ``landmark`` changes on the Python side) and by the page (written back to the kernel).

The patch grid is taken to tile the whole image: patch ``(r, c)`` covers rows
``[r * H / h, (r + 1) * H / h)`` and columns ``[c * W / w, (c + 1) * W / w)``. Pass the image
the model saw (after its resize/crop), not the original.

Heatmap colours are scaled per target from its own minimum to its maximum similarity
(``scale="minmax"``, the default: the most contrast; each target's caption prints the range)
or over the fixed range ``[-1, 1]`` (``scale="fixed"``: comparable across targets and clicks).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets as t

__all__ = ["LandmarkSimilarity", "encode_png", "quantize_patches"]

_HERE = Path(__file__).parent

QUANT_SCALE = 127


def _to_numpy(x: Any, what: str) -> np.ndarray:
    """A numpy array from a numpy array, a torch tensor (any device) or a nested sequence."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        x = x.detach().cpu().float().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - np.asarray accepts nearly everything
        raise ValueError(f"{what}: cannot be turned into an array ({exc})") from exc


def quantize_patches(patches: Any) -> np.ndarray:
    """L2-normalise each vector along the last axis and store it as int8 ``round(127 * v)``.

    Args:
        patches: float array ``[..., D]`` (numpy or torch).

    Returns:
        int8 array of the same shape. All-zero vectors stay zero (their similarity is 0).
    """
    v = _to_numpy(patches, "patches").astype(np.float64)
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    v = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
    return np.clip(np.rint(QUANT_SCALE * v), -QUANT_SCALE, QUANT_SCALE).astype(np.int8)


def encode_png(image: Any, *, what: str = "image", max_side: int | None = None) -> str:
    """A grayscale PNG data URL of a 2-D image.

    Args:
        image: ``[H, W]`` float in ``[0, 1]`` or uint8 (numpy or torch).
        what: the name used in error messages.
        max_side: if given, images larger than this on their longer side are downsampled
            (aspect kept) before encoding, to keep the page small.

    Raises:
        ValueError: not 2-D, empty, non-finite, floats outside ``[0, 1]`` or an unsupported
            dtype; the message says how to fix it.
    """
    from PIL import Image

    a = _to_numpy(image, what)
    if a.ndim != 2:
        raise ValueError(
            f"{what}: expected a 2-D grayscale image [H, W], got shape {tuple(a.shape)}"
            + (" (squeeze the channel axis, or convert RGB to gray)" if a.ndim == 3 else "")
        )
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{what}: the image is empty (shape {tuple(a.shape)})")
    if a.dtype == np.uint8:
        u8 = a
    elif a.dtype == np.bool_ or np.issubdtype(a.dtype, np.floating):
        f = a.astype(np.float64)
        if not np.all(np.isfinite(f)):
            raise ValueError(f"{what}: contains NaN or infinite values")
        lo, hi = float(f.min()), float(f.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ValueError(
                f"{what}: float pixel values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]; "
                "rescale first, e.g. (x - x.min()) / (x.max() - x.min())"
            )
        u8 = np.rint(np.clip(f, 0.0, 1.0) * 255).astype(np.uint8)
    else:
        raise ValueError(
            f"{what}: unsupported dtype {a.dtype}; pass floats in [0, 1] or uint8 "
            "(e.g. x.astype(np.float32) / x.max() for 16-bit DICOM pixels)"
        )
    img = Image.fromarray(np.ascontiguousarray(u8), mode="L")
    if max_side is not None and max(img.size) > max_side:
        scale = max_side / max(img.size)
        new = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(new, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _patch_grid(x: Any, what: str) -> np.ndarray:
    a = _to_numpy(x, what)
    if a.ndim != 3:
        raise ValueError(
            f"{what}: expected patch embeddings [h, w, D] (a grid of h x w patches of width D), "
            f"got shape {tuple(a.shape)}"
            + (
                "; reshape a token sequence [h * w, D] with .reshape(h, w, D) (drop the CLS "
                "token first)"
                if a.ndim == 2
                else ""
            )
        )
    if min(a.shape) < 1:
        raise ValueError(f"{what}: empty patch grid, shape {tuple(a.shape)}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{what}: expected numbers, got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what}: contains NaN or infinite values")
    return a


def _as_list(x: Any, single_ndim: int) -> list[Any]:
    """``x`` as a list of items: one item if it has ``single_ndim`` dims, else its elements."""
    if hasattr(x, "ndim"):
        return [x] if x.ndim == single_ndim else list(x)
    if isinstance(x, Sequence) and not isinstance(x, str | bytes):
        return list(x)
    raise ValueError(f"expected an array or a sequence of arrays, got {type(x).__name__}")


class LandmarkSimilarity(anywidget.AnyWidget):
    """Interactive patch-similarity heatmaps: click the query, every target updates.

    Build it with :meth:`from_patches`. See the module docstring for the wire format.

    Traits (synced with the page):
        query_image, target_images: PNG data URLs.
        query_label, target_labels: captions.
        grid: ``[h, w]``; dim: ``D``; embeddings: base64 int8 ``[(1 + T), h * w, D]``.
        landmark: ``[row, col]`` of the selected query patch (read it, or set it from Python).
        best: per target ``[row, col]`` of the most similar patch (read-only in spirit).
        size: display width of each image in CSS px. alpha: heatmap opacity in ``[0, 1]``.
        colormap: ``"viridis"`` or ``"inferno"``. scale: ``"minmax"`` (per target) or
        ``"fixed"`` (``[-1, 1]``).
    """

    _esm = _HERE / "landmark_similarity.js"
    _css = _HERE / "landmark_similarity.css"

    query_image = t.Unicode("").tag(sync=True)
    target_images = t.List(t.Unicode()).tag(sync=True)
    query_label = t.Unicode("query").tag(sync=True)
    target_labels = t.List(t.Unicode()).tag(sync=True)
    grid = t.List(t.Int(), default_value=[1, 1], minlen=2, maxlen=2).tag(sync=True)
    dim = t.Int(1).tag(sync=True)
    embeddings = t.Unicode("").tag(sync=True)
    landmark = t.List(t.Int(), default_value=[0, 0], minlen=2, maxlen=2).tag(sync=True)
    best = t.List(t.List(t.Int())).tag(sync=True)
    size = t.Int(256).tag(sync=True)
    alpha = t.Float(0.55).tag(sync=True)
    colormap = t.Enum(["viridis", "inferno"], default_value="viridis").tag(sync=True)
    scale = t.Enum(["minmax", "fixed"], default_value="minmax").tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        self._decoded: tuple[str, np.ndarray] | None = None
        super().__init__(**kwargs)
        if self.embeddings:
            self._update_best()

    # ----------------------------------------------------------------------------------------
    # Construction

    @classmethod
    def from_patches(
        cls,
        query_image: Any,
        query_patches: Any,
        targets: Any,
        target_patches: Any,
        *,
        labels: Sequence[str] | None = None,
        query_label: str = "query",
        landmark: Sequence[int] | None = None,
        size: int = 256,
        alpha: float = 0.55,
        colormap: str = "viridis",
        scale: str = "minmax",
        image_side: int | None = 512,
    ) -> LandmarkSimilarity:
        """Build the widget from images and their patch embeddings.

        Args:
            query_image: ``[H, W]`` float in ``[0, 1]`` or uint8 (numpy or torch).
            query_patches: ``[h, w, D]`` patch embeddings of the query (numpy or torch).
            targets: one target image ``[H', W']``, a sequence of them (sizes may differ), or
                an array ``[T, H', W']``.
            target_patches: ``[h, w, D]`` (one target), ``[T, h, w, D]`` or a sequence of
                ``[h, w, D]``; same ``h, w, D`` as the query.
            labels: ``T`` captions for the targets (default ``target 1`` ...).
            query_label: caption of the query.
            landmark: initial ``(row, col)`` (default: the centre patch).
            size: display width of each image in CSS px.
            alpha: heatmap opacity in ``[0, 1]``.
            colormap: ``"viridis"`` or ``"inferno"``.
            scale: ``"minmax"`` (each target's own range) or ``"fixed"`` (``[-1, 1]``).
            image_side: downsample images larger than this on their longer side (``None``:
                keep them as they are; the page gets heavier).

        Raises:
            ValueError: inconsistent shapes or counts, bad images, an out-of-grid landmark,
                bad display options; the message names the argument.
        """
        qp = _patch_grid(query_patches, "query_patches")
        h, w, d = qp.shape
        timgs = _as_list(targets, 2)
        tps = [
            _patch_grid(p, f"target_patches[{i}]")
            for i, p in enumerate(_as_list(target_patches, 3))
        ]
        if not timgs:
            raise ValueError("targets: at least one target image is needed")
        if len(timgs) != len(tps):
            raise ValueError(
                f"targets and target_patches differ in length: {len(timgs)} images but "
                f"{len(tps)} patch grids"
            )
        for i, p in enumerate(tps):
            if p.shape != qp.shape:
                raise ValueError(
                    f"target_patches[{i}]: shape {tuple(p.shape)} differs from query_patches "
                    f"{tuple(qp.shape)}; every image needs the same [h, w, D] patch grid"
                )
        n = len(timgs)
        if labels is None:
            labels = [f"target {i + 1}" for i in range(n)]
        labels = [str(s) for s in labels]
        if len(labels) != n:
            raise ValueError(f"labels: {len(labels)} labels for {n} targets")
        if landmark is None:
            landmark = (h // 2, w // 2)
        lm = [int(v) for v in landmark]
        if len(lm) != 2 or not (0 <= lm[0] < h and 0 <= lm[1] < w):
            raise ValueError(
                f"landmark: {tuple(landmark)} is not a (row, col) inside the {h} x {w} patch grid"
            )
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha: {alpha} is not in [0, 1]")
        if int(size) < 32:
            raise ValueError(f"size: {size} px is too small (use at least 32)")
        if colormap not in ("viridis", "inferno"):
            raise ValueError(f"colormap: {colormap!r} is not 'viridis' or 'inferno'")
        if scale not in ("minmax", "fixed"):
            raise ValueError(f"scale: {scale!r} is not 'minmax' or 'fixed'")

        q = quantize_patches(np.stack([qp.reshape(h * w, d), *(p.reshape(h * w, d) for p in tps)]))
        return cls(
            query_image=encode_png(query_image, what="query_image", max_side=image_side),
            target_images=[
                encode_png(img, what=f"targets[{i}]", max_side=image_side)
                for i, img in enumerate(timgs)
            ],
            query_label=str(query_label),
            target_labels=labels,
            grid=[h, w],
            dim=d,
            embeddings=base64.b64encode(q.tobytes()).decode("ascii"),
            landmark=lm,
            size=int(size),
            alpha=float(alpha),
            colormap=colormap,
            scale=scale,
        )

    # ----------------------------------------------------------------------------------------
    # The numbers (the same arithmetic as the page)

    def quantized(self) -> np.ndarray:
        """The decoded embeddings: int8 ``[(1 + T), h * w, D]`` (what the page uses)."""
        if self._decoded is not None and self._decoded[0] is self.embeddings:
            return self._decoded[1]
        h, w = self.grid
        n = 1 + len(self.target_images)
        raw = np.frombuffer(base64.b64decode(self.embeddings), dtype=np.int8)
        if raw.size != n * h * w * self.dim:
            raise ValueError(
                f"embeddings hold {raw.size} values, expected (1 + {n - 1}) * {h} * {w} * "
                f"{self.dim} = {n * h * w * self.dim}: build the widget with from_patches()"
            )
        arr = raw.reshape(n, h * w, self.dim)
        self._decoded = (self.embeddings, arr)
        return arr

    def similarity(self, landmark: Sequence[int] | None = None) -> np.ndarray:
        """Cosine similarity of query patch ``landmark`` (default: the current one) with every
        patch of every target, from the quantised embeddings the page uses.

        Returns:
            float64 ``[T, h, w]``; 0 where a vector is all zeros.
        """
        h, w = self.grid
        r, c = (int(v) for v in (self.landmark if landmark is None else landmark))
        if not (0 <= r < h and 0 <= c < w):
            raise ValueError(f"landmark ({r}, {c}) is outside the {h} x {w} patch grid")
        e = self.quantized().astype(np.int64)
        norms = np.sqrt((e * e).sum(axis=-1).astype(np.float64))  # [(1 + T), h * w]
        q = e[0, r * w + c]
        dots = (e[1:] @ q).astype(np.float64)  # [T, h * w], exact integers
        denom = norms[0, r * w + c] * norms[1:]
        sims = np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)
        return sims.reshape(-1, h, w)

    def best_matches(self, landmark: Sequence[int] | None = None) -> list[tuple[int, int]]:
        """Per target the ``(row, col)`` of the patch most similar to query patch ``landmark``
        (default: the current one); ties go to the first patch in row-major order."""
        sims = self.similarity(landmark)
        w = sims.shape[2]
        flat = sims.reshape(sims.shape[0], -1).argmax(axis=1)
        return [(int(i // w), int(i % w)) for i in flat]

    # ----------------------------------------------------------------------------------------
    # Validation and keeping `best` current on the Python side

    @t.validate("landmark")
    def _check_landmark(self, proposal: Any) -> list[int]:
        r, c = (int(v) for v in proposal["value"])
        h, w = self.grid
        if not (0 <= r < h and 0 <= c < w):
            raise t.TraitError(
                f"landmark ({r}, {c}) is outside the {h} x {w} patch grid: use 0 <= row < {h} "
                f"and 0 <= col < {w}"
            )
        return [r, c]

    @t.validate("alpha")
    def _check_alpha(self, proposal: Any) -> float:
        a = float(proposal["value"])
        if not 0.0 <= a <= 1.0:
            raise t.TraitError(f"alpha {a} is not in [0, 1]")
        return a

    @t.observe("landmark", "embeddings")
    def _on_landmark(self, _change: Any) -> None:
        if self.embeddings:
            self._update_best()

    def _update_best(self) -> None:
        best = [list(b) for b in self.best_matches()]
        if best != self.best:
            self.best = best
