"""The webmail page in a real browser: headless Chromium (Debian's package)
driven by Playwright (PyPI), against the real msgd binary in all-in-one
(one process serving the page, the login and JMAP), with mail arriving by
SMTP and checked over IMAP (imaplib) on the other side.

Screenshots of the main views are kept under
tests/integration/artifacts/webmail/ (ignored by git) after every run.

Security in the page: a message whose HTML carries <script>, onerror=,
javascript:, CSS expression(), SVG scripts and a remote image is opened and
nothing runs (a `window` flag stays unset) and nothing is fetched from the
remote image host (a local HTTP server that counts requests).
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
import threading
import time
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import REPO_ROOT, Msgd, free_ports, unique

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - reported by the fixture
    sync_playwright = None

CHROMIUM = "/usr/bin/chromium"
INSTALL = "scripts/install-test-deps.sh (apt-get install -y chromium; pip install playwright)"
ARTIFACTS = REPO_ROOT / "tests" / "integration" / "artifacts" / "webmail"
WAIT_MS = 20_000

ALICE = "alice@example.test"
BOB = "bob@example.test"
USERS = (ALICE, BOB)


# --------------------------------------------------------------------------
# fixtures


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
    """conftest's all-in-one, with the https listener on a free port too
    (its default is the quickstart's fixed 18443)."""
    inst = Msgd(tmp_path_factory.mktemp("webmail"))
    with open(inst.config_path, "a") as f:
        f.write(f'\n[listener.https]\nbind = ["127.0.0.1:{free_ports(1)[0]}"]\nenabled = true\n')
    for address in USERS:
        inst.add_user(address)
    inst.start()
    yield inst
    inst.stop()


class Page:
    """One browser context (its own cookies) with a page, recording the
    page's errors and every request it made."""

    def __init__(self, browser, base: str, viewport=(1280, 800)):
        self.ctx = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]},
                                       accept_downloads=True)
        self.page = self.ctx.new_page()
        self.base = base
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.ctx.close()


@pytest.fixture
def open_page(browser, server):
    pages: list[Page] = []

    def make(user: str | None = ALICE, viewport=(1280, 800)) -> Page:
        pg = Page(browser, f"http://127.0.0.1:{server.ports['http']}", viewport)
        pages.append(pg)
        if user is not None:
            login(pg, user, server.passwords[user])
        return pg

    yield make
    for pg in pages:
        pg.close()


def login(pg: Page, user: str, password: str) -> None:
    page = pg.page
    page.goto(pg.base + "/")
    assert page.url.endswith("/login"), f"not sent to the login form: {page.url}"
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit], input[type=submit]")
    try:
        page.wait_for_url(re.compile(r"/$"), timeout=WAIT_MS)
    except Exception:
        pytest.fail(f"login refused: {page.url}\n{page.inner_text('body')}", pytrace=False)
    expect(page.locator("header #user")).to_have_text(user, timeout=WAIT_MS)
    expect(page.locator("#mailbox-list a[data-role=inbox]")).to_be_attached(timeout=WAIT_MS)


def message(sender: str, to: str, subject: str, text: str, html: str | None = None,
            attachment: tuple[str, bytes] | None = None) -> bytes:
    m = EmailMessage()
    m["From"] = sender
    m["To"] = to
    m["Subject"] = subject
    m["Message-ID"] = f"<{unique('m')}@example.test>"
    m["Date"] = email.utils.formatdate(localtime=True)
    m.set_content(text)
    if html is not None:
        m.add_alternative(html, subtype="html")
    if attachment is not None:
        m.add_attachment(attachment[1], maintype="application", subtype="octet-stream", filename=attachment[0])
    return m.as_bytes()


def open_message(pg: Page, subject: str) -> None:
    row = pg.page.locator("#message-list li", has_text=subject)
    expect(row).to_be_visible(timeout=WAIT_MS)
    row.first.click()
    expect(pg.page.locator("#subject")).to_have_text(subject, timeout=WAIT_MS)


def select_mailbox(pg: Page, role_or_name: str) -> None:
    loc = pg.page.locator(f"#mailbox-list a[data-role={role_or_name}]")
    if loc.count() == 0:
        loc = pg.page.locator("#mailbox-list a", has_text=role_or_name)
    loc.first.click()


