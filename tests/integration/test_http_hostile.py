"""Hostile HTTP clients against the store's JMAP and the mem: headers and
bodies trickled a byte at a time, many such connections from one address,
and bodies claiming a huge Content-Length.

The deadlines under test (docs/security.md "HTTP"): headers within
`http.request_timeout` (hyper's header timeout), bodies within
`http.request_timeout` pushed back `1 / limits.min_data_rate` s per byte
(crate::http::deadline), at most `limits.max_connections_per_ip`
connections per client, Content-Length beyond maxSizeRequest /
maxSizeUpload refused before any byte of the body is read. The
assertions on time are upper bounds (a deadline held), never speed.

Sites: slapd, a store (JMAP on HTTP) and a mem in front of it, with
request_timeout = 3 s and max_connections_per_ip = 6.
"""

from __future__ import annotations

import base64
import re
import socket
import time
from pathlib import Path

import pytest

try:
    import requests
except ImportError:
    pytest.fail("python3-requests is missing: apt-get install -y python3-requests "
                "(or scripts/install-test-deps.sh)", pytrace=False)

from conftest import wait_until
from tiers import EXTRA_LDIF, PASSWORDS, Ldap, Node

ALICE = "alice@example.test"
REQUEST_TIMEOUT = 3
# What the deadline may overrun by on a loaded 2-core machine (ticks,
# scheduling, the 1 s trickle step).
SLACK = 6
PER_IP = 6

LIMITS = f"""
[listener.https]
enabled = false

[http]
token_key_file = "{{keys}}/token.key"
request_timeout = {REQUEST_TIMEOUT}

[limits]
login_failure_delay_ms = 0
max_connections_per_ip = {PER_IP}
"""

STORE = LIMITS + """
[store]
host = "store1.test"
min_free_disk = 1048576
"""

MEM = LIMITS + """
[mem]
session_key_file = "{keys}/session.key"
connect_timeout = 2
store_timeout = 3

[mem.stores]
"store1.test" = "127.0.0.1:{store_port}"
"""


class Site:
    def __init__(self, root: Path):
        self.keys = root / "keys"
        self.keys.mkdir(parents=True)
        self.ldap = Ldap(root / "ldap", EXTRA_LDIF)
        self.store = Node(root / "store1", "store", "store1.test", self.ldap,
                          STORE.format(keys=self.keys), listeners=("lmtp", "imap", "http"))
        self.mem = Node(root / "mem", "mem", "mem.test", self.ldap,
                        MEM.format(keys=self.keys, store_port=self.store.ports["http"]),
                        listeners=("http",))
        self.nodes = [self.store, self.mem]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    s = Site(tmp_path_factory.mktemp("hostile"))
    try:
        s.ldap.start()
        for n in s.nodes:
            n.start()
        yield s
        for n in s.nodes:
            n.stop()
    finally:
        for n in s.nodes:
            n.cleanup()
        if s.ldap.running:
            s.ldap.stop()


@pytest.fixture(autouse=True)
def logs_on_failure(request, site):
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before:
        print("\n".join(n.log(6000) for n in site.nodes))


# --------------------------------------------------------------------------
# helpers


def basic() -> str:
    return "Basic " + base64.b64encode(f"{ALICE}:{PASSWORDS[ALICE]}".encode()).decode()


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return s


def closed_by_peer(sock: socket.socket) -> tuple[bool, bytes]:
    """Without blocking: has the server closed the connection? And what it
    sent before."""
    got = b""
    sock.setblocking(False)
    try:
        while True:
            b = sock.recv(65536)
            if not b:
                return True, got
            got += b
    except BlockingIOError:
        return False, got
    except (ConnectionResetError, BrokenPipeError):
        return True, got
    finally:
        sock.setblocking(True)


