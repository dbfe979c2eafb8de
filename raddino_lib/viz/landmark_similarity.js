// LandmarkSimilarity: the frontend of raddino_lib.viz.widget.LandmarkSimilarity (anywidget).
//
// Everything is computed here, in the browser, from the synced state, so the widget is just as
// interactive in the static HTML book (no kernel: Python callbacks never run) as in JupyterLab.
// No library and no network access: the images are PNG data URLs and the embeddings a base64
// string in the widget state.
//
// State (see the Python class for the authoritative description):
//   query_image, target_images[T]   PNG data URLs
//   query_label, target_labels[T]   captions
//   grid = [h, w], dim = D          patch grid and embedding width
//   embeddings                      base64 of int8 [(1 + T), h*w, D], row-major; slab 0 is the
//                                   query, slab 1 + t target t. Each vector was L2-normalised
//                                   and rounded to round(127 * v); norms are recomputed here, so
//                                   the cosine is exact for the quantised vectors.
//   landmark = [row, col]           selected query patch (click, arrow keys, or Python)
//   best = [[row, col], ...]        per target the most similar patch (written back here)
//   size, alpha, colormap, scale    display options
//
// Cosine similarity s = (q . t) / (|q| |t|) with integer dot products (exact in float64), and
// 0 where a vector is all zeros. Ties go to the first patch in row-major order (numpy argmax).
// This is the arithmetic of LandmarkSimilarity.similarity(), in the same order, so Python and
// the page agree bit for bit.

// 17 evenly spaced stops of matplotlib's colormaps, interpolated linearly to 256 entries.
const STOPS = {
  viridis: [
    [68, 1, 84], [72, 24, 106], [71, 45, 123], [66, 64, 134], [59, 82, 139], [51, 99, 141],
    [44, 114, 142], [38, 130, 142], [33, 145, 140], [31, 160, 136], [40, 174, 128],
    [63, 188, 115], [94, 201, 98], [132, 212, 75], [173, 220, 48], [216, 226, 25],
    [253, 231, 37],
  ],
  inferno: [
    [0, 0, 4], [11, 7, 36], [33, 12, 74], [61, 9, 101], [87, 16, 110], [113, 25, 110],
    [138, 34, 106], [163, 44, 97], [188, 55, 84], [210, 70, 68], [228, 90, 49], [241, 115, 29],
    [249, 142, 9], [252, 172, 17], [249, 203, 53], [242, 234, 105], [252, 255, 164],
  ],
};

const LUTS = {};

function lut(name) {
  const key = STOPS[name] ? name : "viridis";
  if (!LUTS[key]) {
    const stops = STOPS[key];
    const table = new Uint8ClampedArray(256 * 3);
    for (let i = 0; i < 256; i++) {
      const x = (i / 255) * (stops.length - 1);
      const j = Math.min(Math.floor(x), stops.length - 2);
      const f = x - j;
      for (let c = 0; c < 3; c++) {
        table[i * 3 + c] = Math.round(stops[j][c] * (1 - f) + stops[j + 1][c] * f);
      }
    }
    LUTS[key] = table;
  }
  return LUTS[key];
}

function gradientCss(name) {
  const stops = STOPS[name] || STOPS.viridis;
  const parts = stops.map(
    (s, i) => `rgb(${s[0]}, ${s[1]}, ${s[2]}) ${((100 * i) / (stops.length - 1)).toFixed(1)}%`,
  );
  return `linear-gradient(to right, ${parts.join(", ")})`;
}

function fmt(x) {
  return (x < 0 ? "\u2212" : "") + Math.abs(x).toFixed(2);
}

// ---------------------------------------------------------------------------------------------
// Embeddings

function decodeBase64(b64) {
  const bin = atob(b64 || "");
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Int8Array(bytes.buffer);
}

// Decode the state into {emb, norms, h, w, D, T} or throw an Error saying what is inconsistent.
function decodeState(model) {
  const grid = model.get("grid") || [];
  const [h, w] = grid;
  const D = model.get("dim");
  const T = (model.get("target_images") || []).length;
  if (!(h > 0 && w > 0 && D > 0)) {
    throw new Error(`grid ${JSON.stringify(grid)} and dim ${D} must be positive`);
  }
  const emb = decodeBase64(model.get("embeddings"));
  const expected = (1 + T) * h * w * D;
  if (emb.length !== expected) {
    throw new Error(
      `embeddings hold ${emb.length} values, expected (1 + ${T}) * ${h} * ${w} * ${D} = ` +
        `${expected}`,
    );
  }
  const n = (1 + T) * h * w;
  const norms = new Float64Array(n);
  for (let p = 0; p < n; p++) {
    let s = 0;
    const off = p * D;
    for (let k = 0; k < D; k++) s += emb[off + k] * emb[off + k];
    norms[p] = Math.sqrt(s);
  }
  return { emb, norms, h, w, D, T };
}