def imap_find(server, user: str, mailbox: str, subject: str, timeout: float = 20.0) -> list[bytes]:
    """The raw messages of `user`'s `mailbox` whose subject contains
    `subject`, polling until there is at least one (fails otherwise)."""
    deadline = time.monotonic() + timeout
    m = server.imap(user)
    try:
        while True:
            typ, _ = m.select(f'"{mailbox}"', readonly=True)
            assert typ == "OK", f"SELECT {mailbox}"
            typ, data = m.search(None, "SUBJECT", f'"{subject}"')
            nums = data[0].split() if typ == "OK" and data[0] else []
            if nums or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert nums, f"{user}: no message with subject {subject!r} in {mailbox}"
        out = []
        for n in nums:
            typ, d = m.fetch(n, "(BODY.PEEK[])")
            out.append(d[0][1])
        return out
    finally:
        m.logout()


def imap_flags(server, user: str, mailbox: str, subject: str) -> str:
    m = server.imap(user)
    try:
        m.select(f'"{mailbox}"', readonly=True)
        typ, data = m.search(None, "SUBJECT", f'"{subject}"')
        n = data[0].split()[0]
        typ, d = m.fetch(n, "(FLAGS)")
        return d[0].decode()
    finally:
        m.logout()


def imap_create(server, user: str, mailbox: str) -> None:
    m = server.imap(user)
    try:
        typ, data = m.create(mailbox)
        assert typ == "OK", data
    finally:
        m.logout()


# --------------------------------------------------------------------------
# reading


def test_login_shows_folders_with_roles_first_and_unread_counts(server, open_page):
    subject = unique("Unread count")
    server.send(ALICE, message(BOB, ALICE, subject, "count me"))
    imap_create(server, ALICE, "Archive-" + subject[-6:])
    pg = open_page()
    roles = pg.page.eval_on_selector_all("#mailbox-list a", "as => as.map(a => a.dataset.role || '')")
    assert roles[0] == "inbox", roles
    ranked = [r for r in roles if r in ("inbox", "drafts", "sent", "trash", "junk")]
    order = ["inbox", "drafts", "sent", "trash", "junk"]
    assert ranked == sorted(ranked, key=order.index), roles
    assert roles.index(ranked[-1]) < roles.index(""), f"role folders come first: {roles}"
    count = pg.page.locator("#mailbox-list a[data-role=inbox] .count")
    expect(count).to_have_text(re.compile(r"^[1-9]\d*$"), timeout=WAIT_MS)
    pg.shot("01-inbox")
    assert pg.errors == []


def test_message_delivered_by_smtp_is_read_and_marked_seen(server, open_page):
    subject = unique("Hello by SMTP")
    server.send(ALICE, message(BOB, ALICE, subject, "The body text arrived.\nSecond line.",
                               attachment=("report.bin", b"\x00\x01binary report")))
    pg = open_page()
    open_message(pg, subject)
    expect(pg.page.locator("#thread .email.open .body")).to_contain_text("The body text arrived.")
    link = pg.page.locator("#thread a.attachment", has_text="report.bin")
    expect(link).to_be_visible()
    with pg.page.expect_download() as dl:
        link.click()
    assert Path(dl.value.path()).read_bytes() == b"\x00\x01binary report"
    pg.shot("02-reader")
    deadline = time.monotonic() + 10
    while "\\Seen" not in imap_flags(server, ALICE, "INBOX", subject) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "\\Seen" in imap_flags(server, ALICE, "INBOX", subject)
    assert pg.errors == []


def test_new_mail_appears_without_reload(server, open_page):
    pg = open_page()
    pg.page.evaluate("window.__sameDocument = true")
    subject = unique("Pushed")
    server.send(ALICE, message(BOB, ALICE, subject, "arrives by EventSource"))
    expect(pg.page.locator("#message-list li", has_text=subject)).to_be_visible(timeout=WAIT_MS)
    assert pg.page.evaluate("window.__sameDocument") is True, "the page was reloaded"