def trickle(sock: socket.socket, data: bytes, limit: float, step: float = 1.0,
            during=None) -> tuple[float, bytes]:
    """Sends `data` one byte per `step` s until the server closes the
    connection or `limit` s pass: (seconds it stayed open, what it sent).
    `during()` is called after each byte."""
    start = time.monotonic()
    answer = b""
    for i in range(len(data)):
        if i and during is not None:
            during()
        done, got = closed_by_peer(sock)
        answer += got
        if done:
            return time.monotonic() - start, answer
        if time.monotonic() - start > limit:
            break
        try:
            sock.sendall(data[i:i + 1])
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start, answer
        time.sleep(step)
    # data exhausted or limit passed: wait for the close up to the limit
    sock.settimeout(max(0.1, limit - (time.monotonic() - start)))
    try:
        while True:
            b = sock.recv(65536)
            if not b:
                break
            answer += b
    except (socket.timeout, ConnectionResetError):
        pass
    return time.monotonic() - start, answer


def status_of(answer: bytes) -> int | None:
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", answer)
    return int(m.group(1)) if m else None


def store_account(site: Site) -> str:
    r = requests.get(f"http://127.0.0.1:{site.store.ports['http']}/jmap/session",
                     headers={"Authorization": basic()}, timeout=20)
    assert r.status_code == 200, r.text
    return r.json()["primaryAccounts"]["urn:ietf:params:jmap:mail"]


