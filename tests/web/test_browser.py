"""The inbox pages in a real headless Chromium (Playwright), on the live stack of tests/web/conftest.py.

Signs in with a token, opens My inbox, opens an alert, decides, and sees the new status once the
pipeline applied it; saves the screenshots the README shows (docs/screenshots/).
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

CHROMIUM = Path(os.environ.get("ONEVOICE_TEST_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium as root "
                    "(apt-get install -y chromium); not root here, so it could not")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def wait_for_status(page, stack, status: str, timeout_ms: int = 60_000) -> None:
    """Until the page (reloaded by static/app.js when the outcome arrives) shows the alert in `status`."""
    try:
        page.wait_for_selector(f'#alert-status[data-status="{status}"]', timeout=timeout_ms)
    except Exception as exc:
        outcome = page.locator("#outcome").inner_text() if page.locator("#outcome").count() else "(no outcome box)"
        raise AssertionError(f"alert not {status}; page {page.url}: {outcome}\n{stack.log_tail()}") from exc


def sign_in(page, stack, person: str) -> None:
    page.goto(f"{stack.base_url}/")
    assert "/sign-in" in page.url
    page.fill("#token", stack.token(person))
    page.click("#sign-in button[type=submit]")
    page.wait_for_url(f"{stack.base_url}/")


def test_global_kam_acknowledges_a_price_conflict_in_the_browser(live_stack, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    page = context.new_page()
    sign_in(page, live_stack, "p-anna")
    assert page.locator("header .person").inner_text().startswith("Anna Schmidt")
    conflict = page.locator("a.alert-link", has_text="price for P-100 is below the global price")
    assert conflict.count() == 1
    assert page.locator("ul.notices li.unread").count() >= 1  # commitments made by others, for the global KAM
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "inbox.png"), full_page=True)

    conflict.click()
    page.wait_for_selector("table.side-by-side")
    assert page.locator("#alert-status").get_attribute("data-status") == "open"
    assert page.locator("table.side-by-side thead th").count() == 3  # the label column and both agreements
    page.fill("#comment", "Talked to Carla: the Italian price ends with the quarter.")
    page.click("button.d-acknowledge")
    wait_for_status(page, live_stack, "acknowledged")
    assert "Decision applied." in page.locator("#outcome").inner_text()
    history = page.locator("table.history tbody tr")
    assert history.count() == 2 and "Anna Schmidt" in history.nth(1).inner_text()
    assert page.locator("form.decision button.d-resolve").count() == 1  # acknowledged is still open to decide
    assert page.locator("form.decision button.d-release").count() == 0  # dunning alerts only
    page.screenshot(path=str(SCREENSHOTS / "alert.png"), full_page=True)

    page.goto(f"{live_stack.base_url}/language/de?next=/")
    assert page.locator("h1").inner_text() == "Mein Posteingang"
    context.close()


def test_local_kam_releases_a_dunning_in_the_browser(live_stack, browser):
    live_stack.dunning("D-PAGE")
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="de-DE")
    page = context.new_page()
    sign_in(page, live_stack, "p-carla")
    assert page.locator("h1").inner_text() == "Mein Posteingang"  # Accept-Language: de
    page.goto(f"{live_stack.base_url}/language/en?next=/")
    items = httpx.get(f"{live_stack.base_url}/api/v1/alerts", params={"involving": "me", "status": "open"},
                      headers=live_stack.headers("p-carla"), timeout=10).json()["items"]
    alert_id = next(a["alert_id"] for a in items if a["fingerprint"] == "key_account_dunning:ACME:D-PAGE")
    page.locator(f'a.alert-link[href="/alerts/{alert_id}"]').click()
    page.wait_for_selector("#decide")
    assert "D-PAGE" in page.content()
    page.click("button.d-release")
    wait_for_status(page, live_stack, "resolved")
    assert page.locator("#instruction .action").inner_text().lower() == "release"
    page.screenshot(path=str(SCREENSHOTS / "alert-dunning.png"), full_page=True)
    page.goto(f"{live_stack.base_url}/key-accounts/ACME")
    assert page.locator("h1").inner_text().startswith("ACME Group")
    page.screenshot(path=str(SCREENSHOTS / "key-account.png"), full_page=True)
    page.locator("form[action='/sign-out'] button").click()
    page.wait_for_url(f"{live_stack.base_url}/sign-in")
    page.goto(f"{live_stack.base_url}/")
    assert "/sign-in" in page.url
    context.close()
