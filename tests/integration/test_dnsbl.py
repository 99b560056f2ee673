"""DNS blocklists and allowlists (issue 16, RFC 5782) end to end.

Real components: the msgd binary (all-in-one, `[hygiene.dnsbl]` on) and
dnsmasq on a loopback port serving the lists' A records (`[dns]
nameservers` points msgd at it; `--log-queries` shows what msgd asked).
Clients connect from chosen loopback addresses (127.0.0.x, the socket is
bound before connecting), so each address plays one part:

  127.0.0.1  on no list (sends the MAIL FROM tests)
  127.0.0.2  on bl.test (weight 1) and bl2.test (weight 1, with a message)
  127.0.0.3  on bl.test and on the allowlist wl.test (weight -1): passes
  127.0.0.4  on bl.test but in allow_networks: never looked up
  127.0.0.5  bl.test answers 127.0.0.1 (query refused): does not count
  127.0.0.6  in deny_networks: refused without a lookup
  127.0.0.7  coded.test answers 127.0.0.2, only 127.0.0.10 counts: passes
  127.0.0.8  coded.test answers 127.0.0.10: refused
Sender domains: spammer.test and friendly.test are on dbl.test (kind
domain); friendly.test is in allow_senders.
"""

from __future__ import annotations

import http.client
import shutil
import smtplib
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from conftest import MsgdFactory, free_ports, wait_for_ports

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # _metrics() fails naming the fix
    text_string_to_metric_families = None


def _dnsmasq_bin() -> str:
    for p in ("/usr/sbin/dnsmasq", shutil.which("dnsmasq") or ""):
        if p and Path(p).exists():
            return p
    pytest.fail("dnsmasq not found: install it with scripts/install-test-deps.sh "
                "(apt-get install -y dnsmasq-base)", pytrace=False)


RECORDS = {
    "2.0.0.127.bl.test": "127.0.0.2",
    "2.0.0.127.bl2.test": "127.0.0.3",
    "3.0.0.127.bl.test": "127.0.0.2",
    "3.0.0.127.wl.test": "127.0.0.2",
    "4.0.0.127.bl.test": "127.0.0.2",
    "5.0.0.127.bl.test": "127.0.0.1",
    "7.0.0.127.coded.test": "127.0.0.2",
    "8.0.0.127.coded.test": "127.0.0.10",
    "spammer.test.dbl.test": "127.0.1.2",
    "friendly.test.dbl.test": "127.0.1.2",
}

DNSBL_TOML = """
[hygiene.dnsbl]
enabled = true
threshold = 1.0
timeout_ms = {timeout_ms}
allow_networks = ["127.0.0.4/32"]
deny_networks = ["127.0.0.6"]
allow_senders = ["@friendly.test"]
zones = [
  {{ zone = "bl.test", weight = 1.0 }},
  {{ zone = "bl2.test", weight = 1, message = "see https://bl2.test/lookup" }},
  {{ zone = "wl.test", weight = -1.0 }},
  {{ zone = "coded.test", codes = ["127.0.0.10"] }},
  {{ zone = "dbl.test", kind = "domain" }},
]
"""


class Dns:
    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_ports(1)[0]
        self.log_path = root / "dnsmasq.log"
        args = [
            _dnsmasq_bin(), "--keep-in-foreground", "--conf-file=/dev/null", f"--port={self.port}",
            "--no-resolv", "--no-hosts", "--listen-address=127.0.0.1", "--bind-interfaces",
            "--local=/test/", "--pid-file=", "--log-facility=-", "--log-queries",
            # Real lists give TTLs; dnsmasq's default for its own records is 0.
            "--local-ttl=300",
            "--user=root", "--group=root",
        ] + [f"--host-record={name},{ip}" for name, ip in RECORDS.items()]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for_ports(self.proc, [self.port], 10, lambda: self.log_path.read_text(errors="replace"), "dnsmasq")

    def queries(self, name: str) -> int:
        self.log.flush()
        return sum(1 for line in self.log_path.read_text(errors="replace").splitlines()
                   if f"query[A] {name} " in line)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.log.close()


