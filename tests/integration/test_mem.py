"""The mem role (webmail front end) with real components: a private slapd
(tests/ldap), two `msgd --role store` (store1.test, store2.test) serving
HTTP, several `msgd --role mem` sharing one session key and one bearer-token
key, HAProxy in front of one of them, and `--role all-in-one`.

Besides the real stores, two stand-ins the test controls are stores too:
`store3.test` (the mailHost of `misrouted@example.test`, tiers.EXTRA_LDIF)
is a Python HTTP server that echoes what the mem forwarded (method, path,
headers, body digest) and streams downloads and an event source; and
`store4.test` (the mailHost of `slowpoke@example.test`) accepts TCP
connections and never answers.

The store's JMAP answers come from the jmap-core work; until it is merged
the stores answer /jmap/session with their stub (501), which is enough to
see where a call went.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import re
import socket
import struct
import subprocess
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

try:
    import requests
    import urllib3
except ImportError:
    pytest.fail("python3-requests is missing: apt-get install -y python3-requests "
                "(or scripts/install-test-deps.sh)", pytrace=False)

from conftest import free_ports, port_accepts, wait_until
from tiers import EXTRA_LDIF, PASSWORDS, Ldap, Node

urllib3.disable_warnings()

ALICE = "alice@example.test"  # store1
BOB = "bob@example.test"  # store2
CAROL = "carol@example.test"  # store1
MISROUTED = "misrouted@example.test"  # store3.test: the echo server
SLOW = "slowpoke@example.test"  # store4.test: never answers
HAPROXY_INSTALL = "apt-get install -y haproxy (or scripts/install-test-deps.sh)"

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; "
       "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")

MEM_LDIF = EXTRA_LDIF + textwrap.dedent("""\

    dn: uid=slowpoke,ou=people,dc=example,dc=test
    objectClass: inetOrgPerson
    objectClass: msgdMailUser
    uid: slowpoke
    cn: Slow Poke
    sn: Poke
    mail: slowpoke@example.test
    mailHost: store4.test
    userPassword: {SSHA}54E4mFiOifM43Tws1vSsusotyHD10jSa
    """)
PASSWORDS = dict(PASSWORDS, **{SLOW: "frank-secret"})

# conftest.LISTENERS has no https: each node here says what it wants.
NO_HTTPS = """
[listener.https]
enabled = false
"""

STORE_TOML = NO_HTTPS + """
[store]
host = "{host}"
min_free_disk = 1048576

[store.partition.secondary]
path = "partition/secondary"

[http]
token_key_file = "{keys}/token.key"
"""


# --------------------------------------------------------------------------
# the stand-in stores


class Echo:
    """store3.test: answers every forwarded request with what it received.
    `/jmap/download/...` streams `DOWNLOAD` bytes; `/jmap/eventsource` sends
    one event, waits for `release`, sends a second; `/jmap/upload/...`
    sets `upload_started` once the first bytes are in."""

    DOWNLOAD = 8 * 1024 * 1024

    def __init__(self):
        self.release = threading.Event()
        self.upload_started = threading.Event()
        echo = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def read_body(self) -> bytes:
                h = hashlib.sha256()
                n = 0
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        left = size
                        while left:
                            b = self.rfile.read(min(left, 65536))
                            if not b:
                                raise ConnectionError("short chunk")
                            h.update(b)
                            n += len(b)
                            left -= len(b)
                            if n >= 65536:
                                echo.upload_started.set()
                        self.rfile.readline()
                else:
                    left = int(self.headers.get("Content-Length") or 0)
                    while left:
                        b = self.rfile.read(min(left, 65536))
                        if not b:
                            break
                        h.update(b)
                        n += len(b)
                        left -= len(b)
                        if n >= 65536:
                            echo.upload_started.set()
                return n, h.hexdigest()

            def answer(self):
                if self.path.startswith("/jmap/download/"):
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(Echo.DOWNLOAD))
                    self.send_header("Set-Cookie", "store=leak")
                    self.end_headers()
                    block = bytes(range(256)) * 256
                    for _ in range(Echo.DOWNLOAD // len(block)):
                        self.wfile.write(block)
                    return
                if self.path.startswith("/jmap/eventsource"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()

                    def chunk(data: bytes):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()

                    chunk(b"event: state\ndata: {\"first\":1}\n\n")
                    echo.release.wait(20)
                    chunk(b"event: state\ndata: {\"second\":2}\n\n")
                    chunk(b"")
                    return
                n, digest = self.read_body()
                out = json.dumps({
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "length": n,
                    "sha256": digest,
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class BlackHole:
    """store4.test: the kernel accepts connections, nobody ever answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]

    def stop(self):
        self.sock.close()


# --------------------------------------------------------------------------
# the cluster


def mem_toml(keys, stores: dict[str, int], mem_extra: str = "", limits: str = "") -> str:
    mapping = "\n".join(f'"{h}" = "127.0.0.1:{p}"' for h, p in stores.items())
    return textwrap.dedent(f"""
        [http]
        token_key_file = "{keys}/token.key"

        [limits]
        login_failure_delay_ms = 0
        {limits}

        [mem]
        session_key_file = "{keys}/session.key"
        connect_timeout = 2
        store_timeout = 3
        {mem_extra}

        [mem.stores]
        """) + mapping + "\n"


