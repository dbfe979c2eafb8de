"""Helpers for headless-browser tests of the built book: serve the HTML on 127.0.0.1 and drive
Debian's chromium with playwright (never a browser that playwright downloads).

Usage in a test module::

    from browser import browser_page, serve

    def test_page(tmp_path):
        with serve(html_dir) as base, browser_page(tmp_path) as session:
            session.page.goto(base + "chapters/NAME.html")
            ...
            session.assert_offline()      # every request went to 127.0.0.1 (or data:/blob:)
            session.assert_no_console_errors()

``RADDINO_SKIP_BROWSER=1`` skips these tests (pytest.skip); otherwise a missing chromium or
playwright FAILS the test with a message saying how to install it.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path(os.environ.get("RADDINO_CHROMIUM", "/usr/bin/chromium"))

# As the machine's notes prescribe: no sandbox (root), no GPU, and none of chromium's own
# background traffic (updates, sync, field trials), which a closed network refuses noisily.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--no-default-browser-check",
]

LOCAL_HOSTS = frozenset({"127.0.0.1"})

# Console errors every page of this Jupyter Book 1 build shows, whatever is on it; they are not
# about widgets or assets and are ignored (exact texts, so anything new still fails a test):
KNOWN_PAGE_NOISE = {
    # pydata-sphinx-theme on a first visit (nothing stored in localStorage yet)
    "console.error: Got invalid theme mode: . Resetting to auto.",
    # sphinx-thebe's config script is put on each page twice by the JB1 build (thebe is off)
    "page error: Identifier 'THEBE_JS_URL' has already been declared",
}
# The browser asks every site for /favicon.ico; the book has none (a 404, not a page asset).
# The vendored html-manager 1.0.15 bundle's CSS names three Font Awesome files by hash; the
# browser fetches them lazily (only some runs, by timing), they are not vendored, and no widget
# here draws an icon. Vendoring them (book/vendor) would let these three entries go.
IGNORED_PATHS = (
    "/favicon.ico",
    "/@jupyter-widgets/1551f4f60c37af51121f.woff2",
    "/@jupyter-widgets/eeccf4f66002c6f2ba24.woff",
    "/@jupyter-widgets/be9ee23c0c6390141475.ttf",
)


def _ignored(url: str) -> bool:
    return urlsplit(url).path.endswith(IGNORED_PATHS)


LOCAL_SCHEMES = frozenset({"data", "blob", "about"})


def require_browser() -> None:
    """Skip when RADDINO_SKIP_BROWSER=1; fail (clearly) when chromium or playwright is missing."""
    if os.environ.get("RADDINO_SKIP_BROWSER", "0") == "1":
        pytest.skip("RADDINO_SKIP_BROWSER=1: headless-browser tests skipped")
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
            "(`make test` installs it with apt-get as root or with passwordless sudo; or run "
            "`apt-get install -y chromium`). Set RADDINO_SKIP_BROWSER=1 to skip these tests.",
            pytrace=False,
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail(
            "playwright is not installed in this environment: run `make setup` (it is pinned "
            "in requirements.lock). Set RADDINO_SKIP_BROWSER=1 to skip these tests.",
            pytrace=False,
        )


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


@contextlib.contextmanager
def serve(directory: str | Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on 127.0.0.1 (a free port) in a thread.

    Yields:
        the base URL, ending in ``/`` (e.g. ``http://127.0.0.1:40123/``).
    """
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="book-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class BrowserSession:
    """A playwright page plus everything it asked for and complained about."""

    page: Any
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    bad_responses: list[str] = field(default_factory=list)

    def external_requests(self) -> list[str]:
        """Requests to anything but 127.0.0.1 (data:, blob: and about: URLs are local)."""
        out = []
        for url in self.requests:
            parts = urlsplit(url)
            if parts.scheme in LOCAL_SCHEMES:
                continue
            if parts.scheme in {"http", "https", "ws", "wss"} and parts.hostname in LOCAL_HOSTS:
                continue
            out.append(url)
        return out

    def assert_offline(self) -> None:
        external = self.external_requests()
        assert not external, f"the page requested {len(external)} URL(s) off the machine: " + (
            ", ".join(external[:10])
        )

    def assert_no_console_errors(self) -> None:
        problems = [
            p
            for p in self.console_errors
            + self.page_errors
            + self.failed_requests
            + self.bad_responses
            if p not in KNOWN_PAGE_NOISE
        ]
        assert not problems, "browser errors:\n" + "\n".join(problems)


@contextlib.contextmanager
def browser_page(
    tmp_path: Path, *, viewport: tuple[int, int] = (1200, 900), device_scale_factor: float = 1
) -> Iterator[BrowserSession]:
    """Headless Debian chromium with a fresh profile under ``tmp_path``; one page, recorded.

    Calls :func:`require_browser` first (skip or fail with a clear message).
    """
    require_browser()
    from playwright.sync_api import sync_playwright

    profile = tmp_path / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    # Playwright must not look for (or fetch) a browser of its own.
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": viewport[0], "height": viewport[1]},
            device_scale_factor=device_scale_factor,
            service_workers="block",
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            session = BrowserSession(page)
            context.on("request", lambda req: session.requests.append(req.url))

            def on_console(msg: Any) -> None:
                where = str((msg.location or {}).get("url", ""))
                text = f"console.error: {msg.text}"
                if msg.type != "error" or text in KNOWN_PAGE_NOISE:
                    return
                if not _ignored(where):
                    session.console_errors.append(f"{text} (at {where})")

            page.on("console", on_console)
            page.on("pageerror", lambda exc: session.page_errors.append(f"page error: {exc}"))
            page.on(
                "requestfailed",
                lambda req: (
                    None
                    if _ignored(req.url)
                    else session.failed_requests.append(
                        f"request failed: {req.url} ({req.failure})"
                    )
                ),
            )
            page.on(
                "response",
                lambda resp: (
                    session.bad_responses.append(f"HTTP {resp.status}: {resp.url}")
                    if resp.status >= 400 and not _ignored(resp.url)
                    else None
                ),
            )
            page.set_default_timeout(30_000)
            yield session
        finally:
            context.close()