def _msgd(factory: MsgdFactory, nameserver: str, timeout_ms: int):
    inst = factory(start=False)
    inst.dns_nameserver = nameserver
    inst.config_path.write_text(inst.config_text() + DNSBL_TOML.format(timeout_ms=timeout_ms))
    inst.start()
    return inst


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("dnsbl_world")
    dns = Dns(root)
    factory = MsgdFactory(tmp_path_factory, "dnsbl")
    inst = _msgd(factory, f"127.0.0.1:{dns.port}", 3000)
    yield {"msgd": inst, "dns": dns}
    factory.cleanup()
    dns.stop()


class Session:
    """A raw SMTP client whose socket is bound to `source` first."""

    def __init__(self, port: int, source: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15, source_address=(source, 0))
        self.buf = b""

    def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(4096)
                assert chunk, f"connection closed after {lines!r}"
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode())
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), "\n".join(x[4:] for x in lines)

    def cmd(self, line: str) -> tuple[int, str]:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def close(self):
        self.sock.close()


def _metrics(port: int) -> str:
    if text_string_to_metric_families is None:
        pytest.fail("prometheus-client is missing: install it with scripts/install-test-deps.sh "
                    "(or: python3 -m pip install prometheus-client)", pytrace=False)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        body = r.read().decode()
        assert r.status == 200, body
        return body
    finally:
        c.close()


def _greeting(world, source: str) -> tuple[int, str, Session]:
    s = Session(world["msgd"].ports["smtp"], source)
    code, text = s.reply()
    return code, text, s


def test_rfc5782_listed_client_gets_554_naming_every_list_then_only_quit(world):
    code, text, s = _greeting(world, "127.0.0.2")
    try:
        assert code == 554, text
        assert text == ("5.7.1 Service unavailable; client [127.0.0.2] blocked using bl.test, bl2.test; "
                        "see https://bl2.test/lookup"), text
        code, text = s.cmd("EHLO client.example")
        assert code == 503, text
        code, text = s.cmd("MAIL FROM:<a@b.example>")
        assert code == 503, text
        code, text = s.cmd("QUIT")
        assert code == 221, text
    finally:
        s.close()


def test_answers_are_cached_so_a_busy_client_costs_one_lookup(world):
    for _ in range(3):
        code, text, s = _greeting(world, "127.0.0.2")
        s.close()
        assert code == 554, text
    assert world["dns"].queries("2.0.0.127.bl.test") == 1, world["dns"].log_path.read_text()
    text = _metrics(world["msgd"].admin_port)
    samples = [(s.name, dict(s.labels), s.value)
               for f in text_string_to_metric_families(text) for s in f.samples]

    def value(zone: str, result: str) -> float:
        return sum(v for n, lab, v in samples if n == "msgd_dnsbl_lookups_total"
                   and lab.get("zone") == zone and lab.get("result") == result)

    assert value("bl.test", "answered") == 1, text
    assert value("bl.test", "cached") >= 3, text
    assert value("wl.test", "not_listed") >= 1, text


def test_allowlist_zone_with_negative_weight_offsets_a_hit(world):
    code, text, s = _greeting(world, "127.0.0.3")
    try:
        assert code == 220, text
        assert s.cmd("QUIT")[0] == 221
    finally:
        s.close()
    # Both lists were asked: the pass is the sum, not a missing lookup.
    assert world["dns"].queries("3.0.0.127.bl.test") == 1
    assert world["dns"].queries("3.0.0.127.wl.test") == 1


def test_local_allow_networks_skip_the_lists(world):
    code, text, s = _greeting(world, "127.0.0.4")
    s.close()
    assert code == 220, text
    assert world["dns"].queries("4.0.0.127.bl.test") == 0


def test_query_refused_code_127_0_0_1_does_not_count(world):
    code, text, s = _greeting(world, "127.0.0.5")
    s.close()
    assert code == 220, text
    assert world["dns"].queries("5.0.0.127.bl.test") == 1


