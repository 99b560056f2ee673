"""The webmail page in Firefox: Debian's firefox-esr, headless, driven by
Selenium (PyPI) through geckodriver (built from crates.io by
`cargo install geckodriver --locked`; Playwright's own Firefox build cannot
be installed here). The main flow against the real msgd binary in
all-in-one: log in, read a message delivered by SMTP, compose and send to
another user (checked over IMAP), search, log out.

Screenshots go to tests/integration/artifacts/webmail-firefox/.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import REPO_ROOT, Msgd, free_ports, unique
from test_webmail_browser import imap_find, message

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.firefox.service import Service
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - reported by the fixture
    webdriver = None

FIREFOX = "/usr/bin/firefox-esr"
INSTALL = ("scripts/install-test-deps.sh (apt-get install -y firefox-esr; pip install selenium; "
           "cargo install geckodriver --locked)")
ARTIFACTS = REPO_ROOT / "tests" / "integration" / "artifacts" / "webmail-firefox"
WAIT_S = 20

ALICE = "alice@example.test"
BOB = "bob@example.test"


def geckodriver() -> str | None:
    found = shutil.which("geckodriver")
    if found:
        return found
    cargo_bin = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo")) / "bin" / "geckodriver"
    return str(cargo_bin) if cargo_bin.exists() else None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    inst = Msgd(tmp_path_factory.mktemp("webmail-ff"))
    with open(inst.config_path, "a") as f:
        f.write(f'\n[listener.https]\nbind = ["127.0.0.1:{free_ports(1)[0]}"]\nenabled = true\n')
    for address in (ALICE, BOB):
        inst.add_user(address)
    inst.start()
    yield inst
    inst.stop()


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    if webdriver is None:
        pytest.fail(f"selenium is not installed: {INSTALL}", pytrace=False)
    if not Path(FIREFOX).exists():
        pytest.fail(f"{FIREFOX} is missing: {INSTALL}", pytrace=False)
    gecko = geckodriver()
    if gecko is None:
        pytest.fail(f"geckodriver is missing: {INSTALL}", pytrace=False)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    opts = webdriver.FirefoxOptions()
    opts.binary_location = FIREFOX
    opts.add_argument("-headless")
    opts.add_argument("--width=1280")
    opts.add_argument("--height=800")
    log = tmp_path_factory.mktemp("gecko") / "geckodriver.log"
    d = webdriver.Firefox(options=opts, service=Service(executable_path=gecko, log_output=str(log)))
    try:
        yield d
    finally:
        d.quit()


def wait(d, cond, what: str):
    try:
        return WebDriverWait(d, WAIT_S).until(cond)
    except TimeoutException:
        d.save_screenshot(str(ARTIFACTS / "failure.png"))
        pytest.fail(f"timed out waiting for {what}; page: {d.current_url}\n"
                    f"{d.find_element(By.TAG_NAME, 'body').text[:2000]}", pytrace=False)


def click(d, find, what: str):
    """Clicks what `find` finds, finding it again if the page re-rendered
    it between the find and the click (a list refresh after a delivery)."""
    def clicked(d):
        e = find(d)
        if not e:
            return False
        try:
            e.click()
            return True
        except StaleElementReferenceException:
            return False
    wait(d, clicked, what)


def text_is(selector: str, text: str):
    def check(d):
        try:
            return any(e.text == text for e in d.find_elements(By.CSS_SELECTOR, selector))
        except StaleElementReferenceException:  # re-rendered meanwhile
            return False
    return check


def row_with(subject: str):
    def find(d):
        try:
            for e in d.find_elements(By.CSS_SELECTOR, "#message-list li"):
                if subject in e.text and e.is_displayed():
                    return e
        except StaleElementReferenceException:  # the list was re-rendered
            pass
        return False
    return find


def only_rows_with(subject: str):
    def check(d):
        try:
            rows = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#message-list li")]
        except StaleElementReferenceException:
            return False
        return bool(rows) and all(subject in r for r in rows)
    return check


def no_page_errors(d) -> list:
    # Firefox's WebDriver gives no console log: the page records uncaught
    # errors itself in the test below.
    return d.execute_script("return window.__errors || []")


def test_main_flow_in_firefox(server, driver):
    d = driver
    base = f"http://127.0.0.1:{server.ports['http']}"
    subject = unique("Firefox reads")
    server.send(ALICE, message(BOB, ALICE, subject, "Read in Firefox.\nSecond line."))

    # log in
    d.get(base + "/")
    wait(d, lambda d: d.current_url.endswith("/login"), "the login form")
    d.find_element(By.NAME, "user").send_keys(ALICE)
    d.find_element(By.NAME, "password").send_keys(server.passwords[ALICE])
    d.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
    wait(d, text_is("header #user", ALICE), "the page after login")
    d.execute_script("window.__errors = []; window.addEventListener('error', e => window.__errors.push(String(e.message)));")
    wait(d, EC.presence_of_element_located((By.CSS_SELECTOR, "#mailbox-list a[data-role=inbox]")), "the folders")
    d.save_screenshot(str(ARTIFACTS / "01-inbox.png"))

    # read
    wait(d, row_with(subject), "the delivered message in the list")
    click(d, row_with(subject), "the delivered message in the list")
    wait(d, text_is("#subject", subject), "the reading pane")
    wait(d, lambda d: "Read in Firefox." in d.find_element(By.CSS_SELECTOR, "#thread .email.open .body").text,
         "the body text")
    d.save_screenshot(str(ARTIFACTS / "02-reader.png"))

    # compose and send to bob
    sent_subject = unique("From Firefox")
    d.find_element(By.ID, "compose-btn").click()
    wait(d, EC.visibility_of_element_located((By.ID, "c-to")), "the compose form")
    d.find_element(By.ID, "c-to").send_keys(BOB)
    d.find_element(By.ID, "c-subject").send_keys(sent_subject)
    d.find_element(By.ID, "c-body").send_keys("Written in Firefox.")
    d.save_screenshot(str(ARTIFACTS / "03-compose.png"))
    d.find_element(By.ID, "send-btn").click()
    wait(d, text_is("#status", "Message sent"), "the send confirmation")
    raw = imap_find(server, BOB, "INBOX", sent_subject)[0]
    assert b"Written in Firefox." in raw
    assert imap_find(server, ALICE, "Sent", sent_subject), "a copy is kept in Sent"

    # search
    box = d.find_element(By.ID, "search-input")
    box.clear()
    box.send_keys(subject)
    box.send_keys(Keys.ENTER)
    wait(d, only_rows_with(subject), "the search result alone in the list")
    d.save_screenshot(str(ARTIFACTS / "04-search.png"))
    assert no_page_errors(d) == []

    # log out
    d.find_element(By.ID, "logout-btn").click()
    wait(d, lambda d: d.current_url.endswith("/login"), "the login form after logout")
    d.get(base + "/")
    wait(d, lambda d: d.current_url.endswith("/login"), "the redirect to the login form")
    status = d.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/session-info').then(r => done(r.status), e => done(String(e)));")
    assert status == 401
