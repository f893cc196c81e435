"""What the browser tests share: Debian's Chromium driven by Playwright, a logged-in operator, screenshots.

Skipped (at import, for the importing module) where Playwright is not installed (the
``browser`` extra); CI installs it and Chromium and sets SUPAQUEUE_REQUIRE_BROWSER,
under which a missing Playwright fails instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

if os.environ.get("SUPAQUEUE_REQUIRE_BROWSER"):
    from playwright import sync_api
else:
    sync_api = pytest.importorskip("playwright.sync_api")

from django.contrib.auth.models import User  # noqa: E402
from django.db import connections  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-artifacts" / "admin-browser"
DOCS_SHOTS = ROOT / "docs" / "images"
#: The window the docs' screenshots show, and that every screen must fit without scrolling sideways.
VIEWPORT = {"width": 1366, "height": 900}
#: A moment as every admin screen shows it.
TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
CHROMIUM = os.environ.get("SUPAQUEUE_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium's own connections are refused in sandboxes.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def open_page(live_server, monkeypatch) -> Iterator[object]:
    """A page of a fresh browser on the live server (the body of each test module's ``page`` fixture)."""
    # Playwright's sync API runs an event loop under the test; the ORM calls it makes are still sync.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install chromium (or set SUPAQUEUE_CHROMIUM)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=live_server.url, viewport=VIEWPORT)
        context.set_default_timeout(15_000)
        yield context.new_page()
        context.close()
        browser.close()
        # Inside Playwright's sync API the ORM sees a connection of its own (asgiref keeps
        # connections per context, and Playwright's greenlets switch it); close it here, in
        # that context, or the test database cannot be dropped at the end of the session.
        connections.close_all()


def shoot(page, name: str, *, docs: bool = True) -> None:
    """The whole page as a test artifact; the viewport into the docs when asked (small PNGs)."""
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    if docs and os.environ.get("SUPAQUEUE_DOCS_SCREENSHOTS") == "1":
        page.mouse.move(0, 0)  # no hover state in the docs
        page.screenshot(path=str(DOCS_SHOTS / f"admin-{name}.png"))


def fits_the_window(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def log_in(page) -> None:
    User.objects.create_superuser("ada", "ada@example.com", "a-long-pass-phrase")
    page.goto("/admin/login/")
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password").fill("a-long-pass-phrase")
    page.get_by_role("button", name="Log in").click()
    sync_api.expect(page.get_by_role("link", name="Dashboard")).to_be_visible()