def test_paging_and_search(server, open_page):
    tag = unique("pg")
    with server.smtp() as s:
        s.ehlo()
        for i in range(55):
            s.sendmail(BOB, [ALICE], message(BOB, ALICE, f"{tag} number {i:02d}", f"page body {i}"))
    server.wait_count(ALICE, 55)
    pg = open_page()
    page = pg.page
    page.fill("#search-input", tag)
    page.press("#search-input", "Enter")
    expect(page.locator("#page-info")).to_have_text(re.compile(r"^1–50 of 55$"), timeout=WAIT_MS)
    expect(page.locator("#message-list li")).to_have_count(50)
    subjects = page.locator("#message-list li .subject").all_inner_texts()
    page.click("#next-page")
    expect(page.locator("#page-info")).to_have_text("51–55 of 55", timeout=WAIT_MS)
    expect(page.locator("#message-list li")).to_have_count(5)
    subjects += page.locator("#message-list li .subject").all_inner_texts()
    # Every message once over the two pages (they arrived within the same
    # seconds, so their order among equal receivedAt is the server's).
    assert sorted(subjects) == [f"{tag} number {i:02d}" for i in range(55)]
    page.click("#prev-page")
    expect(page.locator("#page-info")).to_have_text("1–50 of 55", timeout=WAIT_MS)
    page.fill("#search-input", f"{tag} number 07")
    page.press("#search-input", "Enter")
    expect(page.locator("#message-list li", has_text=f"{tag} number 07")).to_be_visible(timeout=WAIT_MS)
    pg.shot("03-search")


def test_thread_shows_the_conversation(server, open_page):
    subject = unique("Thread topic")
    first = message(BOB, ALICE, subject, "first in thread")
    server.send(ALICE, first)
    mid = email.message_from_bytes(first)["Message-ID"]
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = BOB, ALICE, "Re: " + subject
    m["Message-ID"], m["In-Reply-To"], m["References"] = f"<{unique('r')}@example.test>", mid, mid
    m.set_content("second in thread")
    server.send(ALICE, m.as_bytes())
    pg = open_page()
    row = pg.page.locator("#message-list li", has_text=subject)
    expect(row).to_have_count(1, timeout=WAIT_MS)
    expect(row.locator(".thread-count")).to_have_text("2")
    row.click()
    expect(pg.page.locator("#thread article.email")).to_have_count(2, timeout=WAIT_MS)


# --------------------------------------------------------------------------
# writing


def test_compose_sends_to_another_user_who_gets_it_over_imap(server, open_page):
    subject = unique("Composed")
    pg = open_page()
    page = pg.page
    page.click("#compose-btn")
    page.fill("#c-to", BOB)
    page.fill("#c-subject", subject)
    page.fill("#c-body", "Written in the browser.")
    pg.shot("04-compose")
    page.click("#send-btn")
    expect(page.locator("#status")).to_have_text("Message sent", timeout=WAIT_MS)
    raw = imap_find(server, BOB, "INBOX", subject)[0]
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert ALICE in msg["From"]
    assert "Written in the browser." in msg.get_body(("plain",)).get_content()
    sent = imap_find(server, ALICE, "Sent", subject)
    assert sent, "a copy is kept in Sent"


def test_reply_with_attachment_reaches_the_sender(server, open_page):
    subject = unique("Question")
    server.send(ALICE, message(BOB, ALICE, subject, "Can you send the file?"))
    pg = open_page()
    open_message(pg, subject)
    pg.page.keyboard.press("r")
    expect(pg.page.locator("#c-to")).to_have_value(re.compile(re.escape(BOB)))
    expect(pg.page.locator("#c-subject")).to_have_value(f"Re: {subject}")
    pg.page.locator("#c-body").press("Control+Home")
    pg.page.locator("#c-body").type("Here it is. ")
    pg.page.set_input_files("#c-files", files=[{"name": "answer.txt", "mimeType": "text/plain",
                                                "buffer": b"the attached answer\n"}])
    expect(pg.page.locator("#c-attachments li", has_text="answer.txt")).to_be_visible(timeout=WAIT_MS)
    pg.page.click("#send-btn")
    expect(pg.page.locator("#status")).to_have_text("Message sent", timeout=WAIT_MS)
    raw = imap_find(server, BOB, "INBOX", f"Re: {subject}")[0]
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["In-Reply-To"], "the reply names the message it answers"
    body = msg.get_body(("plain",)).get_content()
    assert body.startswith("Here it is.") and "> Can you send the file?" in body, body
    atts = {a.get_filename(): a.get_content() for a in msg.iter_attachments()}
    assert atts.get("answer.txt") in ("the attached answer\n", b"the attached answer\n"), atts


