"""Headless Chromium (Debian's /usr/bin/chromium driven by Playwright) for browser tests:
fixtures ``chromium`` (one browser per module) and ``ui_page`` (a fresh page on the
session's UI that fails the test if the page throws, logs an error or opens a dialog)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runstream.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
# No GPU, no sandbox as root, no background traffic (the network is closed), a fresh profile.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright import sync_api

    from runstream.query_api import ui

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/install-system-deps.sh` (installs Debian's chromium)")
    if not (ui.DIST / "index.html").is_file():
        pytest.fail(f"the web UI is not built ({ui.DIST}): run `make install` or `cd ui && npm ci && npm run build`")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture()
def console_allowed() -> list[str]:
    """Substrings of console errors a test provokes on purpose (e.g. a request it makes
    fail); ``ui_page`` tolerates those. Empty unless the test appends to it."""
    return []


@pytest.fixture()
def ui_page(chromium: Any, services: Settings, tmp_path: Path, console_allowed: list[str]) -> Iterator[Any]:
    """A fresh page (downloads accepted into ``tmp_path``)."""
    context = chromium.new_context(base_url=services.api_url, viewport={"width": 1400, "height": 1000},
                                   accept_downloads=True)
    context.set_default_timeout(30_000)
    pg = context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

    def on_console(msg: Any) -> None:
        # a 400 the page asked for on purpose (a malformed search) is logged by Chromium too
        if msg.type == "error" and "400 (Bad Request)" not in msg.text \
                and not any(allowed in msg.text for allowed in console_allowed):
            problems.append(f"console error: {msg.text}")

    def on_dialog(dialog: Any) -> None:
        problems.append(f"dialog opened: {dialog.message}")
        dialog.dismiss()

    pg.on("console", on_console)
    pg.on("dialog", on_dialog)
    yield pg
    context.close()
    assert not problems, problems
