"""Chapter 5's own page in a headless browser: its widgets answer clicks with no kernel.

The real chapter runs at `smoke` in a temporary project (own cache and results), the book is
built with that one chapter, served on 127.0.0.1 and opened in Debian's chromium (see
tests/browser.py; RADDINO_SKIP_BROWSER=1 skips, a missing chromium fails).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from browser import browser_page, require_browser, serve
from test_runner import REPO

from raddino_lib.runner import build_book

NAME = "05_attention"


def _project(root: Path) -> Path:
    (root / "chapters").mkdir(parents=True)
    shutil.copy2(REPO / "chapters" / f"{NAME}.py", root / "chapters" / f"{NAME}.py")
    for fname in ("_config.yml", "pyproject.toml"):
        shutil.copy2(REPO / fname, root / fname)
    (root / "book").mkdir()
    for src in (REPO / "book").glob("*"):
        if src.is_file() and src.suffix in {".md", ".bib"}:
            shutil.copy2(src, root / "book" / src.name)
    shutil.copytree(REPO / "book" / "vendor", root / "book" / "vendor")
    pages = sorted(p.stem for p in (root / "book").glob("*.md") if p.stem != "intro")
    toc = ["format: jb-book", "root: book/intro", "parts:", "  - caption: Reading",
           "    chapters:", *[f"      - file: book/{p}" for p in pages],
           "  - caption: Chapters", "    chapters:", f"      - file: chapters/{NAME}"]  # fmt: skip
    (root / "_toc.yml").write_text("\n".join(toc) + "\n")
    return root


@pytest.mark.slow
def test_chapter_widgets_work_in_the_static_page(tmp_path: Path, monkeypatch) -> None:
    require_browser()
    root = _project(tmp_path / "proj")
    monkeypatch.setenv("RADDINO_ROOT", str(root))
    html = build_book("smoke", root=root, chapters=[NAME], progress=False)
    page_file = html / "chapters" / f"{NAME}.html"
    size_kb = page_file.stat().st_size / 1024
    assert size_kb < 1500, f"{page_file} is {size_kb:.0f} KB"
    with serve(html) as base, browser_page(tmp_path) as session:
        page = session.page
        page.goto(base + f"chapters/{NAME}.html", wait_until="load")
        page.wait_for_function(
            "() => document.querySelectorAll(\".lms-root[data-ready='1']\").length === 2",
            timeout=45_000,
        )
        widget = page.locator(".lms-root").first
        canvas = widget.locator("canvas.lms-query")
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()
        assert box is not None

        def state() -> dict:
            return page.evaluate(
                """() => { const r = document.querySelector('.lms-root');
                  return {row: Number(r.dataset.row), col: Number(r.dataset.col),
                          readout: r.querySelector('.lms-readout').textContent,
                          heat: [...r.querySelectorAll('canvas.lms-target')]
                                 .map(c => c.toDataURL())}; }"""
            )

        grid = page.evaluate(  # [h, w] of the patch grid
            "() => JSON.parse(document.querySelector('.lms-root').dataset.grid || 'null')"
        )
        first = state()
        seen = [first]
        h, w = grid
        for r, c in [(0, 1), (h - 1, w - 2)]:
            x = box["x"] + (c + 0.5) * box["width"] / w
            y = box["y"] + (r + 0.5) * box["height"] / h
            page.mouse.click(x, y)
            page.wait_for_function(
                f"() => {{ const d = document.querySelector('.lms-root').dataset;"
                f" return d.row === '{r}' && d.col === '{c}'; }}",
                timeout=10_000,
            )
            now = state()
            assert now["readout"].startswith(f"query patch ({r}, {c})"), now["readout"]
            assert all(now["heat"][t] != prev["heat"][t] for prev in seen
                       for t in range(len(now["heat"])))  # fmt: skip
            seen.append(now)
        session.assert_offline()
        session.assert_no_console_errors()