// Similarities of query patch (r, c) with every patch of every target.
// Returns {sims: Float64Array [T * h * w], best: [[r, c], ...], lo: [...], hi: [...], top: [...]}
function similarities(data, r, c) {
  const { emb, norms, h, w, D, T } = data;
  const hw = h * w;
  const q = r * w + c;
  const qoff = q * D;
  const nq = norms[q];
  const sims = new Float64Array(T * hw);
  const best = [];
  const lo = [];
  const hi = [];
  const top = [];
  for (let t = 0; t < T; t++) {
    let bi = 0;
    let bv = -Infinity;
    let mn = Infinity;
    for (let p = 0; p < hw; p++) {
      const gp = (1 + t) * hw + p;
      const off = gp * D;
      let dot = 0;
      for (let k = 0; k < D; k++) dot += emb[qoff + k] * emb[off + k];
      const denom = nq * norms[gp];
      const s = denom > 0 ? dot / denom : 0;
      sims[t * hw + p] = s;
      if (s > bv) {
        bv = s;
        bi = p;
      }
      if (s < mn) mn = s;
    }
    best.push([Math.floor(bi / w), bi % w]);
    lo.push(mn);
    hi.push(bv);
    top.push(bv);
  }
  return { sims, best, lo, hi, top };
}

// ---------------------------------------------------------------------------------------------
// Drawing helpers

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("could not decode an image of the widget state"));
    img.src = src;
  });
}

function el(tag, cls, parent) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (parent) parent.appendChild(node);
  return node;
}

// Size a canvas to `cssW` x `cssH` CSS px with a backing store of devicePixelRatio x that.
function sizeCanvas(canvas, cssW, cssH) {
  const dpr = Math.max(1, Math.min(window.devicePixelRatio || 1, 4));
  const pw = Math.max(1, Math.round(cssW * dpr));
  const ph = Math.max(1, Math.round(cssH * dpr));
  if (canvas.width !== pw) canvas.width = pw;
  if (canvas.height !== ph) canvas.height = ph;
  canvas.style.width = `${cssW}px`;
  canvas.style.height = `${cssH}px`;
}

// Outline patch (r, c) of an h x w grid on a canvas (dark halo + light line).
function markPatch(ctx, canvas, h, w, r, c, color) {
  const pw = canvas.width / w;
  const ph = canvas.height / h;
  const lw = Math.max(1.5, canvas.width / 200);
  const x = c * pw;
  const y = r * ph;
  ctx.save();
  ctx.lineWidth = lw * 2.2;
  ctx.strokeStyle = "rgba(0, 0, 0, 0.75)";
  ctx.strokeRect(x, y, pw, ph);
  ctx.lineWidth = lw;
  ctx.strokeStyle = color;
  ctx.strokeRect(x, y, pw, ph);
  // crosshair ticks outside the patch, so the patch itself stays visible
  const cx = x + pw / 2;
  const cy = y + ph / 2;
  const tick = Math.max(pw, ph) * 0.9;
  ctx.beginPath();
  ctx.moveTo(cx, y - tick);
  ctx.lineTo(cx, y);
  ctx.moveTo(cx, y + ph);
  ctx.lineTo(cx, y + ph + tick);
  ctx.moveTo(x - tick, cy);
  ctx.lineTo(x, cy);
  ctx.moveTo(x + pw, cy);
  ctx.lineTo(x + pw + tick, cy);
  ctx.stroke();
  ctx.restore();
}

// ---------------------------------------------------------------------------------------------
// The view

