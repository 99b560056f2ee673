"""One resolver for every name, and connection reuse to the stores (issue 11).

Real components: slapd (tests/ldap), dnsmasq as the site's DNS server on a
loopback port, a store, an mta-in and an mmp (msgd binaries). The store's
name `store1.test` is in no /etc/hosts and in no `[mta] hosts` /
`[mmp] backends` address: only dnsmasq knows it. The mta-in delivers by
LMTP to it by the user's mailHost, the mmp reaches it as a backend given by
name; both through `[dns] nameservers`.

Connection reuse: 20 messages through the mta-in reach the store over at
most `mta.lmtp_pool` LMTP connections (the store's log names the session
of each delivery).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import build_message, free_ports, unique, wait_for_ports, wait_until
from tiers import DEAD_DNS_PORT, Ldap, Node, PASSWORDS, message_ids, send

ALICE = "alice@example.test"  # mailHost store1.test
STORE = "store1.test"


def _dnsmasq_bin() -> str:
    for p in ("/usr/sbin/dnsmasq", shutil.which("dnsmasq") or ""):
        if p and Path(p).exists():
            return p
    pytest.fail("dnsmasq not found: install it with scripts/install-test-deps.sh "
                "(apt-get install -y dnsmasq-base)", pytrace=False)


class Dns:
    """dnsmasq on 127.0.0.1:<port>: the site's internal names, nothing else."""

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_ports(1)[0]
        self.log_path = root / "dnsmasq.log"
        args = [
            _dnsmasq_bin(), "--keep-in-foreground", "--conf-file=/dev/null", f"--port={self.port}",
            "--no-resolv", "--no-hosts", "--listen-address=127.0.0.1", "--bind-interfaces",
            "--local=/test/", "--pid-file=", "--log-facility=-", "--log-queries",
            "--user=root", "--group=root",
            f"--host-record={STORE},127.0.0.1",
        ]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for_ports(self.proc, [self.port], 10, lambda: self.log_path.read_text(errors="replace"), "dnsmasq")

    def queries(self, name: str) -> int:
        text = self.log_path.read_text(errors="replace")
        return len(re.findall(rf"query\[A+\] {re.escape(name)} from", text))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def use_dns(node: Node, dns: Dns) -> None:
    """Points the node's `[dns] nameservers` at dnsmasq (tiers.Node points
    it at a dead port)."""
    text = node.config_text().replace(f"127.0.0.1:{DEAD_DNS_PORT}", f"127.0.0.1:{dns.port}")
    assert f"127.0.0.1:{dns.port}" in text
    node.config_path.write_text(text)


class Site:
    def __init__(self, root: Path):
        self.dns = None
        self.ldap = Ldap(root / "ldap")
        self.store = Node(root / "store", "store", STORE, self.ldap, textwrap.dedent(f"""
            [store]
            host = "{STORE}"
            min_free_disk = 1048576

            [store.partition.secondary]
            path = "partition/secondary"
            """))
        # No [mta] hosts: the store is found by its mailHost in the DNS.
        self.mta = Node(root / "mta-in", "mta-in", "mx.example.test", self.ldap, textwrap.dedent(f"""
            [mta]
            lmtp_port = {self.store.ports["lmtp"]}
            delivery_timeout = 10

            [queue]
            retry_base = 1
            retry_max = 2
            """))
        # The backend is given by name (and port): the name is only in the DNS.
        self.mmp = Node(root / "mmp", "mmp", "mmp.test", self.ldap, textwrap.dedent(f"""
            [mmp]
            login_mode = "credentials"
            backend_tls = "none"
            imap_backends = {{ "{STORE}" = "{STORE}:{self.store.ports["imap"]}" }}
            """), listeners=("imap",))
        self.nodes = [self.store, self.mta, self.mmp]
        self.root = root

    def start(self):
        self.dns = Dns(self.root / "dns")
        for n in (self.mta, self.mmp):
            use_dns(n, self.dns)
        self.ldap.start()
        for n in self.nodes:
            n.start()

    def logs(self) -> str:
        return "\n".join(n.log(6000) for n in self.nodes)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    s = Site(tmp_path_factory.mktemp("resolver"))
    try:
        s.start()
        yield s
        for n in s.nodes:
            if n.running:
                n.stop()
    finally:
        for n in s.nodes:
            n.cleanup()
        if s.ldap.running:
            s.ldap.stop()
        if s.dns is not None:
            s.dns.stop()


@pytest.fixture(autouse=True)
def logs_on_failure(request, site):
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before:
        print(site.logs())


def test_store_name_only_in_dns_is_not_resolvable_by_the_system():
    """The premise: without the configured DNS server the name is unknown."""
    import socket
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo(STORE, 24)


def test_mta_in_delivers_by_lmtp_to_a_store_named_only_in_the_dns(site):
    local = unique("dns")
    send(site.mta, "someone@remote.example", [ALICE],
         build_message(ALICE, "by name", "resolved by [dns]\r\n", msgid=local))
    mid = f"<{local}@remote.example>"
    assert wait_until(lambda: mid in message_ids(site.store, ALICE), 20), site.logs()
    assert site.dns.queries(STORE) >= 1, "the name went to the configured DNS server"
    assert not site.mta.queue_files() or wait_until(lambda: not site.mta.queue_files(), 10)


def test_mmp_reaches_a_backend_named_only_in_the_dns(site):
    import imaplib
    m = imaplib.IMAP4("127.0.0.1", site.mmp.ports["imap"], timeout=20)
    try:
        typ, _ = m.login(ALICE, PASSWORDS[ALICE])
        assert typ == "OK"
        typ, data = m.select("INBOX")
        assert typ == "OK", data
    finally:
        try:
            m.logout()
        except Exception:
            pass


def lmtp_deliveries(store: Node) -> list[str]:
    """The store's LMTP session id of each message it received, in order
    (the log line of every LMTP transaction names its session)."""
    text = store.stderr_path.read_text(encoding="utf-8", errors="replace").replace('"', "")
    return [m.group(1) for m in re.finditer(r"session\{id=(\d+) proto=lmtp [^}]*\}: message received", text)]


def test_twenty_deliveries_reuse_the_pooled_lmtp_connections(site):
    """mta.lmtp_pool: 20 messages, one at a time (each stored before the
    next is sent), reach the store over at most 4 LMTP connections, not
    20. (Overlapping deliveries may open more at once: the pool bounds the
    idle connections it keeps, not the connections in use.)"""
    before = len(lmtp_deliveries(site.store))
    mids = []
    for n in range(20):
        local = unique(f"pool{n}")
        send(site.mta, "someone@remote.example", [ALICE],
             build_message(ALICE, f"pooled {n}", "reuse\r\n", msgid=local))
        mids.append(f"<{local}@remote.example>")
        assert wait_until(lambda: len(lmtp_deliveries(site.store)) - before >= n + 1, 30), site.logs()
    assert wait_until(lambda: set(mids) <= set(message_ids(site.store, ALICE)), 30), site.logs()
    sessions = wait_until(lambda: (lambda d: d if len(d) >= 20 else None)(lmtp_deliveries(site.store)[before:]), 5)
    assert sessions is not None and len(sessions) == 20, site.store.log()
    assert 1 <= len(set(sessions)) <= 4, sessions