def test_local_deny_networks_refuse_without_a_lookup(world):
    code, text, s = _greeting(world, "127.0.0.6")
    s.close()
    assert code == 554, text
    assert text == "5.7.1 Service unavailable; client [127.0.0.6] blocked by local policy", text
    assert world["dns"].queries("6.0.0.127.bl.test") == 0


def test_zone_codes_select_the_answers_that_count(world):
    code, text, s = _greeting(world, "127.0.0.7")
    s.close()
    assert code == 220, text
    code, text, s = _greeting(world, "127.0.0.8")
    s.close()
    assert code == 554, text
    assert text.endswith("client [127.0.0.8] blocked using coded.test"), text


def test_domain_list_refuses_the_sender_at_mail_from(world):
    with smtplib.SMTP("127.0.0.1", world["msgd"].ports["smtp"], local_hostname="client.example",
                      timeout=20, source_address=("127.0.0.1", 0)) as s:
        s.ehlo()
        code, text = s.mail("someone@Spammer.TEST")
        assert code == 554, text
        assert text == b"5.7.1 Sender domain blocked using dbl.test", text
        # The session goes on: another sender is accepted.
        code, text = s.mail("someone@clean.test")
        assert code == 250, text
        s.rset()
        # allow_senders: the domain is listed but not looked up.
        code, text = s.mail("someone@friendly.test")
        assert code == 250, text
        s.rset()
        # The null sender has no domain to look up.
        code, text = s.mail("")
        assert code == 250, text
    assert world["dns"].queries("spammer.test.dbl.test") == 1
    assert world["dns"].queries("friendly.test.dbl.test") == 0
    # Domain zones are not asked at connect, ip zones not at MAIL FROM.
    assert world["dns"].queries("1.0.0.127.dbl.test") == 0
    assert world["dns"].queries("clean.test.bl.test") == 0


def test_dead_dns_server_fails_open_quickly(tmp_path_factory):
    # A UDP socket that never answers: every lookup times out.
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))
    factory = MsgdFactory(tmp_path_factory, "dnsbl_dead")
    try:
        inst = _msgd(factory, f"127.0.0.1:{dead.getsockname()[1]}", 500)
        start = time.monotonic()
        s = Session(inst.ports["smtp"], "127.0.0.2")
        try:
            code, text = s.reply()
            took = time.monotonic() - start
            assert code == 220, text
            assert took < 2.5, f"greeting after {took:.1f}s with timeout_ms = 500"
            s.cmd("EHLO client.example")
            start = time.monotonic()
            code, text = s.cmd("MAIL FROM:<x@spammer.test>")
            took = time.monotonic() - start
            assert code == 250, text
            assert took < 2.5, f"MAIL FROM answered after {took:.1f}s"
            assert s.cmd("QUIT")[0] == 221
        finally:
            s.close()
    finally:
        factory.cleanup()
        dead.close()


def test_bad_list_config_is_refused_naming_the_keys(tmp_path_factory):
    factory = MsgdFactory(tmp_path_factory, "dnsbl_config")
    inst = factory(start=False)
    inst.config_path.write_text(inst.config_text() + textwrap.dedent("""
        [hygiene.dnsbl]
        enabled = true
        threshold = 0
        zones = [ { zone = "bad zone" }, { zone = "ok.test", message = "two\\nlines" } ]
        """))
    res = inst.cli("config", "check")
    assert res.returncode == 2, res
    assert "hygiene.dnsbl.threshold" in res.stderr, res.stderr
    assert "hygiene.dnsbl.zones[0].zone" in res.stderr, res.stderr
    assert "hygiene.dnsbl.zones[1].message" in res.stderr, res.stderr
    inst.config_path.write_text(inst.config_text() + textwrap.dedent("""
        [hygiene.dnsbl]
        zones = [ { zone = "x.test", kind = "dns" } ]
        """))
    res = inst.cli("config", "check")
    assert res.returncode == 2 and "ip" in res.stderr and "domain" in res.stderr, res.stderr
