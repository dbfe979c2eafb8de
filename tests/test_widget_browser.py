"""The LandmarkSimilarity widget in the static book, in a real (headless) browser.

A one-chapter book is built through the project's own machinery (papermill stores the widget
state in the notebook; Jupyter Book embeds it in the page), served on 127.0.0.1 and opened in
Debian's chromium. Clicking the query image must update the heatmaps with no kernel, the
widget must report the patch under the click, and the page must load nothing from off the
machine (MathJax and the widget JS are vendored, see book/vendor/README.md).

RADDINO_SKIP_BROWSER=1 skips the browser part; a missing chromium fails it (tests/browser.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from browser import browser_page, require_browser, serve
from test_runner import REPO, write_project

from raddino_lib.runner import build_book

VENDOR = REPO / "book" / "vendor"

# Synthetic chapter code (no braces: write_project formats the body with str.format). Patch
# embeddings are random per patch; target 1 is the query's own grid plus a little noise (best
# match = the clicked patch), target 2 is the query's grid flipped upside down (best match =
# the mirrored row).
WIDGET_CODE = textwrap.dedent(
    """\
    import numpy as np

    from raddino_lib.viz import LandmarkSimilarity

    rng = np.random.default_rng(7)
    H = W = 64
    h = w = 8
    D = 24
    yy, xx = np.mgrid[0:H, 0:W] / (H - 1)
    query = 0.2 + 0.6 * np.exp(-((xx - 0.5) ** 2 + (yy - 0.45) ** 2) / 0.08)
    flipped = query[::-1].copy()
    patches = rng.normal(size=(h, w, D))
    same = patches + 0.05 * rng.normal(size=(h, w, D))
    mirror = patches[::-1] + 0.05 * rng.normal(size=(h, w, D))
    widget = LandmarkSimilarity.from_patches(
        query, patches, [query, flipped], [same, mirror],
        labels=["same image", "flipped"], landmark=(4, 4), size=192,
    )
    """
)

CHAPTER = (
    "# %% [markdown]\n"
    "# # Widget page\n"
    "#\n"
    "# Similarity is a cosine; a little math for MathJax: $x^2 + y^2$.\n"
    "\n"
    "# %%\n" + WIDGET_CODE + "\n"
    "# %%\n"
    "widget\n"
)


def _widget() -> Any:
    """The same widget as the chapter's, built in this process (no kernel needed)."""
    scope: dict[str, Any] = {}
    exec(WIDGET_CODE, scope)
    return scope["widget"]


# ---------------------------------------------------------------------------------------------
# The vendored files (no browser needed)


def test_vendored_files_match_their_sha256sums() -> None:
    sums = (VENDOR / "SHA256SUMS").read_text().splitlines()
    assert sums, "book/vendor/SHA256SUMS is empty: run book/vendor/fetch.sh"
    base = VENDOR / "extra" / "vendor"
    listed = set()
    for line in sums:
        digest, rel = line.split(maxsplit=1)
        listed.add(rel)
        path = base / rel
        assert path.is_file(), f"{path} is listed in SHA256SUMS but missing"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{path} was modified"
    on_disk = {
        p.relative_to(base).as_posix()
        for p in base.rglob("*")
        if p.is_file() and p.name != "widgets-config.js"
    }
    assert on_disk == listed, f"unlisted files: {sorted(on_disk - listed)}"


def test_config_points_at_vendored_files() -> None:
    cfg = yaml.safe_load((REPO / "_config.yml").read_text())["sphinx"]["config"]
    extra = cfg["html_extra_path"]
    assert extra == ["book/vendor/extra"]
    out = REPO / extra[0]  # what Sphinx copies to the root of the HTML output
    urls = [cfg["mathjax_path"], *cfg["nb_ipywidgets_js"]]
    for url in urls:
        assert "://" not in url, f"{url}: loads from the network"
        # Sphinx joins such paths under _static/: "../vendor/x" means <html>/vendor/x
        assert url.startswith("../vendor/"), url
        assert (out / url.removeprefix("../")).is_file(), url
    config_js = (out / "vendor" / "widgets-config.js").read_text()
    module = re.search(r'anywidget: base \+ "([^"]+)"', config_js)
    assert module and (out / "vendor" / (module.group(1) + ".js")).is_file()


# ---------------------------------------------------------------------------------------------
# The built page in chromium


def _patch_center(
    box: dict[str, float], grid: tuple[int, int], r: int, c: int
) -> tuple[float, float]:
    h, w = grid
    return box["x"] + (c + 0.5) * box["width"] / w, box["y"] + (r + 0.5) * box["height"] / h