class Cluster:
    def __init__(self, root):
        self.root = root
        self.keys = root / "keys"
        self.keys.mkdir(parents=True)
        self.ldap = Ldap(root / "ldap", MEM_LDIF)
        store_listeners = ("lmtp", "imap", "http")
        self.s1 = Node(root / "store1", "store", "store1.test", self.ldap,
                       STORE_TOML.format(host="store1.test", keys=self.keys), listeners=store_listeners)
        self.s2 = Node(root / "store2", "store", "store2.test", self.ldap,
                       STORE_TOML.format(host="store2.test", keys=self.keys), listeners=store_listeners)
        self.echo = Echo()
        self.hole = BlackHole()
        self.stores = {
            "store1.test": self.s1.ports["http"],
            "store2.test": self.s2.ports["http"],
            "store3.test": self.echo.port,
            "store4.test": self.hole.port,
        }
        self.a = self.make_mem("mem-a", https=True)
        self.b = self.make_mem("mem-b")
        # short idle expiry, same keys
        self.e = self.make_mem("mem-e", mem_extra="session_idle = 2")
        self.nodes = [self.s1, self.s2, self.a, self.b, self.e]

    def make_mem(self, name, mem_extra="", limits="", https=False, listener_options=None) -> Node:
        port = free_ports(1)[0]
        tls = (f'[listener.https]\nbind = ["127.0.0.1:{port}"]\nenabled = true\n' if https else NO_HTTPS)
        node = Node(self.root / name, "mem", f"{name}.test", self.ldap,
                    tls + mem_toml(self.keys, self.stores, mem_extra, limits),
                    listeners=("http",), listener_options=listener_options)
        if https:
            node.ports["https"] = port
        return node

    def logs(self) -> str:
        return "\n".join(n.log(5000) for n in self.nodes)


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("mem"))
    try:
        c.ldap.start()
        c.echo.start()
        for n in c.nodes:
            n.start()
        yield c
        errors = []
        for n in c.nodes:
            if n.running:
                try:
                    n.stop()
                except BaseException as e:  # pytest.fail is a BaseException
                    errors.append(str(e))
        if errors:
            pytest.fail("\n".join(errors), pytrace=False)
    finally:
        for n in c.nodes:
            n.cleanup()
        c.echo.stop()
        c.hole.stop()
        if c.ldap.running:
            c.ldap.stop()


@pytest.fixture(autouse=True)
def logs_on_failure(request, cl):
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before:
        print(cl.logs())


# --------------------------------------------------------------------------
# helpers