def mem_login(site: Site) -> tuple[str, str]:
    """(Cookie header, CSRF token) of a webmail session on the mem."""
    base = f"http://127.0.0.1:{site.mem.ports['http']}"
    s = requests.Session()
    r = s.get(base + "/login", timeout=20)
    m = re.search(r'name="csrf" value="([^"]+)"', r.text)
    assert m, r.text
    r = s.post(base + "/login", data={"user": ALICE, "password": PASSWORDS[ALICE], "csrf": m.group(1)},
               allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text
    info = s.get(base + "/session-info", timeout=20).json()
    return f"msgd_session={s.cookies.get('msgd_session')}", info["csrfToken"]


def upload_dirs(site: Site) -> list[Path]:
    return list((site.store.data_dir / "jmap-uploads").glob("*/.*"))


# --------------------------------------------------------------------------
# headers trickled


@pytest.mark.parametrize("role", ["store", "mem"])
def test_headers_trickled_a_byte_a_second_are_cut_at_the_request_timeout(site, role):
    node = site.store if role == "store" else site.mem
    sock = connect(node.ports["http"])
    request = b"GET /jmap/session HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * 200 + b"\r\n\r\n"
    stayed, answer = trickle(sock, request, limit=REQUEST_TIMEOUT + SLACK)
    sock.close()
    assert stayed <= REQUEST_TIMEOUT + SLACK, f"open {stayed:.1f}s after a trickle"
    # no handler ran: it would have answered 401 (store) or 401/303 (mem)
    assert status_of(answer) in (None, 408), answer[:200]


# --------------------------------------------------------------------------
# bodies trickled


def test_body_trickled_to_the_store_is_cut_by_the_body_deadline(site):
    account = store_account(site)
    sock = connect(site.store.ports["http"])
    sock.sendall((f"POST /jmap/upload/{account} HTTP/1.1\r\nHost: x\r\nAuthorization: {basic()}\r\n"
                  "Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n").encode())
    stayed, answer = trickle(sock, b"x" * 1_000_000, limit=REQUEST_TIMEOUT + SLACK)
    sock.close()
    assert stayed <= REQUEST_TIMEOUT + SLACK, f"open {stayed:.1f}s"
    assert status_of(answer) == 408, answer[:300]
    # the partial upload is not kept
    assert wait_until(lambda: not upload_dirs(site), 10), upload_dirs(site)


def test_api_body_trickled_to_the_store_is_cut_too(site):
    sock = connect(site.store.ports["http"])
    sock.sendall((f"POST /jmap/api HTTP/1.1\r\nHost: x\r\nAuthorization: {basic()}\r\n"
                  "Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n").encode())
    stayed, answer = trickle(sock, b" " * 1_000_000, limit=REQUEST_TIMEOUT + SLACK)
    sock.close()
    assert stayed <= REQUEST_TIMEOUT + SLACK, f"open {stayed:.1f}s"
    assert status_of(answer) == 408, answer[:300]


def test_body_trickled_through_the_mem_is_cut_and_frees_the_store(site):
    """The mem streams the upload to the store as it comes: both ends of
    that store connection end by the deadline (the store's partial upload
    file is removed), and the client gets 408."""
    cookie, csrf = mem_login(site)
    account = store_account(site)
    sock = connect(site.mem.ports["http"])
    sock.sendall((f"POST /jmap/upload/{account} HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n"
                  f"X-CSRF-Token: {csrf}\r\nContent-Type: application/octet-stream\r\n"
                  "Content-Length: 1000000\r\n\r\n").encode())
    seen = []
    stayed, answer = trickle(sock, b"x" * 1_000_000, limit=REQUEST_TIMEOUT + SLACK,
                             during=lambda: seen.append(bool(upload_dirs(site))))
    sock.close()
    assert any(seen), "the upload reached the store while it trickled"
    assert stayed <= REQUEST_TIMEOUT + SLACK, f"open {stayed:.1f}s"
    assert status_of(answer) == 408, answer[:300]
    assert wait_until(lambda: not upload_dirs(site), 10), "the store still holds the upload"
    # the mem still serves alice (the store connection pool is fine)
    r = requests.get(f"http://127.0.0.1:{site.mem.ports['http']}/jmap/session",
                     headers={"Cookie": cookie}, timeout=20)
    assert r.status_code == 200, r.text


# --------------------------------------------------------------------------
# many slow connections from one address


@pytest.mark.parametrize("role", ["store", "mem"])
def test_slow_clients_from_one_address_hit_the_per_ip_limit_and_others_are_served(site, role):
    node = site.store if role == "store" else site.mem
    port = node.ports["http"]
    slow = []
    try:
        for _ in range(PER_IP):
            s = connect(port)
            s.sendall(b"GET /jmap/session HTTP/1.1\r\n")  # and never more
            slow.append(s)
        time.sleep(0.5)
        # one more from the same address: refused at once
        extra = connect(port)
        extra.settimeout(5)
        try:
            extra.sendall(b"GET /.well-known/jmap HTTP/1.1\r\nHost: x\r\n\r\n")
            first = extra.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            first = b""
        extra.close()
        assert status_of(first) is None, f"the {PER_IP + 1}th connection was served: {first[:200]!r}"
        # meanwhile a client on another address is served
        other = connect(port, source="127.0.0.2")
        other.settimeout(10)
        other.sendall(b"GET /.well-known/jmap HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = b""
        while True:
            b = other.recv(4096)
            if not b:
                break
            got += b
        other.close()
        assert status_of(got) in (301, 307), got[:200]
    finally:
        for s in slow:
            s.close()


# --------------------------------------------------------------------------
# huge Content-Length


def test_huge_content_length_is_refused_before_reading_on_the_store(site):
    account = store_account(site)
    for path, limit in ((f"/jmap/upload/{account}", "maxSizeUpload"), ("/jmap/api", "maxSizeRequest")):
        sock = connect(site.store.ports["http"])
        sock.settimeout(10)
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {basic()}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n").encode())
        answer = sock.recv(65536)  # no body byte was sent
        sock.close()
        assert status_of(answer) == 413, answer[:300]
        assert limit.encode() in answer, answer[:300]


def test_huge_content_length_is_refused_before_reading_on_the_mem(site):
    cookie, csrf = mem_login(site)
    account = store_account(site)
    for path, limit in ((f"/jmap/upload/{account}", "maxSizeUpload"), ("/jmap/api", "maxSizeRequest")):
        sock = connect(site.mem.ports["http"])
        sock.settimeout(10)
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nX-CSRF-Token: {csrf}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n").encode())
        answer = sock.recv(65536)
        sock.close()
        assert status_of(answer) == 413, answer[:300]
        assert limit.encode() in answer, answer[:300]