def test_reply_all_and_forward_fill_the_form(server, open_page):
    subject = unique("To many")
    m = EmailMessage()
    m["From"], m["To"], m["Cc"], m["Subject"] = BOB, ALICE, "carol@example.test", subject
    m.set_content("for everyone")
    m.add_attachment(b"fwd-bytes", maintype="application", subtype="octet-stream", filename="keep.bin")
    server.send(ALICE, m.as_bytes())
    pg = open_page()
    open_message(pg, subject)
    pg.page.keyboard.press("a")
    expect(pg.page.locator("#c-cc")).to_have_value(re.compile("carol@example.test"))
    assert ALICE not in pg.page.input_value("#c-cc")
    pg.page.click("#discard-btn")
    pg.page.click("#forward-btn")
    expect(pg.page.locator("#c-subject")).to_have_value(f"Fwd: {subject}")
    expect(pg.page.locator("#c-attachments li", has_text="keep.bin")).to_be_visible()
    pg.page.fill("#c-to", BOB)
    pg.page.click("#send-btn")
    expect(pg.page.locator("#status")).to_have_text("Message sent", timeout=WAIT_MS)
    raw = imap_find(server, BOB, "INBOX", f"Fwd: {subject}")[0]
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert {a.get_filename() for a in msg.iter_attachments()} == {"keep.bin"}


def test_draft_is_saved_in_drafts(server, open_page):
    subject = unique("Unfinished")
    pg = open_page()
    pg.page.click("#compose-btn")
    pg.page.fill("#c-to", BOB)
    pg.page.fill("#c-subject", subject)
    pg.page.fill("#c-body", "to be continued")
    pg.page.click("#draft-btn")
    expect(pg.page.locator("#status")).to_have_text("Draft saved", timeout=WAIT_MS)
    raw = imap_find(server, ALICE, "Drafts", subject)
    assert len(raw) == 1
    assert "\\Draft" in imap_flags(server, ALICE, "Drafts", subject)
    pg.page.click("#draft-btn")  # saving again replaces, not duplicates
    expect(pg.page.locator("#status")).to_have_text("Draft saved", timeout=WAIT_MS)
    time.sleep(0.5)
    assert len(imap_find(server, ALICE, "Drafts", subject)) == 1


# --------------------------------------------------------------------------
# filing


def test_move_delete_and_flags_are_seen_over_imap(server, open_page):
    folder = unique("Projects")
    imap_create(server, ALICE, folder)
    moved, deleted, flagged = unique("Move me"), unique("Delete me"), unique("Flag me")
    for s in (moved, deleted, flagged):
        server.send(ALICE, message(BOB, ALICE, s, s))
    pg = open_page()
    page = pg.page
    open_message(pg, moved)
    page.select_option("#move-select", label=folder)
    expect(page.locator("#status")).to_contain_text("Moved to", timeout=WAIT_MS)
    imap_find(server, ALICE, folder, moved)

    open_message(pg, deleted)
    page.keyboard.press("Delete")
    expect(page.locator("#status")).to_have_text("Moved to Trash", timeout=WAIT_MS)
    imap_find(server, ALICE, "Trash", deleted)
    expect(page.locator("#message-list li", has_text=deleted)).to_have_count(0)

    open_message(pg, flagged)
    page.click("#flag-btn")
    expect(page.locator("#status")).to_have_text("Flagged", timeout=WAIT_MS)
    page.click("#unread-btn")
    expect(page.locator("#status")).to_have_text("Marked unread", timeout=WAIT_MS)
    flags = imap_flags(server, ALICE, "INBOX", flagged)
    assert "\\Flagged" in flags and "\\Seen" not in flags, flags


# --------------------------------------------------------------------------
# address book


def test_contact_added_then_completed_in_compose(server, open_page):
    pg = open_page()
    page = pg.page
    page.click("#contacts-btn")
    page.fill("#ct-name", "Zelda Quartermain")
    page.fill("#ct-email", "zelda@example.test")
    page.click("#ct-add")
    expect(page.locator("#contact-list .contact", has_text="Zelda Quartermain")).to_be_visible(timeout=WAIT_MS)
    pg.shot("05-contacts")
    page.click("#compose-btn")
    page.locator("#c-to").type("Quarter", delay=40)
    expect(page.locator("#suggest li", has_text="zelda@example.test")).to_be_visible(timeout=WAIT_MS)
    pg.shot("06-completion")
    page.keyboard.press("Enter")
    expect(page.locator("#c-to")).to_have_value("Zelda Quartermain <zelda@example.test>, ")


