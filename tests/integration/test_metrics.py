"""Observability (issue 14): the admin listener's /metrics (Prometheus text,
parsed with prometheus-client's parser, a client the project did not
write) and /health, and `msgd store stats` on a running server and
offline.

- counters move with traffic: SMTP delivery, LMTP delivery, IMAP login and
  commands (ok, no, bad), a failed login, TLS handshakes (ok and failed);
- figures read at scrape time: mboxlist cache, free disk per partition,
  queue depth;
- /health is 200 "ready" with per-component JSON, 503 while the server
  drains after SIGTERM; only GET /metrics and /health are served, and a
  client that never finishes its request is cut off;
- `msgd store stats [--json]`: mboxlist size, cache, hit rate since start
  and over the last minute (running server only), per-partition users,
  messages, bytes and free disk; a store that cannot be opened exits 1
  with a clear message.
"""

from __future__ import annotations

import http.client
import imaplib
import json
import signal
import smtplib
import socket
import ssl
import time

import pytest

from conftest import DOMAIN, build_message, wait_until

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # pragma: no cover - depends on the machine
    text_string_to_metric_families = None

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
USERS = (ALICE, BOB)


def need_parser():
    if text_string_to_metric_families is None:
        pytest.fail("prometheus-client is missing: install it with scripts/install-test-deps.sh "
                    "(or: python3 -m pip install prometheus-client)", pytrace=False)


def http_get(port: int, path: str, method: str = "GET", timeout: float = 10) -> tuple[int, str, str]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path)
        r = c.getresponse()
        return r.status, r.getheader("Content-Type") or "", r.read().decode()
    finally:
        c.close()


def scrape(inst) -> list:
    """Every sample of /metrics as (name, labels, value), parsed by prometheus-client."""
    need_parser()
    status, ctype, text = http_get(inst.admin_port, "/metrics")
    assert status == 200, (status, text)
    assert ctype.startswith("text/plain"), ctype
    samples = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.append((s.name, dict(s.labels), s.value))
    assert samples, "no samples"
    return samples


