"""The web page in headless Chromium: sign up, buy, see the purchase accepted, then recorded (notice and row)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


def test_sign_up_buy_and_see_it_recorded(api, browser, stage):
    from playwright.sync_api import expect

    page = browser.new_page()
    page.set_default_timeout(20_000)
    page.goto(api.url + "/")
    username = f"page_{uuid.uuid4().hex[:8]}"
    page.fill("#username", username)
    page.fill("#password", "a-long-password")
    page.click("#signup")
    expect(page.locator("#who-name")).to_contain_text(username)
    expect(page.locator("#empty")).to_be_visible()
    expect(page.locator("#spend-totals")).to_have_text("Nothing bought yet.")

    page.fill("#product_name", "Teapot ‘blue’ <b>")
    page.fill("#description", "cast iron ✓")
    page.fill("#quantity", "3")
    page.fill("#unit_price", "12.35")
    with page.expect_response(lambda r: r.url.endswith("/purchases") and r.request.method == "POST") as bought:
        page.click("#buy-button")
    assert bought.value.status == 202
    event_id = bought.value.json()["event_id"]
    row = page.locator(f'tr[data-event-id="{event_id}"]')
    expect(row).to_contain_text("pending")
    expect(page.locator("#notice")).to_contain_text("Accepted")

    assert stage() >= 1  # the loader records it (here its stand-in, see api_support)
    expect(page.locator("#notice")).to_contain_text("Recorded: Teapot ‘blue’ <b> (37.05 USD)")
    expect(row).to_contain_text("recorded")
    expect(row).to_contain_text("Teapot ‘blue’ <b>")  # shown as text, not markup
    expect(row).to_contain_text("37.05 USD")
    # The spend counts what the list shows, whether or not dbt has run (it has not, here).
    expect(page.locator("#spend-totals")).to_have_text("37.05 USD (1 purchase)")

    # Log out; a wrong password is refused with the API's message; the right one shows the same purchases.
    page.click("#logout")
    page.fill("#username", username)
    page.fill("#password", "not-the-password")
    page.click("#login")
    expect(page.locator("#notice")).to_contain_text("Log in failed: Wrong username or password")
    page.fill("#password", "a-long-password")
    page.click("#login")
    expect(page.locator(f'tr[data-event-id="{event_id}"]')).to_contain_text("recorded")
    page.close()