def test_directory_users_are_completed_in_compose(server, open_page):
    pg = open_page()
    pg.page.click("#compose-btn")
    pg.page.locator("#c-to").type("bob@", delay=40)
    expect(pg.page.locator("#suggest li", has_text=BOB)).to_be_visible(timeout=WAIT_MS)


# --------------------------------------------------------------------------
# keyboard, small screens, logout


def test_keyboard_shortcuts_move_open_and_compose(server, open_page):
    subjects = [unique(f"Key {i}") for i in range(3)]
    for s in subjects:
        server.send(ALICE, message(BOB, ALICE, s, s))
    server.wait_count(ALICE, 3)
    pg = open_page()
    page = pg.page
    page.fill("#search-input", "Key")
    page.press("#search-input", "Enter")
    expect(page.locator("#message-list li").first).to_be_visible(timeout=WAIT_MS)
    page.locator("#message-list").focus()
    first = page.locator("#message-list li.selected").get_attribute("data-id")
    page.keyboard.press("j")
    second = page.locator("#message-list li.selected").get_attribute("data-id")
    assert first != second
    page.keyboard.press("k")
    assert page.locator("#message-list li.selected").get_attribute("data-id") == first
    page.keyboard.press("o")
    expect(page.locator("#reader")).to_be_visible(timeout=WAIT_MS)
    page.keyboard.press("u")
    expect(page.locator("#reader")).to_be_hidden()
    page.keyboard.press("c")
    expect(page.locator("#compose")).to_be_visible()
    assert page.evaluate("document.activeElement.id") == "c-to"
    page.keyboard.press("Escape")  # typing in a field: Escape stays with the field
    page.click("#discard-btn")
    page.keyboard.press("?")
    expect(page.locator("#help")).to_be_visible()
    expect(page.locator("#help")).to_contain_text("j / k")


def test_phone_sized_screen_shows_one_pane_without_sideways_scrolling(server, open_page):
    subject = unique("Phone")
    server.send(ALICE, message(BOB, ALICE, subject, "small screen " * 40))
    pg = open_page(viewport=(390, 800))
    page = pg.page
    expect(page.locator("#mailboxes")).to_be_hidden()
    page.click("#menu-toggle")
    expect(page.locator("#mailboxes")).to_be_visible()
    pg.shot("07-phone-folders")
    select_mailbox(pg, "inbox")
    expect(page.locator("#mailboxes")).to_be_hidden()
    pg.shot("08-phone-list")
    open_message(pg, subject)
    expect(page.locator("#list-pane")).to_be_hidden()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    pg.shot("09-phone-reader")
    page.click("#back-btn")
    expect(page.locator("#list-pane")).to_be_visible()


def test_logout_ends_the_session(server, open_page):
    pg = open_page()
    pg.page.click("#logout-btn")
    pg.page.wait_for_url(re.compile(r"/login$"), timeout=WAIT_MS)
    pg.page.goto(pg.base + "/")
    assert pg.page.url.endswith("/login")
    r = pg.page.request.get(pg.base + "/session-info")
    assert r.status == 401


# --------------------------------------------------------------------------
# hostile HTML