def value(samples, name: str, **labels) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 if none)."""
    return sum(v for n, l, v in samples if n == name and all(l.get(k) == x for k, x in labels.items()))


def present(samples, name: str, **labels) -> bool:
    return any(n == name and all(l.get(k) == x for k, x in labels.items()) for n, l, _ in samples)


def test_metrics_parse_and_counters_move_with_traffic(server):
    before = scrape(server)
    # Every sample carries the process's roles.
    assert all("role" in l for _, l, _ in before), [s for s in before if "role" not in s[1]][:3]

    # SMTP delivery to alice, LMTP delivery to bob.
    server.send(ALICE, build_message(ALICE, "metrics smtp", "hello\r\n"))
    with smtplib.LMTP("127.0.0.1", server.ports["lmtp"], timeout=20) as lm:
        refused = lm.sendmail("sender@remote.example", [BOB], build_message(BOB, "metrics lmtp", "hi\r\n"))
        assert refused == {}, refused
    server.wait_count(ALICE, 1)
    server.wait_count(BOB, 1)

    # IMAP: a failed login, then a login with commands, one of them bad.
    m = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=20)
    with pytest.raises(imaplib.IMAP4.error):
        m.login(ALICE, "not the password")
    m.login(ALICE, server.passwords[ALICE])
    assert m.select("INBOX")[0] == "OK"
    assert m.fetch("1", "(FLAGS)")[0] == "OK"
    m.logout()
    # A raw bad command (imaplib raises on BAD): counted as "bad".
    with socket.create_connection(("127.0.0.1", server.ports["imap"]), timeout=20) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"a1 FROBNICATE\r\na2 LOGOUT\r\n")
        lines = [f.readline() for _ in range(3)]
        assert any(l.startswith(b"a1 BAD") for l in lines), lines

    # TLS: one good handshake on IMAPS, one failed (plaintext on a TLS port).
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", server.ports["imaps"]), timeout=20) as raw:
        with ctx.wrap_socket(raw) as t:
            assert t.recv(100).startswith(b"* OK")
    with socket.create_connection(("127.0.0.1", server.ports["imaps"]), timeout=20) as raw:
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n" * 20)
        raw.settimeout(20)
        try:
            while raw.recv(4096):
                pass
        except OSError:
            pass

    # HTTP (JMAP): an unauthenticated request is a 4xx.
    st, _, _ = http_get(server.ports["http"], "/jmap/session")
    assert 400 <= st < 500, st

    def moved():
        after = scrape(server)
        d = lambda name, **l: value(after, name, **l) - value(before, name, **l)  # noqa: E731
        checks = {
            "smtp connections": d("msgd_connections_total", protocol="smtp") >= 1,
            "lmtp connections": d("msgd_connections_total", protocol="lmtp") >= 1,
            "imap connections": d("msgd_connections_total", protocol="imap") >= 2,
            "imap ok": d("msgd_commands_total", protocol="imap", result="ok") >= 3,
            "imap no": d("msgd_commands_total", protocol="imap", result="no") >= 1,
            "imap bad": d("msgd_commands_total", protocol="imap", result="bad") >= 1,
            "smtp 2xx": d("msgd_commands_total", protocol="smtp", result="2xx") >= 4,
            "lmtp 2xx": d("msgd_commands_total", protocol="lmtp", result="2xx") >= 3,
            "http 4xx": d("msgd_commands_total", protocol="http", result="4xx") >= 1,
            "http latency": d("msgd_command_duration_seconds_count", protocol="http") >= 1,
            "imap latency": d("msgd_command_duration_seconds_count", protocol="imap") >= 3,
            "smtp latency": d("msgd_command_duration_seconds_count", protocol="smtp") >= 1,
            "accepted smtp": d("msgd_messages_total", outcome="accepted", via="smtp") == 1,
            "accepted lmtp": d("msgd_messages_total", outcome="accepted", via="lmtp") == 1,
            "delivered": d("msgd_messages_total", outcome="delivered", via="store") >= 2,
            "auth failure": d("msgd_auth_failures_total", protocol="imap") == 1,
            "tls ok": d("msgd_tls_handshakes_total", result="ok") >= 1,
            "tls failed": d("msgd_tls_handshakes_total", result="failed") >= 1,
            "no open imap session": value(after, "msgd_sessions", protocol="imap") == 0,
        }
        return after, checks

    # Session gauges fall when the server has seen the close: poll briefly.
    result = {}

    def settled():
        result["after"], result["checks"] = moved()
        return all(result["checks"].values())

    wait_until(settled, 10)
    assert all(result["checks"].values()), {k: v for k, v in result["checks"].items() if not v}
    after = result["after"]
    # Read when scraped: the store's cache and disk, the queue.
    assert value(after, "msgd_partition_free_bytes", partition="primary") > 0
    assert value(after, "msgd_mboxlist_cache_hits_total") > 0
    assert 0 <= value(after, "msgd_mboxlist_cache_hit_ratio") <= 1
    assert value(after, "msgd_mboxlist_file_bytes") > 0
    assert present(after, "msgd_queue_messages")
    assert present(after, "msgd_queue_oldest_age_seconds")
    assert present(after, "msgd_budget_bytes_in_use")
    assert present(after, "msgd_command_duration_seconds_bucket", protocol="imap", le="+Inf")


def test_login_limiter_and_connection_limit_count_as_limits_hit(msgd_factory):
    inst = msgd_factory(users=(ALICE,), start=False)
    inst.config_path.write_text(inst.config_text().replace(
        "[admin]", "[limits]\nmax_connections_per_ip = 2\nmax_login_failures_per_client = 2\n"
        "login_failure_delay_ms = 0\n\n[admin]", 1))
    inst.start()
    before = scrape(inst)
    for _ in range(4):
        m = imaplib.IMAP4("127.0.0.1", inst.ports["imap"], timeout=20)
        try:
            with pytest.raises(imaplib.IMAP4.error):
                m.login(ALICE, "wrong")
        finally:
            m.shutdown()
    # The IMAP connections are gone before the per-client limit is tried.
    wait_until(lambda: value(scrape(inst), "msgd_sessions", protocol="imap") == 0, 10)
    held = [socket.create_connection(("127.0.0.1", inst.ports["pop3"]), timeout=20) for _ in range(2)]
    try:
        for s in held:
            assert s.recv(100).startswith(b"+OK")
        with socket.create_connection(("127.0.0.1", inst.ports["pop3"]), timeout=20) as third:
            assert third.recv(100).startswith(b"-ERR"), "over the per-client limit"
    finally:
        for s in held:
            s.close()
    after = scrape(inst)
    d = lambda name, **l: value(after, name, **l) - value(before, name, **l)  # noqa: E731
    assert d("msgd_limits_hit_total", limit="login_limiter") >= 1, after
    assert d("msgd_limits_hit_total", limit="connections_per_ip") == 1, after
    assert d("msgd_auth_failures_total", protocol="imap") >= 2


def test_memory_budget_refusal_counts_as_a_limit_hit(msgd_factory):
    inst = msgd_factory(users=(ALICE,), start=False)
    inst.config_path.write_text(inst.config_text() + (
        "\n[smtp]\nmax_message_size = 100000\n\n[imap]\nmax_literal = 100000\n"
        "\n[limits]\nmax_bytes_in_flight = 150000\nspool_threshold = 100000\n"))
    inst.start()
    before = scrape(inst)
    first = smtplib.SMTP("127.0.0.1", inst.ports["smtp"], timeout=20)
    second = smtplib.SMTP("127.0.0.1", inst.ports["smtp"], timeout=20)
    try:
        first.ehlo("client.example")
        assert first.mail("sender@remote.example")[0] == 250
        assert first.rcpt(ALICE)[0] == 250
        # DATA holds room for a whole message in memory: the rest of the
        # budget is too small for another.
        assert first.docmd("DATA")[0] == 354
        second.ehlo("client.example")
        code, text = second.mail("sender@remote.example")
        assert code == 452, (code, text)
    finally:
        second.close()
        first.close()
    after = scrape(inst)
    assert value(after, "msgd_limits_hit_total", limit="budget") - value(
        before, "msgd_limits_hit_total", limit="budget") >= 1, after


def test_health_ready_with_components_then_503_while_draining(msgd_factory):
    inst = msgd_factory(users=(ALICE,))
    wait_until(lambda: http_get(inst.admin_port, "/health")[0] == 200, 10)
    status, ctype, body = http_get(inst.admin_port, "/health")
    assert status == 200, body
    assert ctype.startswith("application/json"), ctype
    doc = json.loads(body)
    assert doc["status"] == "ready", doc
    assert doc["components"] == {"listeners": "bound", "store": "open", "shutdown": "no"}, doc

    # A transaction in progress holds the drain open after SIGTERM.
    s = smtplib.SMTP("127.0.0.1", inst.ports["smtp"], timeout=30)
    s.ehlo("client.example")
    assert s.mail("sender@remote.example")[0] == 250
    assert s.rcpt(ALICE)[0] == 250
    assert s.docmd("DATA")[0] == 354
    s.send(b"Subject: drain\r\n\r\nfirst half\r\n")
    proc = inst.proc
    proc.send_signal(signal.SIGTERM)
    seen = {}

    def draining():
        st, _, b = http_get(inst.admin_port, "/health")
        seen["status"], seen["body"] = st, b
        return st == 503

    wait_until(draining, 10)
    assert seen["status"] == 503, seen
    doc = json.loads(seen["body"])
    assert doc["status"] == "not ready", doc
    assert doc["components"]["shutdown"] == "draining", doc
    # The message in flight still completes, then the server exits cleanly.
    s.send(b"second half\r\n.\r\n")
    code, _ = s.getreply()
    assert code == 250, code
    s.close()
    assert proc.wait(20) == 0
    inst.proc = None


def test_admin_listener_serves_only_get_metrics_and_health(server):
    assert http_get(server.admin_port, "/metrics", method="POST")[0] == 405
    assert http_get(server.admin_port, "/health", method="DELETE")[0] == 405
    assert http_get(server.admin_port, "/")[0] == 404
    assert http_get(server.admin_port, "/metrics/../../etc/passwd")[0] == 404
    assert http_get(server.admin_port, "/admin.sock")[0] == 404


def test_admin_listener_cuts_a_client_that_never_finishes_its_headers(server):
    with socket.create_connection(("127.0.0.1", server.admin_port), timeout=60) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        # No blank line ever: the header deadline (5 s) closes the connection.
        s.settimeout(60)
        got = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        assert b"200 OK" not in got, got


def stats(inst, *args):
    res = inst.cli("store", "stats", *args)
    assert res.returncode == 0, f"exit {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    return res


def test_store_stats_on_a_running_server_and_offline(msgd_factory):
    inst = msgd_factory(users=(ALICE, BOB))
    for i in range(3):
        inst.send(ALICE, build_message(ALICE, f"stats {i}", "x" * 1000 + "\r\n"))
    inst.send(BOB, build_message(BOB, "stats bob", "y\r\n"))
    inst.wait_count(ALICE, 3)
    inst.wait_count(BOB, 1)

    online = json.loads(stats(inst, "--json").stdout)
    assert online["online"] is True, online
    part = online["partitions"]["primary"]
    assert part["users"] >= 2 and part["messages"] == 4, part
    assert part["bytes"] > 3000, part
    assert part["free_bytes"] > 0, part
    assert online["mboxlist"]["file_bytes"] > 0, online
    assert online["mboxlist"]["path"].endswith("mboxlist.redb"), online
    cache = online["cache"]
    assert cache["hits"] > 0 and 0 <= cache["hit_rate"] <= 100, cache
    # The store role samples from its start: the last minute is known.
    recent = cache["last_minute"]
    assert recent is not None, cache
    assert 0 <= recent["hit_rate"] <= 100 and 0 <= recent["seconds"] <= 60, recent

    text = stats(inst).stdout
    assert "hit rate" in text and "since the store started" in text, text
    assert "over the last" in text, text
    assert "primary" in text, text

    inst.stop()
    offline = json.loads(stats(inst, "--json").stdout)
    assert offline["online"] is False, offline
    assert offline["partitions"]["primary"]["messages"] == 4, offline
    assert offline["cache"]["last_minute"] is None, offline
    text = stats(inst).stdout
    assert "no server running" in text, text


def test_store_stats_exits_1_with_a_clear_message_when_the_store_cannot_open(msgd_factory):
    inst = msgd_factory(users=(ALICE,))
    inst.stop()
    db = inst.data_dir / "mboxlist" / "mboxlist.redb"
    assert db.exists(), db
    db.write_bytes(b"not a database" * 100)
    res = inst.cli("store", "stats")
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert "cannot be opened" in res.stderr, res.stderr
    assert res.stdout == "", res.stdout


# --------------------------------------------------------------------------
# two tiers with a real directory (slapd): mta-in -> LMTP -> store


@pytest.fixture
def site(tmp_path):
    from tiers import Ldap, Node, running

    ldap = Ldap(tmp_path / "ldap")
    store = Node(tmp_path / "store1", "store", "store1.test", ldap,
                 '\n[store]\nhost = "store1.test"\nmin_free_disk = 1048576\n')
    mta = Node(tmp_path / "mta-in", "mta-in", "mx.example.test", ldap,
               f'\n[mta]\nhosts = {{ "store1.test" = "127.0.0.1:{store.ports["lmtp"]}" }}\n'
               "delivery_timeout = 10\n\n[queue]\nretry_base = 1\nretry_max = 2\n")
    with running(ldap, store, mta):
        yield store, mta


def test_two_tier_ldap_latency_caches_and_deliveries_per_process(site):
    from tiers import PASSWORDS, send

    store, mta = site
    alice = "alice@example.test"  # mailHost store1.test in tests/ldap/base.ldif
    send(mta, "sender@remote.example", alice, build_message(alice, "two tier metrics", "hi\r\n"))
    # Delivered once the store has it; logging in asks slapd (a bind).
    deadline = time.monotonic() + 20
    while True:
        m = store.imap(alice, PASSWORDS[alice])
        try:
            n = int(m.select("INBOX", readonly=True)[1][0])
        finally:
            m.logout()
        if n >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert n == 1

    def both():
        return scrape(mta), scrape(store)

    def delivered():
        _, st = both()
        return value(st, "msgd_messages_total", outcome="delivered", via="store") == 1

    wait_until(delivered, 10)
    at_mta, at_store = both()
    # Each process labels its samples with its own role.
    assert {l.get("role") for _, l, _ in at_mta} == {"mta-in"}
    assert {l.get("role") for _, l, _ in at_store} == {"store"}
    # mta-in: recipient lookups in slapd, accepted by SMTP, queued, then an
    # LMTP connection to the store.
    assert value(at_mta, "msgd_ldap_request_duration_seconds_count", result="ok") >= 1, at_mta
    assert present(at_mta, "msgd_directory_cache_hits_total")
    assert present(at_mta, "msgd_directory_cache_misses_total")
    assert value(at_mta, "msgd_messages_total", outcome="accepted", via="smtp") == 1
    assert value(at_mta, "msgd_delivery_pool_takes_total") >= 1
    assert present(at_mta, "msgd_queue_messages")
    assert not present(at_mta, "msgd_mboxlist_cache_hits_total"), "no store in mta-in"
    # store: accepted over LMTP, written into the mailbox, the login a bind.
    assert value(at_store, "msgd_messages_total", outcome="accepted", via="lmtp") == 1
    assert value(at_store, "msgd_ldap_request_duration_seconds_count", result="ok") >= 1
    assert value(at_store, "msgd_commands_total", protocol="imap", result="ok") >= 2
    # /health: a process without the store role has no store component.
    st, _, body = http_get(mta.admin_port, "/health")
    assert st == 200, body
    assert json.loads(body)["components"] == {"listeners": "bound", "shutdown": "no"}
    st, _, body = http_get(store.admin_port, "/health")
    assert st == 200 and json.loads(body)["components"]["store"] == "open", body