def base(node: Node, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{node.ports[scheme]}"


def login(node: Node, user: str, password: str | None = None, scheme: str = "http"):
    """A new browser session: GET /login, POST the form. Returns (session,
    the POST's response)."""
    s = requests.Session()
    s.verify = False
    url = base(node, scheme)
    r = s.get(url + "/login", timeout=20, verify=False)
    assert r.status_code == 200, r.text
    m = re.search(r'name="csrf" value="([^"]+)"', r.text)
    assert m, r.text
    r = s.post(url + "/login", data={"user": user, "password": password or PASSWORDS[user],
                                     "csrf": m.group(1)}, allow_redirects=False, timeout=30, verify=False)
    return s, r


def logged_in(node: Node, user: str, scheme: str = "http"):
    s, r = login(node, user, scheme=scheme)
    assert r.status_code == 303 and r.headers["Location"] == "/", (r.status_code, r.text)
    assert s.cookies.get("msgd_session"), r.headers
    return s


def csrf_of(node: Node, s: requests.Session) -> str:
    r = s.get(base(node) + "/session-info", timeout=20)
    assert r.status_code == 200, r.text
    return r.json()["csrfToken"]


def cookie_only(s: requests.Session) -> dict:
    return {"Cookie": f"msgd_session={s.cookies.get('msgd_session')}"}


def reached_store_stub_or_jmap(r: requests.Response) -> bool:
    """A real store answered /jmap/session: the JMAP session resource once
    jmap-core is merged, its stub (501) before."""
    if r.status_code == 200:
        return "apiUrl" in r.json()
    return r.status_code == 501 and "JMAP" in r.text


MAIL = "urn:ietf:params:jmap:mail"


def mailbox_names(node: Node, s: requests.Session, headers: dict | None = None) -> set[str]:
    """JMAP through `node`: the session resource (whose URLs name `node`,
    from X-Forwarded-Host), then Mailbox/get on the primary mail account."""
    headers = dict(headers or {})
    r = s.get(base(node) + "/jmap/session", headers=headers, timeout=20)
    assert r.status_code == 200, (r.status_code, r.text)
    session = r.json()
    assert session["apiUrl"].startswith(base(node)), session["apiUrl"]
    account = session["primaryAccounts"][MAIL]
    info = s.get(base(node) + "/session-info", headers=headers, timeout=20).json()
    body = {"using": ["urn:ietf:params:jmap:core", MAIL],
            "methodCalls": [["Mailbox/get", {"accountId": account, "ids": None}, "0"]]}
    r = s.post(base(node) + "/jmap/api", json=body,
               headers=dict(headers, **{"X-CSRF-Token": info["csrfToken"]}), timeout=20)
    assert r.status_code == 200, (r.status_code, r.text)
    name, args, tag = r.json()["methodResponses"][0]
    assert name == "Mailbox/get" and tag == "0", r.json()
    return {m["name"] for m in args["list"]}


# --------------------------------------------------------------------------
# login, sessions, cookies


def test_login_sets_a_sealed_httponly_strict_cookie_and_serves_the_page(cl):
    s, r = login(cl.a, ALICE)
    assert r.status_code == 303 and r.headers["Location"] == "/", r.text
    set_cookie = [v for k, v in r.raw.headers.items() if k.lower() == "set-cookie"]
    session_cookie = [c for c in set_cookie if c.startswith("msgd_session=")]
    assert len(session_cookie) == 1, set_cookie
    attrs = [a.strip() for a in session_cookie[0].split(";")]
    assert "HttpOnly" in attrs and "SameSite=Strict" in attrs and "Path=/" in attrs, attrs
    assert "Secure" not in attrs, "plain HTTP: no Secure attribute"
    value = attrs[0].split("=", 1)[1]
    # sealed: neither the user nor the mailHost readable in it
    assert ALICE not in value and "alice" not in base64.urlsafe_b64decode(value[3:] + "==").decode("latin-1")
    page = s.get(base(cl.a) + "/", allow_redirects=False, timeout=20)
    assert page.status_code == 200 and "<html" in page.text.lower(), page.text[:300]
    info = s.get(base(cl.a) + "/session-info", timeout=20).json()
    assert info["user"] == ALICE and len(info["csrfToken"]) >= 16, info


def test_https_login_cookie_is_secure(cl):
    s, r = login(cl.a, ALICE, scheme="https")
    assert r.status_code == 303, r.text
    c = [v for k, v in r.raw.headers.items() if k.lower() == "set-cookie" and v.startswith("msgd_session=")]
    assert c and "Secure" in [a.strip() for a in c[0].split(";")], c


def test_without_session_the_page_redirects_to_login_and_api_is_401(cl):
    r = requests.get(base(cl.a) + "/", allow_redirects=False, timeout=20)
    assert r.status_code == 303 and r.headers["Location"] == "/login"
    r = requests.get(base(cl.a) + "/jmap/session", timeout=20)
    assert r.status_code == 401 and r.headers["Content-Type"].startswith("application/problem+json"), r.text
    r = requests.get(base(cl.a) + "/session-info", timeout=20)
    assert r.status_code == 401


def test_wrong_password_and_unknown_user_refused(cl):
    for user, pw in ((ALICE, "wrong-password"), ("nobody@example.test", "x")):
        s, r = login(cl.a, user, pw)
        assert r.status_code == 401, (user, r.status_code)
        assert "Wrong user name or password" in r.text
        assert not s.cookies.get("msgd_session")


def test_login_form_needs_its_pre_session_token_and_same_origin(cl):
    url = base(cl.a)
    # no token at all (a cross-site form post)
    r = requests.post(url + "/login", data={"user": ALICE, "password": PASSWORDS[ALICE]},
                      allow_redirects=False, timeout=20)
    assert r.status_code == 403 and "msgd_session=" not in r.headers.get("Set-Cookie", "")
    # the right token, another site's Origin
    s = requests.Session()
    t = re.search(r'name="csrf" value="([^"]+)"', s.get(url + "/login", timeout=20).text).group(1)
    r = s.post(url + "/login", data={"user": ALICE, "password": PASSWORDS[ALICE], "csrf": t},
               headers={"Origin": "https://evil.example"}, allow_redirects=False, timeout=20)
    assert r.status_code == 403 and not s.cookies.get("msgd_session")
    # a token that is not the cookie's
    r = s.post(url + "/login", data={"user": ALICE, "password": PASSWORDS[ALICE], "csrf": "x" + t},
               allow_redirects=False, timeout=20)
    assert r.status_code == 403 and not s.cookies.get("msgd_session")


def test_session_made_on_mem_a_works_on_mem_b(cl):
    s = logged_in(cl.a, ALICE)
    r = requests.get(base(cl.b) + "/session-info", headers=cookie_only(s), timeout=20)
    assert r.status_code == 200 and r.json()["user"] == ALICE, r.text
    r = requests.get(base(cl.b) + "/jmap/session", headers=cookie_only(s), timeout=20)
    assert reached_store_stub_or_jmap(r), (r.status_code, r.text)
    # JMAP Mailbox/get through mem A, then with the same cookie through mem B
    assert "INBOX" in {n.upper() for n in mailbox_names(cl.a, s)}
    assert "INBOX" in {n.upper() for n in mailbox_names(cl.b, requests.Session(), cookie_only(s))}


def test_forged_and_modified_cookies_refused(cl):
    s = logged_in(cl.a, ALICE)
    value = s.cookies.get("msgd_session")
    raw = bytearray(base64.urlsafe_b64decode(value[3:] + "=" * (-len(value[3:]) % 4)))
    raw[20] ^= 1
    modified = "v1." + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    fake_json = "v1." + base64.urlsafe_b64encode(json.dumps(
        {"u": BOB, "h": "store2.test", "l": int(time.time()), "a": int(time.time()), "i": "x", "c": "y"}
    ).encode()).decode().rstrip("=")
    for bad in (modified, fake_json, value[:-4], "garbage", "v1." + "A" * 5000):
        for path in ("/session-info", "/jmap/session"):
            r = requests.get(base(cl.b) + path, headers={"Cookie": f"msgd_session={bad}"}, timeout=20)
            assert r.status_code == 401, (bad[:40], path, r.status_code, r.text)
        r = requests.get(base(cl.b) + "/", headers={"Cookie": f"msgd_session={bad}"},
                         allow_redirects=False, timeout=20)
        assert r.status_code == 303


def test_idle_session_expires_and_activity_renews_it(cl):
    """mem-e has session_idle = 2 s: a session left alone for longer is
    refused there (and still fine on mem-a, whose idle limit is long);
    requests in between renew it."""
    s = logged_in(cl.a, ALICE)
    hdr = cookie_only(s)
    r = requests.get(base(cl.e) + "/session-info", headers=hdr, timeout=20)
    assert r.status_code == 200, r.text
    # renewal: the answer carries a cookie with a new last-activity time
    renewed = r.cookies.get("msgd_session")
    assert renewed and renewed != s.cookies.get("msgd_session")
    for _ in range(3):
        time.sleep(1)
        r = requests.get(base(cl.e) + "/session-info", headers={"Cookie": f"msgd_session={renewed}"}, timeout=20)
        assert r.status_code == 200, "renewed session refused before its idle limit"
        renewed = r.cookies.get("msgd_session")
    time.sleep(3.5)
    r = requests.get(base(cl.e) + "/session-info", headers={"Cookie": f"msgd_session={renewed}"}, timeout=20)
    assert r.status_code == 401, r.text
    r = requests.get(base(cl.e) + "/jmap/session", headers={"Cookie": f"msgd_session={renewed}"}, timeout=20)
    assert r.status_code == 401
    r = requests.get(base(cl.a) + "/session-info", headers={"Cookie": f"msgd_session={renewed}"}, timeout=20)
    assert r.status_code == 200


def test_logout_clears_the_cookie_and_revokes_the_session(cl):
    s = logged_in(cl.a, ALICE)
    copied = cookie_only(s)
    token = csrf_of(cl.a, s)
    # logout without the token is refused (it changes state)
    r = requests.post(base(cl.a) + "/logout", headers=dict(copied, **{"X-CSRF-Token": "nope"}),
                      allow_redirects=False, timeout=20)
    assert r.status_code == 403
    r = s.post(base(cl.a) + "/logout", headers={"X-CSRF-Token": token}, allow_redirects=False, timeout=20)
    assert r.status_code == 303 and r.headers["Location"] == "/login"
    assert re.search(r"msgd_session=;.*Max-Age=0", r.headers.get("Set-Cookie", "")), r.headers
    assert not s.cookies.get("msgd_session")
    # a copy taken before logout is refused on this mem
    r = requests.get(base(cl.a) + "/session-info", headers=copied, timeout=20)
    assert r.status_code == 401
    # logout by the form field works too
    s2 = logged_in(cl.a, ALICE)
    r = s2.post(base(cl.a) + "/logout", data={"csrf": csrf_of(cl.a, s2)}, allow_redirects=False, timeout=20)
    assert r.status_code == 303 and not s2.cookies.get("msgd_session")


def replay_refused_everywhere(node: Node, copied: dict, csrf: str) -> None:
    """The page, /session-info and the JMAP API on `node` all refuse a
    cookie whose session a logout ended, and drop the cookie."""
    r = requests.get(base(node) + "/", headers=copied, allow_redirects=False, timeout=20)
    assert r.status_code == 303 and r.headers["Location"] == "/login", (r.status_code, r.text)
    assert re.search(r"msgd_session=;.*Max-Age=0", r.headers.get("Set-Cookie", "")), r.headers
    r = requests.get(base(node) + "/session-info", headers=copied, timeout=20)
    assert r.status_code == 401, (r.status_code, r.text)
    assert "csrfToken" not in r.text and csrf not in r.text
    body = {"using": ["urn:ietf:params:jmap:core", MAIL], "methodCalls": []}
    r = requests.post(base(node) + "/jmap/api", json=body,
                      headers=dict(copied, **{"X-CSRF-Token": csrf}), timeout=20)
    assert r.status_code == 401, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/problem+json")
    r = requests.get(base(node) + "/jmap/session", headers=copied, timeout=20)
    assert r.status_code == 401, (r.status_code, r.text)


def test_cookie_replayed_after_logout_is_refused_by_every_mem(cl):
    """Logout on mem A tells alice's store (store1) to end the session;
    mem B, which never saw the logout, refuses a copy of the cookie for
    the page, /session-info and the JMAP API, also after store1 and mem B
    restart (the store keeps ended sessions in its database)."""
    s = logged_in(cl.a, ALICE)
    copied = cookie_only(s)
    csrf = csrf_of(cl.a, s)
    # before logout the copy works on mem B (the control)
    assert "INBOX" in {n.upper() for n in mailbox_names(cl.b, requests.Session(), copied)}
    other = logged_in(cl.b, ALICE)  # another session of the same user
    r = s.post(base(cl.a) + "/logout", headers={"X-CSRF-Token": csrf}, allow_redirects=False, timeout=20)
    assert r.status_code == 303
    # mem A refuses the copy (it served the logout), mem B too
    r = requests.get(base(cl.a) + "/session-info", headers=copied, timeout=20)
    assert r.status_code == 401
    replay_refused_everywhere(cl.b, copied, csrf)
    # the user's other session is untouched
    assert "INBOX" in {n.upper() for n in mailbox_names(cl.b, other)}
    # store1 and mem B restart: nothing in memory remembers the logout
    cl.s1.stop()
    cl.b.stop()
    cl.s1.start()
    cl.b.start()
    replay_refused_everywhere(cl.b, copied, csrf)
    assert "INBOX" in {n.upper() for n in mailbox_names(cl.b, other)}


def test_logout_while_the_store_is_down_logs_the_browser_out_and_no_mem_hands_out_its_token(cl):
    """store1 cannot record the logout: the browser is logged out all the
    same, the mem logs it, and /session-info on another mem gives no CSRF
    token while it cannot ask the store (503, not a guess)."""
    s = logged_in(cl.a, ALICE)
    copied = cookie_only(s)
    csrf = csrf_of(cl.a, s)
    cl.s1.stop()
    try:
        r = s.post(base(cl.a) + "/logout", headers={"X-CSRF-Token": csrf}, allow_redirects=False, timeout=30)
        assert r.status_code == 303 and not s.cookies.get("msgd_session")
        assert "did not record a webmail logout" in cl.a.log(5000)
        r = requests.get(base(cl.b) + "/session-info", headers=copied, timeout=30)
        assert r.status_code == 503 and csrf not in r.text, (r.status_code, r.text)
    finally:
        cl.s1.start()


# --------------------------------------------------------------------------
# forwarding


def test_jmap_calls_need_the_csrf_token_for_state_changes(cl):
    s = logged_in(cl.a, MISROUTED)
    token = csrf_of(cl.a, s)
    body = {"using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
            "methodCalls": [["Mailbox/get", {"accountId": "x"}, "0"]]}
    for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": token[:-1]}):
        r = s.post(base(cl.a) + "/jmap/api", json=body, headers=headers, timeout=20)
        assert r.status_code == 403, (headers, r.status_code, r.text)
        assert r.headers["Content-Type"].startswith("application/problem+json")
        # a refused request does not renew the session
        assert "msgd_session" not in r.headers.get("Set-Cookie", "")
    for method in ("PUT", "PATCH", "DELETE"):
        r = s.request(method, base(cl.a) + "/jmap/api", timeout=20)
        assert r.status_code == 403, method
    r = s.post(base(cl.a) + "/jmap/api", json=body, headers={"X-CSRF-Token": token}, timeout=20)
    assert r.status_code == 200, r.text
    assert "msgd_session=" in r.headers.get("Set-Cookie", "")
    echo = r.json()
    assert echo["method"] == "POST" and echo["path"] == "/jmap/api"


def test_refused_post_keeps_the_connection_usable(cl):
    """A POST refused for its CSRF token whose body arrives after the
    headers: the mem reads the small body, so the browser's keep-alive
    connection serves the next request."""
    s = logged_in(cl.a, MISROUTED)
    cookie = cookie_only(s)["Cookie"]
    body = b'{"using":[],"methodCalls":[]}'
    with socket.create_connection(("127.0.0.1", cl.a.ports["http"]), timeout=20) as c:
        c.sendall(b"POST /jmap/api HTTP/1.1\r\nHost: x\r\nCookie: " + cookie.encode() +
                  b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
                  b"\r\n\r\n")
        time.sleep(0.3)
        c.sendall(body)
        f = c.makefile("rb")
        status = f.readline()
        assert status.startswith(b"HTTP/1.1 403"), status
        length = 0
        while (line := f.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
            assert not line.lower().startswith(b"connection: close"), line
        f.read(length)
        c.sendall(b"GET /session-info HTTP/1.1\r\nHost: x\r\nCookie: " + cookie.encode() + b"\r\n\r\n")
        assert f.readline().startswith(b"HTTP/1.1 200")


def test_forwarded_request_carries_a_bearer_token_for_the_user_and_no_cookie(cl):
    s = logged_in(cl.b, MISROUTED)
    token = csrf_of(cl.b, s)
    r = s.post(base(cl.b) + "/jmap/api?x=1", data=b'{"using":[]}',
               headers={"X-CSRF-Token": token, "Content-Type": "application/json",
                        "Authorization": "Basic Zm9vOmJhcg==", "X-Forwarded-Host": "evil.example"},
               timeout=20)
    assert r.status_code == 200, r.text
    h = r.json()["headers"]
    assert r.json()["path"] == "/jmap/api?x=1"
    assert "cookie" not in h and "x-csrf-token" not in h, h
    assert h["x-forwarded-host"] == f"127.0.0.1:{cl.b.ports['http']}", h
    assert h["x-forwarded-proto"] == "http" and h["x-forwarded-for"] == "127.0.0.1", h
    assert h["content-type"] == "application/json"
    auth = h["authorization"]
    assert auth.startswith("Bearer msgd2."), auth
    tok = auth.split(" ", 1)[1]
    body, mac = tok.rsplit(".", 1)
    _, user, _expiry, sid = body.split(".")
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", sid), "the session id rides in the token"
    assert base64.urlsafe_b64decode(user + "=" * (-len(user) % 4)).decode() == MISROUTED
    key = bytes.fromhex((cl.keys / "token.key").read_text().strip())
    want = base64.urlsafe_b64encode(hmac.new(key, body.encode(), hashlib.sha256).digest()).decode().rstrip("=")
    assert mac == want, "the token is signed with the shared http.token_key_file"


def test_users_are_forwarded_to_their_own_store(cl):
    """alice lives on store1, bob on store2: with store1 stopped alice's
    calls get 503 while bob's still reach store2."""
    a = logged_in(cl.a, ALICE)
    b = logged_in(cl.a, BOB)
    assert reached_store_stub_or_jmap(a.get(base(cl.a) + "/jmap/session", timeout=20))
    assert reached_store_stub_or_jmap(b.get(base(cl.a) + "/jmap/session", timeout=20))
    cl.s1.stop()
    try:
        r = a.get(base(cl.a) + "/jmap/session", timeout=30)
        assert r.status_code == 503, (r.status_code, r.text)
        assert r.headers["Content-Type"].startswith("application/problem+json")
        assert r.json()["status"] == 503
        r = b.get(base(cl.a) + "/jmap/session", timeout=30)
        assert reached_store_stub_or_jmap(r), (r.status_code, r.text)
        assert r.json()["username"] == BOB, r.json()
        assert "INBOX" in {n.upper() for n in mailbox_names(cl.a, b)}
        # a browser navigation gets a page
        r = a.get(base(cl.a) + "/jmap/download/a/b/c", headers={"Accept": "text/html"}, timeout=30)
        assert r.status_code == 503 and "text/html" in r.headers["Content-Type"]
        assert "not answering" in r.text and "<script" not in r.text
    finally:
        cl.s1.start()
    assert reached_store_stub_or_jmap(a.get(base(cl.a) + "/jmap/session", timeout=20))


def test_store_that_never_answers_gets_503_not_a_hang(cl):
    """store4.test accepts and stays silent: the mem gives up after
    connect_timeout + store_timeout (5 s here) with a 503."""
    s = logged_in(cl.a, SLOW)
    try:
        r = s.get(base(cl.a) + "/jmap/session", timeout=30)
    except requests.exceptions.Timeout:
        pytest.fail("the mem did not answer within 30 s for a silent store")
    assert r.status_code == 503 and r.json()["status"] == 503, r.text


def test_download_streams_through_and_store_cookies_stay_out(cl):
    s = logged_in(cl.a, MISROUTED)
    r = s.get(base(cl.a) + "/jmap/download/acc/blob/name.bin", stream=True, timeout=30)
    assert r.status_code == 200
    assert "store=leak" not in r.headers.get("Set-Cookie", "")
    h = hashlib.sha256()
    n = 0
    for chunk in r.iter_content(65536):
        h.update(chunk)
        n += len(chunk)
    block = bytes(range(256)) * 256
    want = hashlib.sha256(block * (Echo.DOWNLOAD // len(block))).hexdigest()
    assert n == Echo.DOWNLOAD and h.hexdigest() == want


def test_upload_streams_to_the_store(cl):
    """The upload body reaches the store while the client is still sending:
    the client sends its first 128 KiB and waits until the store has them
    before sending the rest (a buffering proxy would deadlock: fail)."""
    s = logged_in(cl.a, MISROUTED)
    token = csrf_of(cl.a, s)
    cl.echo.upload_started.clear()
    part = b"u" * 131072
    digest = hashlib.sha256()

    def body():
        digest.update(part)
        yield part
        assert cl.echo.upload_started.wait(15), "the store saw nothing of the upload yet"
        for _ in range(40):
            digest.update(part)
            yield part

    r = s.post(base(cl.a) + "/jmap/upload/acc", data=body(), headers={"X-CSRF-Token": token,
               "Content-Type": "application/octet-stream"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["length"] == 41 * len(part) and r.json()["sha256"] == digest.hexdigest()


def test_eventsource_is_streamed(cl):
    s = logged_in(cl.a, MISROUTED)
    cl.echo.release.clear()
    r = s.get(base(cl.a) + "/jmap/eventsource?types=*&closeafter=no&ping=0", stream=True, timeout=30)
    try:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        lines = r.iter_lines()
        got = []
        for line in lines:
            got.append(line)
            if line.startswith(b"data:"):
                break
        # the first event arrived while the store still holds the second
        assert got[-1] == b'data: {"first":1}', got
        cl.echo.release.set()
        rest = b"\n".join(lines)
        assert b'data: {"second":2}' in rest
    finally:
        cl.echo.release.set()
        r.close()


def test_blob_upload_and_download_through_the_mem_to_a_real_store(cl):
    """A 3 MB blob uploaded through mem A to alice's store and read back
    through mem B; bob, on the other store, cannot read it."""
    s = logged_in(cl.a, ALICE)
    session = s.get(base(cl.a) + "/jmap/session", timeout=20).json()
    account = session["primaryAccounts"][MAIL]
    token = csrf_of(cl.a, s)
    data = bytes(range(251)) * (3 * 1024 * 1024 // 251)
    upload = session["uploadUrl"].replace("{accountId}", account)
    assert upload.startswith(base(cl.a)), upload
    r = s.post(upload, data=data, headers={"X-CSRF-Token": token, "Content-Type": "application/octet-stream"},
               timeout=60)
    assert r.status_code in (200, 201), (r.status_code, r.text)
    blob = r.json()["blobId"]
    assert r.json()["size"] == len(data)
    url = (session["downloadUrl"].replace("{accountId}", account).replace("{blobId}", blob)
           .replace("{name}", "x.bin").replace("{type}", "application/octet-stream"))
    url = url.replace(base(cl.a), base(cl.b))
    r = requests.get(url, headers=cookie_only(s), timeout=60)
    assert r.status_code == 200 and r.content == data, (r.status_code, len(r.content))
    b = logged_in(cl.a, BOB)
    r = b.get(url.replace(base(cl.b), base(cl.a)), timeout=60)
    assert r.status_code in (403, 404), (r.status_code, r.text[:200])


def test_push_from_a_real_store_through_the_mem(cl):
    """An event source opened through the mem gets the store's StateChange
    when a message is appended over IMAP."""
    s = logged_in(cl.b, ALICE)
    r = s.get(base(cl.b) + "/jmap/eventsource?types=*&closeafter=no&ping=0", stream=True, timeout=30)
    try:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream"), r.text
        m = cl.s1.imap(ALICE)
        try:
            msg = b"From: x@example.test\r\nTo: alice@example.test\r\nSubject: push\r\n\r\nhello\r\n"
            typ, _ = m.append("INBOX", None, None, msg)
            assert typ == "OK"
        finally:
            m.logout()
        got = []
        for line in r.iter_lines():
            got.append(line)
            if line.startswith(b"data:") and b"changed" in line:
                break
        assert got and b"changed" in got[-1], got
    finally:
        r.close()


def test_path_tricks_are_refused(cl):
    s = logged_in(cl.a, MISROUTED)
    for p in ("/jmap/../admin", "/jmap/%2e%2e/x", "/jmap/./session"):
        conn = http.client.HTTPConnection("127.0.0.1", cl.a.ports["http"], timeout=20)
        conn.request("GET", p, headers=cookie_only(s))
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        if resp.status == 200:
            # percent-encoded dots are not dot segments: forwarded as they are
            assert json.loads(body)["path"] == p, body
        else:
            assert resp.status == 400, (p, resp.status, body)


# --------------------------------------------------------------------------
# headers


def test_security_headers_on_every_response(cl):
    s = logged_in(cl.a, MISROUTED)
    for path in ("/login", "/", "/static/login.css", "/static/nonexistent", "/session-info",
                 "/jmap/session", "/jmap/download/a/b/c"):
        for client in (s, requests):
            r = client.get(base(cl.a) + path, allow_redirects=False, timeout=30)
            assert r.headers.get("Content-Security-Policy") == CSP, (path, r.headers)
            assert r.headers.get("X-Content-Type-Options") == "nosniff", path
            assert r.headers.get("Referrer-Policy") == "same-origin", path
    r = requests.get(base(cl.a) + "/login", timeout=20)
    assert "<script" not in r.text.lower() and " on" not in re.sub(r'"[^"]*"', "", r.text).lower()
    assert r.headers["Cache-Control"] == "no-store"


# --------------------------------------------------------------------------
# PROXY protocol from HAProxy


def need_tool(name: str, install: str) -> str:
    import shutil
    for d in ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"):
        p = f"{d}/{name}"
        if shutil.os.access(p, shutil.os.X_OK):
            return p
    p = shutil.which(name)
    if p is None:
        pytest.fail(f"{name} is not installed: {install}", pytrace=False)
    return p


def login_from(port: int, source: str, user: str, password: str) -> tuple[int, str]:
    """GET /login and POST /login over HTTP from a chosen loopback address."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20, source_address=(source, 0))
    c.request("GET", "/login")
    r = c.getresponse()
    page = r.read().decode()
    cookie = [v for k, v in r.getheaders() if k.lower() == "set-cookie"][0].split(";")[0]
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    from urllib.parse import urlencode
    body = urlencode({"user": user, "password": password, "csrf": token})
    c.request("POST", "/login", body=body, headers={"Cookie": cookie,
              "Content-Type": "application/x-www-form-urlencoded"})
    r = c.getresponse()
    text = r.read().decode()
    c.close()
    return r.status, text


def test_haproxy_proxy_protocol_gives_the_real_client_for_logs_and_limits(cl, tmp_path):
    """HAProxy (mode tcp, send-proxy-v2) in front of a mem whose http
    listener takes PROXY headers from 127.0.0.0/8: the mem logs the client
    HAProxy saw and counts failed logins per that client."""
    haproxy = need_tool("haproxy", HAPROXY_INSTALL)
    trust = 'proxy_protocol = true\nproxy_networks = ["127.0.0.0/8"]'
    m = cl.make_mem("mem-lb", limits="max_login_failures_per_client = 2\nmax_login_failures_per_account = 100",
                    listener_options={"http": trust})
    port = free_ports(1)[0]
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(textwrap.dedent(f"""\
        global
            maxconn 64

        defaults
            mode tcp
            timeout connect 5s
            timeout client 60s
            timeout server 60s

        frontend web
            bind 127.0.0.1:{port}
            default_backend mems

        backend mems
            server m1 127.0.0.1:{m.ports["http"]} send-proxy-v2
        """))
    check = subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, f"haproxy -c: {check.stdout}{check.stderr}"
    hlog = tmp_path / "haproxy.log"
    proc = None
    try:
        m.start()
        with open(hlog, "wb") as out:
            proc = subprocess.Popen([haproxy, "-f", str(cfg), "-db"], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=out)
        ok = wait_until(lambda: proc.poll() is not None or port_accepts(port), 15, 0.1)
        assert ok and proc.poll() is None, f"haproxy did not start: {hlog.read_text(errors='replace')}"
        status, _ = login_from(port, "127.0.0.3", CAROL, PASSWORDS[CAROL])
        assert status == 303
        assert wait_until(lambda: "from=127.0.0.3:" in m.log(), 10), m.log()
        for _ in range(3):
            status, _ = login_from(port, "127.0.0.3", CAROL, "wrong-password")
        assert status == 429, status
        # the right password from that client is refused too ...
        status, text = login_from(port, "127.0.0.3", CAROL, PASSWORDS[CAROL])
        assert status == 429 and "Too many failed logins" in text
        # ... while another client behind the same balancer logs in
        status, _ = login_from(port, "127.0.0.4", CAROL, PASSWORDS[CAROL])
        assert status == 303
        # a PROXY header naming a client off loopback: no password over plain HTTP
        status = raw_proxied_login(m.ports["http"], "192.0.2.7")
        assert status == 403
        m.stop()
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        m.cleanup()


def raw_proxied_login(port: int, client_ip: str) -> int:
    """POST /login after a PROXY v2 header naming `client_ip`."""
    src = socket.inet_aton(client_ip)
    dst = socket.inet_aton("127.0.0.1")
    addr = src + dst + struct.pack("!HH", 40000, port)
    header = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(addr)) + addr
    body = b"user=carol%40example.test&password=carol-secret&csrf=t"
    req = (b"POST /login HTTP/1.1\r\nHost: x\r\nCookie: msgd_login=t\r\n"
           b"Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n"
           b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(header + req)
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    return int(data.split(b" ", 2)[1])


def test_unreadable_session_key_stops_the_start(cl, tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text("not hex\n")
    m = Node(tmp_path / "mem-bad", "mem", "mem-bad.test", cl.ldap,
             NO_HTTPS + mem_toml(cl.keys, cl.stores, f'session_key_file = "{bad}"').replace(
                 f'session_key_file = "{cl.keys}/session.key"\n', ""),
             listeners=("http",))
    try:
        with open(m.stderr_path, "ab") as err:
            proc = subprocess.Popen([m_bin(), "--role", "mem", "--config", str(m.config_path)],
                                    stdout=err, stderr=err, stdin=subprocess.DEVNULL, cwd=m.root)
        rc = proc.wait(30)
        assert rc != 0 and "bad.key: expected 64 hex digits" in m.log(), (rc, m.log())
    finally:
        m.cleanup()


def m_bin() -> str:
    from conftest import msgd_bin
    return msgd_bin()


# --------------------------------------------------------------------------
# all-in-one


def test_all_in_one_serves_page_login_and_api(cl, tmp_path):
    """One process with every role: the page, the login and, through the
    store's own JMAP routes (no forwarding), the API."""
    extra = STORE_TOML.format(host="store1.test", keys=cl.keys) + textwrap.dedent("""
        [limits]
        login_failure_delay_ms = 0
        """)
    aio = Node(tmp_path / "aio", "all-in-one", "store1.test", cl.ldap, extra,
               listeners=("smtp", "lmtp", "imap", "http"))
    try:
        aio.start()
        r = requests.get(base(aio) + "/login", timeout=20)
        assert r.status_code == 200 and r.headers["Content-Security-Policy"] == CSP
        s = logged_in(aio, ALICE)
        assert s.get(base(aio) + "/", allow_redirects=False, timeout=20).status_code == 200
        info = s.get(base(aio) + "/session-info", timeout=20).json()
        assert info["user"] == ALICE
        r = s.get(base(aio) + "/jmap/session", timeout=20)
        assert reached_store_stub_or_jmap(r), (r.status_code, r.text)
        assert "INBOX" in {n.upper() for n in mailbox_names(aio, s)}
        # the store's own API route wants the CSRF token with the cookie too
        r = s.post(base(aio) + "/jmap/api", json={"using": [], "methodCalls": []}, timeout=20)
        assert r.status_code == 403, (r.status_code, r.text)
        # bob's mailbox is on store2: this store does not serve him
        s2, r = login(aio, BOB)
        assert r.status_code == 503 and "another server" in r.text
        # logout ends the session in the store: a copy of the cookie is
        # refused, also after a restart (nothing in memory then)
        copied = cookie_only(s)
        csrf = csrf_of(aio, s)
        r = s.post(base(aio) + "/logout", headers={"X-CSRF-Token": csrf}, allow_redirects=False, timeout=20)
        assert r.status_code == 303
        replay_refused_everywhere(aio, copied, csrf)
        aio.stop()
        aio.start()
        replay_refused_everywhere(aio, copied, csrf)
        aio.stop()
    finally:
        aio.cleanup()
