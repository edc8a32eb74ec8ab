"""Swagger UI in a real headless browser (Debian's chromium driven by playwright), with every
request off the machine refused: sso's page registers through "Try it out", loyalty's page
is authorized with that token and answers ``GET /loyalty/me`` with 200.

Screenshots of each step are kept under the test's tmp dir (the path is printed)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Locator, Page, Route, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.e2e.e2e_helpers import BONUS_DEADLINE, Server

CHROMIUM = Path("/usr/bin/chromium")
STEP_TIMEOUT_MS = 15_000

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def swagger_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An ``authloyalty up`` of its own, on free ports, in a temp dir."""
    srv = Server(tmp_path_factory.mktemp("swagger") / "data")
    srv.start()
    try:
        yield srv
    finally:
        if srv.process is not None:
            srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless (playwright never downloads a browser here)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the Swagger UI browser test needs Debian's "
                    "chromium (make system-deps, or apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=["--no-sandbox", "--disable-background-networking"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_page(browser: Browser) -> Iterator[tuple[Page, list[str]]]:
    """A fresh page whose requests to anything but 127.0.0.1 are aborted and recorded (the
    list returned with it)."""
    off_machine: list[str] = []

    def refuse_off_machine(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            off_machine.append(url)
            route.abort("internetdisconnected")

    context = browser.new_context(viewport={"width": 1280, "height": 1600})
    try:
        context.route("**/*", refuse_off_machine)
        page = context.new_page()
        page.set_default_timeout(STEP_TIMEOUT_MS)
        yield page, off_machine
    finally:
        context.close()


class Shots:
    """Numbered full-page screenshots in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0
        directory.mkdir(parents=True, exist_ok=True)
        print(f"Swagger UI screenshots: {directory}")

    def take(self, page: Page, name: str) -> None:
        self.count += 1
        page.screenshot(path=str(self.directory / f"{self.count:02d}-{name}.png"),
                        full_page=True)


def _open(page: Page, url: str, title: str, off_machine: list[str]) -> None:
    page.goto(url)
    try:
        page.locator(".info .title", has_text=title).wait_for()
    except PlaywrightTimeout:
        pytest.fail(f"Swagger UI did not render at {url} within {STEP_TIMEOUT_MS} ms; "
                    f"requests refused off the machine: {off_machine}")


def _operation(page: Page, operation_id: str) -> Locator:
    """The expanded operation block, in "Try it out" mode."""
    block = page.locator(f"#{operation_id}")
    block.locator(".opblock-summary").first.click()
    block.locator("button.try-out__btn").click()
    return block


def _execute(page: Page, block: Locator) -> tuple[str, str]:
    """Press Execute; the status and body of the answer as the response panel shows them."""
    with page.expect_response(lambda r: r.request.resource_type == "fetch") as reply:
        block.locator("button.execute").click()
    live = block.locator(".live-responses-table tbody .response")
    # The panel shows this answer (not the one of an earlier Execute).
    live.locator(".response-col_status", has_text=str(reply.value.status)).wait_for()
    status = live.locator(".response-col_status").inner_text().strip()
    body = live.locator(".response-col_description pre.microlight").first.inner_text()
    return status, body


# Both ways a user pastes the token into the Authorize dialog work.
@pytest.mark.parametrize("pasted", ["token alone", "Bearer token"])
def test_register_then_authorize_then_balance(
        swagger_server: Server, browser_page: tuple[Page, list[str]], tmp_path: Path,
        pasted: str) -> None:
    page, off_machine = browser_page
    shots = Shots(tmp_path / "screenshots")

    _open(page, f"{swagger_server.sso}/swagger", "authloyalty sso", off_machine)
    shots.take(page, "sso-swagger")
    register = _operation(page, "operations-auth-register_auth_registration_post")
    body = register.locator("textarea.body-param__text")
    example = json.loads(body.input_value())
    # The prefilled example is a real one, and not the README walkthrough's user.
    assert example["email"] == "alex.morgan@example.com", example
    assert example["name"] == "Alex Morgan", example
    body.fill(json.dumps({**example, "email": f"swagger.{uuid.uuid4().hex}@example.com"}))
    status, answer = _execute(page, register)
    shots.take(page, "registered")
    assert status == "201", answer
    token = json.loads(answer)["access_token"]

    _open(page, f"{swagger_server.loyalty}/swagger", "authloyalty loyalty", off_machine)
    page.locator("button.authorize").first.click()
    dialog = page.locator(".dialog-ux .modal-ux")
    assert "/auth/registration" in dialog.inner_text()
    assert "/auth/login" in dialog.inner_text()
    dialog.locator("input").first.fill(token if pasted == "token alone" else f"Bearer {token}")
    dialog.locator("button.authorize").click()
    shots.take(page, "authorized")
    dialog.locator("button.btn-done").click()

    me = _operation(page, "operations-loyalty-my_balance_loyalty_me_get")
    deadline = time.monotonic() + BONUS_DEADLINE
    status, answer = _execute(page, me)
    while status == "404" and time.monotonic() < deadline:  # the welcome event is on its way
        time.sleep(0.2)
        status, answer = _execute(page, me)
    shots.take(page, "loyalty-me")
    assert status == "200", answer
    assert json.loads(answer)["balance"] > 0  # the welcome bonus
    assert off_machine == [], f"requests off the machine: {off_machine}"
    assert sorted(p.name for p in shots.directory.iterdir()) == [
        "01-sso-swagger.png", "02-registered.png", "03-authorized.png", "04-loyalty-me.png"]