class ImageHost:
    """A 'remote' host on loopback that counts every request it gets."""

    def __init__(self):
        self.hits: list[str] = []
        hits = self.hits

        class H(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/gif")
                self.end_headers()
                self.wfile.write(b"GIF89a")

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def hostile_html(host: str) -> str:
    return f"""<html><head><style>body {{ background: url(http://{host}/css-bg.gif) }}</style>
<script>window.__pwned = 'script'</script></head>
<body>
<p id="greeting">Visible text survives.</p>
<img src="x" onerror="window.__pwned = 'onerror'">
<img src="http://{host}/tracker.gif" alt="tracker">
<a href="javascript:window.__pwned='link'">click me</a>
<div style="width: expression(window.__pwned = 'expression'); background-image: url(http://{host}/style.gif)">styled</div>
<svg xmlns="http://www.w3.org/2000/svg" onload="window.__pwned='svg-onload'"><script>window.__pwned='svg'</script>
<image href="http://{host}/svg-image.gif"/></svg>
<iframe src="http://{host}/frame.html"></iframe>
<form action="http://{host}/steal"><input name="p"></form>
<object data="http://{host}/obj"></object>
<table background="http://{host}/table.gif"><tr><td>cell</td></tr></table>
</body></html>"""


def test_hostile_html_runs_nothing_and_fetches_nothing_remote(server, open_page):
    host = ImageHost()
    try:
        where = f"127.0.0.1:{host.port}"
        subject = unique("Hostile")
        server.send(ALICE, message(BOB, ALICE, subject, "plain part", html=hostile_html(where)))
        pg = open_page()
        page = pg.page
        open_message(pg, subject)
        body = page.locator("#thread .email.open .html-body")
        expect(body).to_contain_text("Visible text survives.", timeout=WAIT_MS)
        expect(page.locator(".images-bar")).to_contain_text("1 remote image")
        body.locator("a", has_text="click me").click()  # ids are stripped
        page.wait_for_timeout(1000)
        pg.shot("10-hostile")
        assert page.evaluate("window.__pwned") is None
        inner = body.inner_html().lower()
        for bad in ("<script", "onerror", "onload", "javascript:", "expression(", "<svg", "<iframe",
                    "<form", "<object", "style=", where):
            assert bad not in inner, f"{bad!r} reached the page: {inner}"
        assert host.hits == [], f"the remote host was contacted: {host.hits}"
        assert not [u for u in pg.requests if where in u], pg.requests
        assert pg.errors == [], pg.errors
    finally:
        host.stop()


def test_remote_images_load_only_when_asked(server, open_page):
    host = ImageHost()
    try:
        where = f"127.0.0.1:{host.port}"
        subject = unique("Newsletter")
        html = f'<p>News</p><img src="http://{where}/pixel.gif" alt="pixel">'
        server.send(ALICE, message(BOB, ALICE, subject, "News", html=html))
        pg = open_page()
        open_message(pg, subject)
        expect(pg.page.locator(".html-body")).to_contain_text("News", timeout=WAIT_MS)
        assert host.hits == []
        pg.page.click(".show-images")
        img = pg.page.locator(".html-body img[alt=pixel]")
        expect(img).to_have_attribute("src", f"http://{where}/pixel.gif", timeout=WAIT_MS)
    finally:
        host.stop()


# --------------------------------------------------------------------------
# the site: slapd, an mta-in, two stores, two mems sharing their keys


SITE_STORE_TOML = """
[listener.https]
enabled = false

[store]
host = "{host}"
min_free_disk = 1048576

# bob's directory entry names this partition (tests/ldap/base.ldif).
[store.partition.secondary]
path = "partition/secondary"

[http]
token_key_file = "{keys}/token.key"

[mta]
delivery_timeout = 10
# A store has no queue: what the webmail sends goes to the site's mta-in.
relay = "127.0.0.1:{relay}"
relay_tls = "none"
"""

SITE_MTA_TOML = """
[mta]
delivery_timeout = 10

[mta.hosts]
{hosts}

[queue]
retry_base = 1
"""

SITE_MEM_TOML = """
[listener.https]
enabled = false

[http]
token_key_file = "{keys}/token.key"

[mem]
session_key_file = "{keys}/session.key"
connect_timeout = 2
store_timeout = 10

[mem.stores]
{stores}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from tiers import EXTRA_LDIF, PASSWORDS, Ldap, Node

    root = tmp_path_factory.mktemp("webmail-site")
    keys = root / "keys"
    keys.mkdir()
    ldap = Ldap(root / "ldap", EXTRA_LDIF)
    listeners = ("lmtp", "imap", "http")
    s1 = Node(root / "store1", "store", "store1.test", ldap, listeners=listeners)
    s2 = Node(root / "store2", "store", "store2.test", ldap, listeners=listeners)
    hosts = "\n".join(f'"{n.name}" = "127.0.0.1:{n.ports["lmtp"]}"' for n in (s1, s2))
    mta = Node(root / "mta-in", "mta-in", "mx.example.test", ldap, SITE_MTA_TOML.format(hosts=hosts))
    for n in (s1, s2):
        n.extra = SITE_STORE_TOML.format(host=n.name, keys=keys, relay=mta.ports["smtp"])
        # The personal address books live in the directory (tests/ldap/base.ldif).
        n.config_path.write_text(n.config_text().replace(
            "[directory.ldap]\n", '[directory.ldap]\npab_base = "ou=pab,dc=example,dc=test"\n', 1))
    stores = "\n".join(f'"{n.name}" = "127.0.0.1:{n.ports["http"]}"' for n in (s1, s2))
    mems = [Node(root / name, "mem", f"{name}.test", ldap, SITE_MEM_TOML.format(keys=keys, stores=stores),
                 listeners=("http",)) for name in ("mem-a", "mem-b")]
    nodes = [mta, s1, s2, *mems]
    try:
        ldap.start()
        for n in nodes:
            n.start()
        yield {"s1": s1, "s2": s2, "a": mems[0], "b": mems[1], "passwords": PASSWORDS}
    finally:
        for n in nodes:
            if n.running:
                n.stop()
            n.cleanup()
        if ldap.running:
            ldap.stop()


def lmtp_deliver(node, rcpt: str, data: bytes) -> None:
    import smtplib
    with smtplib.LMTP("127.0.0.1", node.ports["lmtp"], timeout=20) as s:
        s.ehlo("client.example")
        refused = s.sendmail(BOB, [rcpt], data)
    assert refused == {}, refused


def test_site_login_on_a_mem_read_send_to_the_other_store_and_second_mem(browser, site):
    """alice (store1) logs in on mem-a, reads a message delivered to store1,
    writes to bob (store2), who gets it over IMAP on store2; alice's cookie
    then works on mem-b too."""
    a, b = site["a"], site["b"]
    subject = unique("Site hello")
    lmtp_deliver(site["s1"], ALICE, message(BOB, ALICE, subject, "delivered to store1"))
    pg = Page(browser, f"http://127.0.0.1:{a.ports['http']}")
    try:
        login(pg, ALICE, site["passwords"][ALICE])
        open_message(pg, subject)
        expect(pg.page.locator("#thread .email.open .body")).to_contain_text("delivered to store1")
        pg.shot("11-site-reader")

        # A contact in the PAB (LDAP), completed in compose.
        pg.page.click("#contacts-btn")
        pg.page.fill("#ct-name", "Yolanda Site")
        pg.page.fill("#ct-email", "yolanda@example.test")
        pg.page.click("#ct-add")
        expect(pg.page.locator("#contact-list .contact", has_text="Yolanda Site")).to_be_visible(timeout=WAIT_MS)
        pg.page.click("#compose-btn")
        pg.page.locator("#c-to").type("Yolan", delay=40)
        expect(pg.page.locator("#suggest li", has_text="yolanda@example.test")).to_be_visible(timeout=WAIT_MS)
        pg.page.keyboard.press("Enter")
        expect(pg.page.locator("#c-to")).to_have_value("Yolanda Site <yolanda@example.test>, ")
        pg.page.click("#discard-btn")

        # The same browser session on the second mem.
        cookies = pg.ctx.cookies(f"http://127.0.0.1:{a.ports['http']}")
        other = Page(browser, f"http://127.0.0.1:{b.ports['http']}")
        try:
            other.ctx.add_cookies([
                {"name": c["name"], "value": c["value"], "url": other.base + "/"}
                for c in cookies if c["name"] == "msgd_session"
            ])
            other.page.goto(other.base + "/")
            expect(other.page.locator("header #user")).to_have_text(ALICE, timeout=WAIT_MS)
            expect(other.page.locator("#message-list li", has_text=subject)).to_be_visible(timeout=WAIT_MS)
        finally:
            other.close()

        # To bob on the other store, checked there over IMAP.
        sent = unique("Across stores")
        pg.page.click("#compose-btn")
        pg.page.fill("#c-to", BOB)
        pg.page.fill("#c-subject", sent)
        pg.page.fill("#c-body", "from store1 to store2")
        pg.page.click("#send-btn")
        expect(pg.page.locator("#status")).to_have_text("Message sent", timeout=WAIT_MS)
        m = site["s2"].imap(BOB, site["passwords"][BOB])
        try:
            deadline = time.monotonic() + 30
            while True:
                m.select("INBOX", readonly=True)
                typ, data = m.search(None, "SUBJECT", f'"{sent}"')
                if data[0] or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert data[0], f"{sent!r} did not reach bob on store2"
        finally:
            m.logout()
    finally:
        pg.close()
