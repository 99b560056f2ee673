"""The administration console in a real browser: headless Chromium
(Debian's package) driven by Playwright, against the real msgd binary in
all-in-one (console listener, webmail, SMTP and the store in one process).

The issue's scenario: an administrator logs in, creates a user; the new
user receives mail sent by SMTP and reads it in the webmail; the
administrator changes the quota and deletes the user. Besides: the forms
work from the keyboard, the pages run no inline script (no CSP error), and
a domain administrator cannot reach another domain's users.

Screenshots are kept under tests/integration/artifacts/console/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from conftest import DOMAIN, REPO_ROOT, Msgd, free_ports, unique, wait_until

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - reported by the fixture
    sync_playwright = None

CHROMIUM = "/usr/bin/chromium"
INSTALL = "scripts/install-test-deps.sh (apt-get install -y chromium; pip install playwright)"
ARTIFACTS = REPO_ROOT / "tests" / "integration" / "artifacts" / "console"
WAIT_MS = 20_000

ADMIN = f"admin@{DOMAIN}"
ALICE = f"alice@{DOMAIN}"
OTHER = "other.test"
BOSS = f"boss@{OTHER}"


@pytest.fixture(scope="module")
def browser():
    if sync_playwright is None:
        pytest.fail(f"playwright is not installed: {INSTALL}", pytrace=False)
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: {INSTALL}", pytrace=False)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    inst = Msgd(tmp_path_factory.mktemp("admin_console"))
    port = free_ports(1)[0]
    inst.ports["console"] = port
    with open(inst.config_path, "a") as f:
        f.write(
            f'\n[listener.console]\nbind = ["127.0.0.1:{port}"]\nenabled = true\n'
            f'\n[provision]\nsite_admins = ["{ADMIN}"]\n'
        )
    for a in (ADMIN, ALICE, BOSS):
        inst.add_user(a)
    inst.start()
    api = api_base(inst)
    assert wait_until(lambda: _get(f"{api}/session").status_code == 401, 10)
    r = requests.patch(f"{api}/domains/{OTHER}", json={"add_admins": [BOSS]},
                       auth=(ADMIN, inst.passwords[ADMIN]), timeout=20)
    assert r.status_code == 200, r.text
    yield inst
    inst.stop()


def _get(url: str) -> requests.Response:
    try:
        return requests.get(url, timeout=5)
    except requests.RequestException:
        return requests.Response()


def api_base(server: Msgd) -> str:
    return f"http://127.0.0.1:{server.ports['console']}/admin/api"


def api_user(server: Msgd, address: str) -> dict:
    r = requests.get(f"{api_base(server)}/users/{address}", auth=(ADMIN, server.passwords[ADMIN]), timeout=20)
    assert r.status_code == 200, r.text
    return r.json()


class Page:
    """A browser context (own cookies) and page, recording page errors and
    console messages (a CSP violation is one)."""

    def __init__(self, browser):
        self.ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.ctx.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture
def pages(browser):
    made: list[Page] = []

    def make() -> Page:
        pg = Page(browser)
        made.append(pg)
        return pg

    yield make
    for pg in made:
        pg.ctx.close()


def console_login(server: Msgd, pg: Page, login: str) -> None:
    """Logs in with the keyboard only: type, Tab, type, Enter."""
    page = pg.page
    page.goto(f"http://127.0.0.1:{server.ports['console']}/admin/")
    page.wait_for_url(re.compile(r"/admin/login$"), timeout=WAIT_MS)
    # the login field has the focus
    expect(page.locator("#login")).to_be_focused()
    page.keyboard.type(login)
    page.keyboard.press("Tab")
    expect(page.locator("#password")).to_be_focused()
    page.keyboard.type(server.passwords[login])
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/admin/users$"), timeout=WAIT_MS)
    expect(page.locator("header .who")).to_contain_text(login)


def webmail_reads(server: Msgd, pg: Page, user: str, password: str, subject: str, text: str) -> None:
    page = pg.page
    page.goto(f"http://127.0.0.1:{server.ports['http']}/")
    page.wait_for_url(re.compile(r"/login$"), timeout=WAIT_MS)
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/$"), timeout=WAIT_MS)
    expect(page.locator("header #user")).to_have_text(user, timeout=WAIT_MS)
    row = page.locator("#message-list li", has_text=subject)
    expect(row).to_be_visible(timeout=WAIT_MS)
    row.first.click()
    expect(page.locator("#thread .email.open .body")).to_contain_text(text, timeout=WAIT_MS)


def test_admin_creates_user_who_reads_mail_then_quota_change_and_delete(server, pages):
    admin = pages()
    console_login(server, admin, ADMIN)
    page = admin.page
    admin.shot("users")
    addr = f"{unique('new')}@{DOMAIN}"
    password = "Console-Pw-123"

    # create, from the keyboard: focus, type, Tab between fields, Enter
    page.get_by_role("link", name="New user").click()
    expect(page.locator("#address")).to_be_focused()
    page.keyboard.type(addr)
    page.keyboard.press("Tab")
    page.keyboard.type("New Person")
    page.keyboard.press("Tab")
    page.keyboard.type(password)
    page.keyboard.press("Tab")
    page.keyboard.type("100")  # MiB
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/admin/users/.+\?done=created$"), timeout=WAIT_MS)
    expect(page.locator("h1")).to_have_text(addr)
    expect(page.locator("p.notice")).to_have_text("Created.")
    assert api_user(server, addr)["quota"] == 100 * 1024 * 1024

    # it is listed and found by the search
    page.goto(f"http://127.0.0.1:{server.ports['console']}/admin/users")
    page.fill("#text", addr.split("@")[0])
    page.get_by_role("button", name="Search").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody tr td").first).to_have_text(addr)

    # mail sent by SMTP reaches the new user, who reads it in the webmail
    subject = f"Welcome {unique()}"
    server.passwords[addr] = password
    server.send([addr], f"Subject: {subject}\r\nFrom: x@remote.example\r\n\r\nHello new user.\r\n".encode())
    assert server.wait_count(addr, 1) == 1
    user = pages()
    webmail_reads(server, user, addr, password, subject, "Hello new user.")
    user.shot("webmail-new-user")

    # the administrator sees the usage and changes the quota
    page.locator("tbody tr td a", has_text=addr).click()
    expect(page.locator("#usage")).to_contain_text("1 messages")
    page.fill("#quota", "5")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(re.compile(r"\?done=saved$"), timeout=WAIT_MS)
    expect(page.locator("p.notice")).to_have_text("Saved.")
    expect(page.locator("#quota")).to_have_value("5")
    assert api_user(server, addr)["quota"] == 5 * 1024 * 1024
    admin.shot("user")

    # and deletes the user (the script asks first)
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete user").click()
    page.wait_for_url(re.compile(r"/admin/users\?done=marked$"), timeout=WAIT_MS)
    u = api_user(server, addr)
    assert u["status"] == "deleted" and u["deleted_at"]
    assert admin.errors == [], admin.errors


def test_password_reset_and_a_refusal_shown_as_an_error(server, pages):
    admin = pages()
    console_login(server, admin, ADMIN)
    page = admin.page
    base = f"http://127.0.0.1:{server.ports['console']}"
    page.goto(f"{base}/admin/users/{ALICE}")
    page.fill("#new_password", "Reset-Pw-789")
    page.get_by_role("button", name="Set password").click()
    expect(page.locator("p.notice")).to_have_text("The password was changed.")
    # a bad value is refused with a message naming the field, focused
    page.fill("#quota", "lots")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#error")).to_contain_text("quota")
    expect(page.locator("#error")).to_be_focused()
    assert api_user(server, ALICE)["quota"] is None


def test_domain_admin_sees_only_their_domain(server, pages):
    boss = pages()
    console_login(server, boss, BOSS)
    page = boss.page
    base = f"http://127.0.0.1:{server.ports['console']}"
    expect(page.locator("header .who")).to_contain_text(f"administrator of {OTHER}")
    cells = page.locator("tbody tr td:first-child").all_inner_texts()
    assert cells and all(c.endswith(f"@{OTHER}") for c in cells), cells
    resp = page.goto(f"{base}/admin/users/{ALICE}")
    assert resp.status == 403
    expect(page.locator("#error")).to_contain_text(DOMAIN)
    resp = page.goto(f"{base}/admin/users?domain={DOMAIN}")
    assert resp.status == 403
    resp = page.goto(f"{base}/admin/domains")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("form[action='/admin/domains']")).to_have_count(0)
    page.goto(f"{base}/admin/domains/{OTHER}")
    expect(page.locator("dl")).to_be_visible()
    expect(page.locator("#max_users")).to_have_count(0)
    # creating a user in another domain through the form is refused
    page.goto(f"{base}/admin/users/new")
    page.fill("#address", f"{unique('x')}@{DOMAIN}")
    page.fill("#password", "Pw-123456")
    page.get_by_role("button", name="Create user").click()
    expect(page.locator("#error")).to_contain_text("does not administer")
    boss.shot("domain-admin-refused")


def test_a_form_posted_without_the_session_token_is_refused(server, pages):
    admin = pages()
    console_login(server, admin, ADMIN)
    base = f"http://127.0.0.1:{server.ports['console']}"
    # the browser's cookie, a request without the form's token
    r = admin.page.request.post(f"{base}/admin/users/{ALICE}/delete", form={"csrf": "forged"})
    assert r.status == 403
    assert api_user(server, ALICE)["status"] == "active"
    # logout ends the session
    admin.page.goto(f"{base}/admin/users")
    admin.page.get_by_role("button", name="Log out").click()
    admin.page.wait_for_url(re.compile(r"/admin/login$"), timeout=WAIT_MS)
    admin.page.goto(f"{base}/admin/users")
    assert admin.page.url.endswith("/admin/login")


def test_administrator_of_two_domains_lists_one_at_a_time(server, pages):
    auth = (ADMIN, server.passwords[ADMIN])
    third = f"{unique('third')}.test"
    api = api_base(server)
    assert requests.post(f"{api}/domains", json={"name": third}, auth=auth, timeout=20).status_code == 201
    r = requests.patch(f"{api}/domains/{third}", json={"add_admins": [BOSS]}, auth=auth, timeout=20)
    assert r.status_code == 200, r.text
    boss = pages()
    console_login(server, boss, BOSS)
    page = boss.page
    # the first of their domains is listed; the others are a choice away
    options = page.locator("select#domain option").all_inner_texts()
    assert sorted(options) == sorted([OTHER, third]), options
    first = sorted([OTHER, third])[0]
    cells = page.locator("tbody tr td:first-child").all_inner_texts()
    assert all(c.endswith(f"@{first}") for c in cells), cells
    page.select_option("select#domain", third)
    page.get_by_role("button", name="Search").click()
    expect(page.locator("tbody tr")).to_have_count(0)
    expect(page.locator(".pager")).to_contain_text("of 0")


def test_group_created_edited_and_deleted_in_the_console(server, pages):
    admin = pages()
    console_login(server, admin, ADMIN)
    page = admin.page
    base = f"http://127.0.0.1:{server.ports['console']}"
    addr = f"{unique('team')}@{DOMAIN}"
    page.goto(f"{base}/admin/groups")
    page.get_by_role("link", name="New group").click()
    page.fill("#address", addr)
    page.fill("#name", "The team")
    page.fill("#members", f"{ALICE}\n{ADMIN}")
    page.get_by_role("button", name="Create group").click()
    expect(page.locator("p.notice")).to_have_text("Created.")
    expect(page.locator("#members")).to_have_value(f"{ALICE}\n{ADMIN}")
    # a member leaves
    page.fill("#members", ALICE)
    page.get_by_role("button", name="Save").click()
    expect(page.locator("p.notice")).to_have_text("Saved.")
    r = requests.get(f"{api_base(server)}/groups/{addr}", auth=(ADMIN, server.passwords[ADMIN]), timeout=20)
    assert r.json()["members"] == [ALICE] and r.json()["name"] == "The team"
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete group").click()
    page.wait_for_url(re.compile(r"/admin/groups\?done=deleted$"), timeout=WAIT_MS)
    r = requests.get(f"{api_base(server)}/groups/{addr}", auth=(ADMIN, server.passwords[ADMIN]), timeout=20)
    assert r.status_code == 404
    assert admin.errors == [], admin.errors