function render({ model, el: host }) {
  const root = el("div", "lms-root", host);
  root.dataset.ready = "0";
  const legend = el("div", "lms-legend", root);
  const legendText = el("span", "lms-legend-text", legend);
  const bar = el("span", "lms-colorbar", legend);
  const barText = el("span", "lms-colorbar-text", legend);
  const panels = el("div", "lms-panels", root);
  const readout = el("div", "lms-readout", root);
  readout.setAttribute("aria-live", "polite");
  const error = el("div", "lms-error", root);

  let data = null; // decoded embeddings
  let images = null; // {query: Image, targets: [Image]}
  let queryCanvas = null;
  let querySub = null;
  let targetCanvases = [];
  let targetCaptions = [];
  let imageToken = 0;

  function showError(message) {
    error.textContent = `LandmarkSimilarity: ${message}`;
    error.style.display = "block";
    console.error(`[LandmarkSimilarity] ${message}`);
  }

  function commit() {
    try {
      model.save_changes(); // a no-op without a kernel (static page)
    } catch (e) {
      console.warn("[LandmarkSimilarity] could not sync with the kernel", e);
    }
  }

  function landmark() {
    const lm = model.get("landmark") || [0, 0];
    const r = Math.min(Math.max(lm[0] | 0, 0), data.h - 1);
    const c = Math.min(Math.max(lm[1] | 0, 0), data.w - 1);
    return [r, c];
  }

  // A click or key: set the landmark (change:landmark -> redraw(), which updates `best`), then
  // send both to the kernel in one message.
  let local = false;
  function setLandmark(r, c) {
    const [r0, c0] = landmark();
    if (r === r0 && c === c0) return;
    local = true;
    try {
      model.set("landmark", [r, c]);
    } finally {
      local = false;
    }
    commit();
  }

  // A change from the kernel (or a display option): redraw, and send `best` back if it moved.
  function redraw() {
    if (draw() && !local) commit();
  }

  function build() {
    panels.textContent = "";
    const labels = model.get("target_labels") || [];
    const qfig = el("figure", "lms-panel", panels);
    const qcap = el("figcaption", "lms-caption", qfig);
    qcap.textContent = model.get("query_label") || "query";
    queryCanvas = el("canvas", "lms-query", qfig);
    queryCanvas.tabIndex = 0;
    queryCanvas.setAttribute("role", "application");
    queryCanvas.setAttribute(
      "aria-label",
      "query image: click a point, or focus and use the arrow keys, to choose a patch",
    );
    queryCanvas.addEventListener("click", onClick);
    queryCanvas.addEventListener("keydown", onKey);
    querySub = el("div", "lms-subcaption", qfig);
    targetCanvases = [];
    targetCaptions = [];
    (model.get("target_images") || []).forEach((_, t) => {
      const fig = el("figure", "lms-panel", panels);
      const cap = el("figcaption", "lms-caption", fig);
      cap.textContent = labels[t] || `target ${t + 1}`;
      const canvas = el("canvas", "lms-target", fig);
      canvas.setAttribute("role", "img");
      canvas.dataset.index = String(t);
      const sub = el("div", "lms-subcaption", fig);
      targetCanvases.push(canvas);
      targetCaptions.push(sub);
    });
  }

  function layout() {
    const size = Math.max(32, model.get("size") || 256);
    const fit = (img) => [size, Math.max(1, Math.round((size * img.naturalHeight) / img.naturalWidth))];
    sizeCanvas(queryCanvas, ...fit(images.query));
    targetCanvases.forEach((canvas, t) => sizeCanvas(canvas, ...fit(images.targets[t])));
  }

  // Paint everything for the current state; returns true when it changed `best` (unsent).
  function draw() {
    if (!data || !images) return false;
    const [r, c] = landmark();
    const { sims, best, lo, hi, top } = similarities(data, r, c);
    const { h, w } = data;
    const hw = h * w;
    const fixed = model.get("scale") === "fixed";
    const cmap = model.get("colormap") || "viridis";
    const table = lut(cmap);
    const alpha = Math.min(Math.max(Number(model.get("alpha")), 0), 1);

    // query
    let ctx = queryCanvas.getContext("2d");
    ctx.imageSmoothingEnabled = true;
    ctx.clearRect(0, 0, queryCanvas.width, queryCanvas.height);
    ctx.drawImage(images.query, 0, 0, queryCanvas.width, queryCanvas.height);
    markPatch(ctx, queryCanvas, h, w, r, c, "#ff4d4d");
    querySub.textContent = `patch (${r}, ${c}) of ${h} \u00d7 ${w}: click, or arrow keys`;

    // targets: image, heatmap (one pixel per patch, scaled up without smoothing), best match
    const heat = document.createElement("canvas");
    heat.width = w;
    heat.height = h;
    const hctx = heat.getContext("2d");
    const pixels = hctx.createImageData(w, h);
    const parts = [];
    targetCanvases.forEach((canvas, t) => {
      const a = fixed ? -1 : lo[t];
      const b = fixed ? 1 : hi[t];
      const span = b - a > 1e-12 ? b - a : 1;
      for (let p = 0; p < hw; p++) {
        const v = (sims[t * hw + p] - a) / span;
        const i = Math.min(255, Math.max(0, Math.round(v * 255)));
        pixels.data[p * 4] = table[i * 3];
        pixels.data[p * 4 + 1] = table[i * 3 + 1];
        pixels.data[p * 4 + 2] = table[i * 3 + 2];
        pixels.data[p * 4 + 3] = 255;
      }
      hctx.putImageData(pixels, 0, 0);
      ctx = canvas.getContext("2d");
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      ctx.imageSmoothingEnabled = true;
      ctx.globalAlpha = 1;
      ctx.drawImage(images.targets[t], 0, 0, canvas.width, canvas.height);
      ctx.imageSmoothingEnabled = false;
      ctx.globalAlpha = alpha;
      ctx.drawImage(heat, 0, 0, canvas.width, canvas.height);
      ctx.globalAlpha = 1;
      markPatch(ctx, canvas, h, w, best[t][0], best[t][1], "#ffffff");
      const label = (model.get("target_labels") || [])[t] || `target ${t + 1}`;
      canvas.setAttribute(
        "aria-label",
        `${label}: similarity heatmap, best match patch (${best[t][0]}, ${best[t][1]})`,
      );
      targetCaptions[t].textContent =
        `best (${best[t][0]}, ${best[t][1]}) sim ${fmt(top[t])}; ` +
        `colours ${fmt(a)} \u2192 ${fmt(b)}`;
      const name = targetCanvases.length > 1 ? `${label}: ` : "";
      parts.push(`${name}best match (${best[t][0]}, ${best[t][1]}) sim ${top[t].toFixed(2)}`);
    });

    legendText.textContent =
      "Cosine similarity of every patch to the selected query patch (red); white: best match. " +
      (fixed ? "Colours span [\u22121, 1]:" : "Colours span each target's own min to max:");
    bar.style.background = gradientCss(cmap);
    barText.textContent = fixed ? "\u22121 \u2192 1" : "min \u2192 max";
    readout.textContent = `query patch (${r}, ${c}) -> ${parts.join(" | ")}`;
    root.dataset.row = String(r);
    root.dataset.col = String(c);
    root.dataset.best = JSON.stringify(best);
    root.dataset.grid = JSON.stringify(model.get("grid") || []);
    root.dataset.ready = "1";

    const old = JSON.stringify(model.get("best") || []);
    if (old === JSON.stringify(best)) return false;
    model.set("best", best);
    return true;
  }

  function onClick(ev) {
    if (!data) return;
    const rect = queryCanvas.getBoundingClientRect(); // CSS box; canvas pixels may differ
    if (rect.width <= 0 || rect.height <= 0) return;
    const x = (ev.clientX - rect.left) / rect.width;
    const y = (ev.clientY - rect.top) / rect.height;
    const c = Math.min(data.w - 1, Math.max(0, Math.floor(x * data.w)));
    const r = Math.min(data.h - 1, Math.max(0, Math.floor(y * data.h)));
    queryCanvas.focus({ preventScroll: true });
    setLandmark(r, c);
  }

  function onKey(ev) {
    if (!data) return;
    const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    const m = moves[ev.key];
    if (!m) return;
    ev.preventDefault();
    const step = ev.shiftKey ? 4 : 1;
    const [r, c] = landmark();
    setLandmark(
      Math.min(data.h - 1, Math.max(0, r + m[0] * step)),
      Math.min(data.w - 1, Math.max(0, c + m[1] * step)),
    );
  }

  function redecode() {
    try {
      data = decodeState(model);
      error.style.display = "none";
    } catch (e) {
      data = null;
      showError(e.message);
    }
  }

  async function reload() {
    const token = ++imageToken;
    root.dataset.ready = "0";
    build();
    redecode();
    let loaded;
    try {
      loaded = {
        query: await loadImage(model.get("query_image")),
        targets: await Promise.all((model.get("target_images") || []).map(loadImage)),
      };
    } catch (e) {
      showError(e.message);
      return;
    }
    if (token !== imageToken) return; // a newer reload started meanwhile
    images = loaded;
    layout();
    redraw();
  }

  const onData = () => {
    redecode();
    redraw();
  };
  const onLayout = () => {
    if (!images) return;
    layout();
    redraw();
  };
  const handlers = [
    ["change:landmark change:alpha change:colormap change:scale", redraw],
    ["change:embeddings change:grid change:dim", onData],
    ["change:size", onLayout],
    ["change:query_image change:target_images change:target_labels change:query_label", reload],
  ];
  for (const [events, fn] of handlers) {
    for (const ev of events.split(" ")) model.on(ev, fn);
  }
  window.addEventListener("resize", onLayout); // also fires when devicePixelRatio changes

  reload();

  return () => {
    for (const [events, fn] of handlers) {
      for (const ev of events.split(" ")) model.off(ev, fn);
    }
    window.removeEventListener("resize", onLayout);
    imageToken++;
  };
}

export default { render };
