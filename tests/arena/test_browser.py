"""The web UI in a real headless Chromium: register, log in, open a challenge, download an
artifact, query through the form, submit the flag, see the scoreboard update."""

from __future__ import annotations

import json
import os

import pytest
from arena_helpers import LiveServer, built_arena, make_settings

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield b
        b.close()


def log_in(page, url: str, name: str, password: str) -> None:
    """Through the login form; lands on the challenge list."""
    page.goto(url + "/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    page.click("form.card button[type=submit]")
    page.wait_for_url("**/challenges")


def test_player_flow_in_chromium(browser, tmp_path, challenge_dir):
    from assay.arena.app import create_app

    settings = make_settings(tmp_path, challenge_dir)
    arena = built_arena(settings)
    w = arena.specs["linear"].challenge.w.tolist()
    winning = json.dumps({"x": [1.0 if v >= 0 else -1.0 for v in w]})
    with LiveServer(create_app(settings, arena)) as server:
        page = browser.new_page(accept_downloads=True)
        page.goto(server.url + "/register")
        page.fill("input[name=name]", "browser_user")
        page.fill("input[name=password]", "password123")
        page.click("button[type=submit]")
        assert page.locator("#api-key").inner_text().startswith("ak_")
        # log out and back in through the forms
        page.click("text=Log out")
        page.wait_for_url("**/login")
        log_in(page, server.url, "browser_user", "password123")
        page.click("text=Linear2")  # challenge names come from the manifests
        page.go_back()
        page.click("a[href='/challenges/linear']")
        with page.expect_download() as dl:
            page.click("text=readme.txt")
        assert open(dl.value.path(), "rb").read() == arena.artifacts["linear"]["readme.txt"]
        page.fill("textarea[name=payload]", '{"x": [0, 0, 0, 0]}')
        page.click("#query-form button")
        assert "scores" in page.locator("#query-result").inner_text()
        assert page.locator("#flag").count() == 0
        page.fill("textarea[name=payload]", winning)
        page.click("#query-form button")
        flag = page.locator("#flag").inner_text()
        assert flag.startswith("assay{")
        page.fill("input[name=flag]", flag)
        page.click("#flag-form button")
        assert "Correct" in page.locator("#submit-message").inner_text()
        page.goto(server.url + "/scoreboard")
        row = page.locator("#standings tbody tr").first.inner_text()
        assert "browser_user" in row and "100" in row
        assert page.locator("svg.plot polyline").count() == 1
        # cookie flags as the browser stored them
        cookie = next(c for c in page.context.cookies() if c["name"] == "arena_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
        page.close()


PHONE = {"width": 390, "height": 844}  # an iPhone 12-15 in portrait, CSS pixels


def test_the_nav_bar_fits_a_390px_phone(browser, tmp_path, challenge_dir):
    # Logged in as the operator, so the header carries every link it ever shows (and the longest
    # name the form allows): nothing may stick out of the screen or make the page scroll sideways.
    from assay.arena.app import create_app

    settings = make_settings(tmp_path, challenge_dir, admin_password="operator-pass")
    arena = built_arena(settings)
    with LiveServer(create_app(settings, arena)) as server:
        page = browser.new_page(viewport=PHONE)
        log_in(page, server.url, "admin", "operator-pass")
        for path in ("/challenges", "/challenges/linear", "/scoreboard", "/team", "/admin", "/admin/queries", "/docs"):
            page.goto(server.url + path)
            assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], path
            items = page.locator("header.top a, header.top button")
            assert items.count() == 7, path  # brand; Challenges, Scoreboard, Team, Operator, API; Log out
            for i in range(items.count()):
                box = items.nth(i).bounding_box()
                assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], \
                    (path, items.nth(i).inner_text(), box)
            assert page.locator("header.top a[href='/admin']").is_visible()
        page.close()
