"""Hostile clients against the network layer of the real binary.

Each test starts its own msgd with short limits, attacks it as a stranger
would, asserts the server's answer, that another client is still served
afterwards, and where memory is at stake that msgd's RSS (VmRSS from
/proc/PID/status) stays under RSS_BOUND.

- connection caps count per process across listeners, and per client
  (IPv6 clients by /64: the grouping itself is unit-tested in src/net.rs,
  since loopback has a single IPv6 address; here the cap over ::1);
- refusals are logged at a bounded rate;
- PROXY headers are accepted only from listener.X.proxy_networks;
- the LMTP listener serves only store.lmtp_networks;
- a client trickling a command a byte at a time is disconnected
  (limits.command_deadline), in IMAP and POP3;
- a client that never reads its responses is disconnected
  (limits.write_timeout) while another is served.

Source addresses 127.0.0.2, 127.0.0.3, ... stand for distinct clients
(all of 127.0.0.0/8 is loopback on Linux).
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from conftest import (
    DOMAIN,
    LineClient,
    build_message,
    wait_until,
)

USER = f"hostile@{DOMAIN}"
# Debug build, a few hundred connections and a 2 MB message in flight.
RSS_BOUND = 300 * 1024 * 1024


def rss(inst) -> int:
    for line in open(f"/proc/{inst.proc.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def start(msgd_factory, extra: str = "", listener_opts: dict[str, str] | None = None,
          v6: tuple[str, ...] = (), users=(USER,)):
    """A msgd with `extra` TOML appended, extra keys per listener, and the
    listeners in `v6` also bound on [::1] (same port)."""
    inst = msgd_factory(users=users, start=False)
    text = inst.config_text()
    for name, opts in (listener_opts or {}).items():
        text = text.replace(f"[listener.{name}]\n", f"[listener.{name}]\n{opts}\n", 1)
    for name in v6:
        p = inst.ports[name]
        text = text.replace(f'bind = ["127.0.0.1:{p}"]', f'bind = ["127.0.0.1:{p}", "[::1]:{p}"]', 1)
    inst.config_path.write_text(text + "\n" + extra)
    inst.start()
    return inst


def connect(port: int, src: str = "127.0.0.1", host: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect((host, port))
    return s


def first_line(s: socket.socket) -> bytes:
    """The first line the server sends; b'' if it closes first."""
    data = b""
    try:
        while b"\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    return data


def served(inst, protocol: str = "imap", src: str = "127.0.0.1") -> None:
    """Another, ordinary client gets a greeting and an answer (once msgd
    has seen the end of connections the test just closed)."""
    s = hold(inst.ports[protocol], src)
    try:
        if protocol == "imap":
            s.sendall(b"z NOOP\r\n")
            assert first_line(s).startswith(b"z OK")
    finally:
        s.close()


# --------------------------------------------------------------------------
# connection caps


def test_connection_cap_counts_per_process_across_listeners(msgd_factory):
    inst = start(msgd_factory, "[limits]\nmax_connections = 4\nmax_connections_per_ip = 3\n")
    held = []
    try:
        # Four clients, two listeners: the process's four slots.
        for src, proto in [("127.0.0.2", "imap"), ("127.0.0.3", "imap"),
                           ("127.0.0.4", "pop3"), ("127.0.0.5", "pop3")]:
            held.append(hold(inst.ports[proto], src))
        # A fifth, on a third listener and from a new client, is refused
        # with the protocol's short answer.
        for proto, answer in [("smtp", b"421 4.7.0 Too many connections"),
                              ("imap", b"* BYE Too many connections"),
                              ("pop3", b"-ERR [SYS/TEMP] Too many connections")]:
            s = connect(inst.ports[proto], "127.0.0.6")
            assert first_line(s).startswith(answer), proto
            s.close()
        # A slot freed is a slot usable again.
        held.pop().close()
        assert wait_until(lambda: _greets(inst, "smtp", "127.0.0.6"), 5)
    finally:
        for s in held:
            s.close()
    served(inst)


def hold(port: int, src: str) -> socket.socket:
    """A connection that got its greeting. Retries briefly: msgd may not
    have seen the close of a client's previous connection yet (start()'s
    port probes, say)."""
    deadline = time.monotonic() + 5
    while True:
        s = connect(port, src)
        g = first_line(s)
        if g.startswith((b"* OK", b"+OK", b"220 ")) or time.monotonic() > deadline:
            assert g.startswith((b"* OK", b"+OK", b"220 ")), g
            return s
        s.close()
        time.sleep(0.05)


def _greets(inst, proto, src) -> bool:
    s = connect(inst.ports[proto], src)
    try:
        return first_line(s).startswith(b"220 ")
    finally:
        s.close()


def test_per_client_cap_counts_across_listeners_and_over_ipv6(msgd_factory):
    inst = start(msgd_factory, "[limits]\nmax_connections_per_ip = 3\n", v6=("imap",))
    held = []
    try:
        for proto in ("imap", "pop3", "smtp"):
            held.append(hold(inst.ports[proto], "127.0.0.7"))
        s = connect(inst.ports["imap"], "127.0.0.7")
        assert first_line(s) == b"* BYE Too many connections\r\n"
        s.close()
        # The cap over IPv6 (::1 is the one address of its /64 here).
        for _ in range(3):
            s = connect(inst.ports["imap"], "::1", "::1")
            assert first_line(s).startswith(b"* OK")
            held.append(s)
        s = connect(inst.ports["imap"], "::1", "::1")
        assert first_line(s) == b"* BYE Too many connections\r\n"
        s.close()
    finally:
        for s in held:
            s.close()
    # Other clients are not affected.
    served(inst, "imap", "127.0.0.8")


def test_refusals_are_logged_at_a_bounded_rate(msgd_factory):
    inst = start(msgd_factory, "[limits]\nmax_connections_per_ip = 1\n")
    keep = connect(inst.ports["smtp"], "127.0.0.9")
    assert first_line(keep).startswith(b"220 ")
    try:
        for _ in range(300):
            s = connect(inst.ports["smtp"], "127.0.0.9")
            assert first_line(s).startswith(b"421 4.7.0")
            s.close()
    finally:
        keep.close()
    lines = [l for l in inst.log().splitlines() if "connection refused" in l]
    assert 1 <= len(lines) <= 3, lines
    # Once the held connection is gone, the client is served again.
    assert wait_until(lambda: _greets(inst, "smtp", "127.0.0.9"), 5)
    assert rss(inst) < RSS_BOUND


# --------------------------------------------------------------------------
# trust only where configured


PROXY_V1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 143\r\n"
PROXY_V1_LOOPBACK = b"PROXY TCP4 127.0.0.1 127.0.0.1 56324 143\r\n"


def test_proxy_header_is_accepted_only_from_proxy_networks(msgd_factory):
    inst = start(msgd_factory, listener_opts={
        "imap": 'proxy_protocol = true\nproxy_networks = ["127.0.0.2/32"]',
    })
    # From the configured balancer: the header is read, the session runs.
    s = connect(inst.ports["imap"], "127.0.0.2")
    s.sendall(PROXY_V1)
    g = first_line(s)
    assert g.startswith(b"* OK") and b"LOGINDISABLED" in g, g
    s.sendall(b"a LOGIN x y\r\n")
    # The client it names (192.0.2.7) is not loopback: no plaintext login.
    assert first_line(s).startswith(b"a NO [PRIVACYREQUIRED]")
    s.close()
    # A balancer's word that its client is loopback does count (both ends
    # of the hop are this host).
    s = connect(inst.ports["imap"], "127.0.0.2")
    s.sendall(PROXY_V1_LOOPBACK)
    g = first_line(s)
    assert g.startswith(b"* OK") and b"LOGINDISABLED" not in g, g
    s.close()
    # From anyone else: closed without a word, even with a valid header,
    # even one claiming loopback (which would unlock plaintext logins).
    for header in (PROXY_V1, PROXY_V1_LOOPBACK, b"a1 CAPABILITY\r\n"):
        s = connect(inst.ports["imap"], "127.0.0.3")
        s.sendall(header)
        assert first_line(s) == b"", header
        s.close()
    assert wait_until(lambda: "PROXY listener, peer not in proxy_networks" in inst.log(), 5), inst.log()
    # The balancer is still served.
    s = connect(inst.ports["imap"], "127.0.0.2")
    s.sendall(PROXY_V1)
    assert first_line(s).startswith(b"* OK")
    s.close()
    # Other listeners do not take PROXY at all.
    served(inst, "pop3")


def test_proxy_protocol_without_proxy_networks_refuses_everyone(msgd_factory):
    inst = start(msgd_factory, listener_opts={"imap": "proxy_protocol = true"})
    s = connect(inst.ports["imap"])
    s.sendall(PROXY_V1)
    assert first_line(s) == b""
    s.close()
    assert "proxy_networks is empty" in inst.log()
    served(inst, "smtp")


def test_lmtp_is_refused_from_a_network_not_in_lmtp_networks(msgd_factory):
    inst = start(msgd_factory, '[store]\nlmtp_networks = ["192.0.2.0/24", "10.0.0.0/8"]\n')
    s = connect(inst.ports["lmtp"])
    assert first_line(s) == b""
    s.close()
    assert wait_until(lambda: "not in store.lmtp_networks" in inst.log(), 5), inst.log()
    served(inst, "smtp")


def test_lmtp_is_served_to_loopback_by_default(msgd_factory):
    inst = start(msgd_factory)
    s = connect(inst.ports["lmtp"])
    assert first_line(s).startswith(b"220 ")
    s.close()


# --------------------------------------------------------------------------
# time is bounded


def trickle(s: socket.socket, data: bytes, every: float, limit: float) -> tuple[bytes, float]:
    """Sends `data` a byte every `every` s (cycling) until the server says
    something or closes; returns what it said and how long it took."""
    started = time.monotonic()
    s.settimeout(every)
    i = 0
    while time.monotonic() - started < limit:
        try:
            s.sendall(data[i % len(data):i % len(data) + 1])
        except OSError:
            return b"", time.monotonic() - started
        i += 1
        try:
            got = s.recv(4096)
            return got, time.monotonic() - started
        except socket.timeout:
            continue
        except OSError:
            return b"", time.monotonic() - started
    return b"(still open)", time.monotonic() - started


def test_trickling_client_is_disconnected_by_the_command_deadline(msgd_factory):
    inst = start(msgd_factory, "[limits]\ncommand_deadline = 2\n")
    results = {}

    def attack(name, port, greeting, data, login=None):
        s = connect(port)
        assert first_line(s).startswith(greeting)
        if login:
            s.sendall(login)
            assert first_line(s).startswith(b"l OK"), name
        results[name] = trickle(s, data, 0.4, 30)
        s.close()

    password = inst.passwords[USER]
    threads = [
        threading.Thread(target=attack, args=("imap preauth", inst.ports["imap"], b"* OK", b"a LOGIN x y ")),
        threading.Thread(target=attack, args=("imap", inst.ports["imap"], b"* OK", b"b NOOP ",
                                              f"l LOGIN {USER} {password}\r\n".encode())),
        threading.Thread(target=attack, args=("pop3", inst.ports["pop3"], b"+OK", b"USER x ")),
    ]
    for t in threads:
        t.start()
    # Meanwhile another client is served.
    time.sleep(0.5)
    served(inst)
    for t in threads:
        t.join()
    for name, (said, took) in results.items():
        assert said.startswith((b"* BYE Command not completed in time", b"-ERR Command not completed in time")), \
            (name, said)
        # Each byte arrived far inside the idle timers (60 s or more).
        assert took < 20, (name, took)
    assert rss(inst) < RSS_BOUND
    served(inst)
    served(inst, "pop3")


def test_client_that_never_reads_is_disconnected_by_the_write_timeout(msgd_factory):
    inst = start(msgd_factory, "[limits]\nwrite_timeout = 2\n")
    body = ("X" * 998 + "\r\n") * 2000  # 2 MB
    inst.send(USER, build_message(USER, "big", body))
    inst.wait_count(USER, 1)
    password = inst.passwords[USER]
    fetches = 60  # 120 MB of responses: far more than socket buffers hold
    s = connect(inst.ports["imap"])
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    c = LineClient.__new__(LineClient)
    c.sock, c.buf = s, b""
    c.readline()
    tag, _ = c.imap_cmd("l", f"LOGIN {USER} {password}")
    assert tag.startswith(b"l OK"), tag
    tag, _ = c.imap_cmd("s", "SELECT INBOX")
    assert tag.startswith(b"s OK"), tag
    s.sendall(b"".join(b"f%d FETCH 1 BODY.PEEK[]\r\n" % i for i in range(fetches)))
    # Not reading. Another client is served meanwhile, and memory holds.
    time.sleep(1)
    served(inst)
    mine = f"peer=127.0.0.1:{s.getsockname()[1]}}}"
    assert wait_until(lambda: any(mine in l and "limits.write_timeout" in l for l in inst.log().splitlines()),
                      20), inst.log()
    assert rss(inst) < RSS_BOUND
    # Draining now shows the server gave up long before 120 MB.
    total = 0
    s.settimeout(10)
    try:
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            total += len(chunk)
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    assert total < fetches * len(body) // 4, total
    served(inst)
