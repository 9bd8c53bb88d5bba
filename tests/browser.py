"""Browser fixtures shared by the browser tests: Debian's Chromium driven by Playwright.

`browser` (one per module), `page` (a 1400 x 900 context on live_server, clipboard allowed)
and `shots` (numbered full-page screenshots under test-results/browser/<test>/, ignored by
git). Chromium is never downloaded: `make test` installs Debian's package; without it these
tests fail (never skip). Loaded for every test module through conftest's pytest_plugins.
"""

import os
from pathlib import Path

import pytest
from django.conf import settings
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
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
RESULTS = Path(settings.BASE_DIR) / "test-results" / "browser"


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium is missing at {CHROMIUM}: the browser tests need Debian's chromium "
            "(`make test` installs it; or `apt-get install -y chromium`).",
            pytrace=False,
        )
    # Playwright's sync API keeps an event loop running in this thread while it is open;
    # Django's ORM is still used synchronously here, so its async-safety guard does not apply.
    with pytest.MonkeyPatch.context() as mp, sync_playwright() as playwright:
        mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1400, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def shots(request):
    """shots("name") saves a full-page screenshot, numbered in the order taken."""
    folder = RESULTS / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    taken = []

    def shoot(page, name):
        taken.append(name)
        path = folder / f"{len(taken):02d}-{name}.png"
        page.screenshot(path=path, full_page=True)
        return path

    return shoot