def _wait(session: Any, predicate: str, timeout: float = 10_000) -> None:
    """page.wait_for_function, failing with what the widget shows and what the page logged."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        session.page.wait_for_function(predicate, timeout=timeout)
    except PlaywrightTimeout:
        shown = session.page.evaluate(
            "() => { const r = document.querySelector('.lms-root');"
            " return r ? JSON.stringify(r.dataset) + ' ' + r.textContent : 'no .lms-root'; }"
        )
        pytest.fail(
            f"timed out waiting for {predicate}\nwidget: {shown}\n"
            f"console errors: {session.console_errors + session.page_errors}"
        )


@pytest.mark.slow
def test_widget_is_interactive_offline_in_the_static_book(tmp_path: Path) -> None:
    require_browser()  # fail or skip before spending time on the build
    root = write_project(tmp_path / "proj", {"widget": CHAPTER})
    html = build_book("smoke", root=root, progress=False)
    page_file = html / "chapters" / "widget.html"
    text = page_file.read_text(encoding="utf-8")
    assert "application/vnd.jupyter.widget-state+json" in text
    assert "../_static/../vendor/html-manager-1.0.15/embed-amd.js" in text
    assert "../_static/../vendor/mathjax-3.2.2/tex-chtml.js" in text
    assert not re.search(r"""<script[^>]+src=["']https?:""", text)

    expected = _widget()
    grid = tuple(expected.grid)

    with serve(html) as base, browser_page(tmp_path) as session:
        page = session.page
        page.goto(base + "chapters/widget.html", wait_until="load")
        root_sel = ".lms-root[data-ready='1']"
        page.wait_for_selector(root_sel, timeout=45_000)
        page.wait_for_selector("mjx-container", timeout=20_000)  # MathJax typeset the math

        def state() -> dict[str, Any]:
            return page.evaluate(
                """() => {
                  const root = document.querySelector('.lms-root');
                  return {
                    row: Number(root.dataset.row), col: Number(root.dataset.col),
                    best: JSON.parse(root.dataset.best),
                    readout: root.querySelector('.lms-readout').textContent,
                    heat: [...root.querySelectorAll('canvas.lms-target')].map(c => c.toDataURL()),
                    query: root.querySelector('canvas.lms-query').toDataURL(),
                  };
                }"""
            )

        before = state()
        assert (before["row"], before["col"]) == (4, 4)
        assert before["best"] == [list(b) for b in expected.best_matches((4, 4))]
        assert len(before["heat"]) == 2

        canvas = page.locator("canvas.lms-query")
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()  # viewport coordinates, CSS px
        assert box is not None
        seen = [before]
        for r, c in [(1, 2), (6, 5)]:
            page.mouse.click(*_patch_center(box, grid, r, c))
            _wait(
                session,
                f"() => {{ const d = document.querySelector('.lms-root').dataset;"
                f" return d.row === '{r}' && d.col === '{c}'; }}",
            )
            now = state()
            assert (now["row"], now["col"]) == (r, c)
            assert now["readout"].startswith(f"query patch ({r}, {c}) -> "), now["readout"]
            # the JS and numpy agree on the best matches (same quantised embeddings)
            py_best = [list(b) for b in expected.best_matches((r, c))]
            assert now["best"] == py_best
            assert py_best == [[r, c], [grid[0] - 1 - r, c]]  # same image; flipped image
            assert f"best match ({r}, {c})" in now["readout"]
            sims = expected.similarity((r, c))
            assert f"sim {sims[0].max():.2f}" in now["readout"]
            for prev in seen:
                for t in range(2):
                    assert now["heat"][t] != prev["heat"][t], f"target {t} heatmap did not change"
                assert now["query"] != prev["query"]
            seen.append(now)

        # keyboard: the focused query canvas moves the landmark with the arrow keys
        page.keyboard.press("ArrowLeft")
        _wait(session, "() => document.querySelector('.lms-root').dataset.col === '4'")
        assert state()["row"] == 6

        requested = "\n".join(session.requests)
        assert "/vendor/anywidget-0.11.0/index.js" in requested
        assert "/vendor/requirejs-2.3.8/require.js" in requested
        session.assert_offline()
        session.assert_no_console_errors()
    # (the page JSON state is what papermill saved: the initial landmark's best matches)
    state_json = re.search(
        r'<script type="application/vnd.jupyter.widget-state\+json">(.*?)</script>', text, re.S
    )
    assert state_json
    states = json.loads(state_json.group(1))["state"].values()
    widget_states = [s["state"] for s in states if s["state"].get("_view_name") == "AnyView"]
    assert len(widget_states) == 1 and widget_states[0]["landmark"] == [4, 4]


# ---------------------------------------------------------------------------------------------
# The widget's JavaScript alone, with a stand-in for the kernel-side model

HARNESS = """<!doctype html>
<html><head><meta charset="utf-8"><style>CSS</style></head>
<body><div id="host"></div>
<script type="module">
import widget from "./landmark_similarity.js";
// The parts of the anywidget model API the widget uses. set() buffers a change and fires
// change:NAME (as Backbone does); save_changes() records what a kernel would receive;
// kernelSet() is a change arriving from the kernel (nothing to send back).
class FakeModel {
  constructor(state) { this.state = state; this.handlers = {}; this.saves = []; this.pending = {}; }
  get(k) { return this.state[k]; }
  set(k, v) {
    if (JSON.stringify(this.state[k]) === JSON.stringify(v)) return;
    this.state[k] = v; this.pending[k] = v; this.fire(k);
  }
  kernelSet(k, v) { this.state[k] = v; this.fire(k); }
  fire(k) { for (const f of (this.handlers["change:" + k] || []).slice()) f(); }
  on(ev, f) { (this.handlers[ev] ||= []).push(f); }
  off(ev, f) { this.handlers[ev] = (this.handlers[ev] || []).filter((g) => g !== f); }
  save_changes() {
    if (Object.keys(this.pending).length) this.saves.push(this.pending);
    this.pending = {};
  }
  listeners() { return Object.values(this.handlers).reduce((n, l) => n + l.length, 0); }
}
window.model = new FakeModel(STATE);
window.cleanup = widget.render({ model: window.model, el: document.getElementById("host") });
</script></body></html>
"""


def test_widget_js_syncs_like_a_kernel_widget(tmp_path: Path) -> None:
    """Clicks send landmark + best in one message; kernel-side changes redraw and send back
    only what moved; a devicePixelRatio of 2 still maps clicks to the right patch."""
    require_browser()
    wdg = _widget()
    site = tmp_path / "site"
    site.mkdir()
    (site / "landmark_similarity.js").write_text(str(wdg._esm), encoding="utf-8")
    traits = [
        "query_image", "target_images", "query_label", "target_labels", "grid", "dim",
        "embeddings", "landmark", "best", "size", "alpha", "colormap", "scale",
    ]  # fmt: skip
    state = {k: getattr(wdg, k) for k in traits}
    page_html = HARNESS.replace("CSS", str(wdg._css)).replace("STATE", json.dumps(state))
    (site / "index.html").write_text(page_html, encoding="utf-8")
    grid = tuple(wdg.grid)

    with serve(site) as base, browser_page(tmp_path, device_scale_factor=2) as session:
        page = session.page
        page.goto(base + "index.html", wait_until="load")
        page.wait_for_selector(".lms-root[data-ready='1']", timeout=20_000)
        dims = page.evaluate(
            "() => { const c = document.querySelector('canvas.lms-query');"
            " return [c.width, c.getBoundingClientRect().width]; }"
        )
        assert dims == [2 * wdg.size, wdg.size]  # backing store at devicePixelRatio 2
        assert page.evaluate("() => window.model.saves") == []  # nothing to send at first

        canvas = page.locator("canvas.lms-query")
        box = canvas.bounding_box()
        assert box is not None
        page.mouse.click(*_patch_center(box, grid, 2, 6))
        _wait(session, "() => window.model.saves.length === 1")
        saves = page.evaluate("() => window.model.saves")
        assert saves == [{"landmark": [2, 6], "best": [list(b) for b in wdg.best_matches((2, 6))]}]

        # the kernel moves the landmark: the page redraws and sends back the new best matches
        page.evaluate("() => window.model.kernelSet('landmark', [7, 0])")
        _wait(session, "() => document.querySelector('.lms-root').dataset.row === '7'")
        saves = page.evaluate("() => window.model.saves")
        assert saves[-1] == {"best": [list(b) for b in wdg.best_matches((7, 0))]}
        # a display option: redraw at the new size, nothing to send
        page.evaluate("() => window.model.kernelSet('size', 100)")
        width = page.evaluate(
            "() => document.querySelector('canvas.lms-query').getBoundingClientRect().width"
        )
        assert width == 100
        assert len(page.evaluate("() => window.model.saves")) == 2
        # keyboard: arrows move the landmark and send it
        canvas.focus()
        page.keyboard.press("ArrowUp")
        _wait(session, "() => window.model.saves.length === 3")
        assert page.evaluate("() => window.model.saves[2].landmark") == [6, 0]
        # the view's cleanup removes every listener it added
        assert page.evaluate("() => window.model.listeners()") > 0
        page.evaluate("() => window.cleanup()")
        assert page.evaluate("() => window.model.listeners()") == 0
        session.assert_offline()
        session.assert_no_console_errors()
