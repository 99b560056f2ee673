"""The content filter hook (issue 16): msgd asks a real rspamd (Debian's
package, HTTP /checkv2) about each message from a stranger on port 25.

Real components: the msgd binary (all-in-one) and a private rspamd on
loopback (its own top-level config including Debian's /etc/rspamd
modules; one normal worker on a free port; no controller, proxy or
fuzzy worker; no redis; pid, log and hyperscan cache under tmp; DNS
pointed at a dead loopback port so no lookup leaves the machine; one test
rule, MSGD_TEST_JUNK, scores 8 when the Subject says "junkme", so that
rspamd answers `add header`).
Messages come from 127.0.0.1 over SMTP (smtplib); results are read
back over IMAP.

Two msgd instances share the rspamd: `open` (fail = "open", max_size
4096) and `closed` (fail = "closed"). The last rspamd test stops rspamd.

Then a private spamd (Debian's `spamd`, SpamAssassin 4.0: --local, no
user preferences, one child) behind a third msgd with kind = "spamd".
"""

from __future__ import annotations

import os
import re
import shutil
import smtplib
import subprocess
import urllib.request
from pathlib import Path

import pytest

from conftest import DOMAIN, MsgdFactory, free_ports, unique, wait_until
from tiers import Ldap, Node, last_header, running

ALICE = f"alice@{DOMAIN}"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
INSTALL = "install it with scripts/install-test-deps.sh (apt-get install -y rspamd)"


class Rspamd:
    """A private rspamd: `rspamd -f` with CONFDIR=/etc/rspamd for the
    stock modules and everything writable in `root`."""

    def __init__(self, root: Path):
        binary = shutil.which("rspamd") or "/usr/bin/rspamd"
        if not Path(binary).exists() or not Path("/etc/rspamd/common.conf").exists():
            pytest.fail(f"rspamd not found: {INSTALL}", pytrace=False)
        for d in ("db", "run", "log"):
            (root / d).mkdir(parents=True, exist_ok=True)
        self.root = root
        self.port = free_ports(1)[0]
        # A test rule: Subject containing "junkme" scores 8 (rspamd's
        # `add header` action starts at 6, `reject` at 15).
        rules = root / "msgd_test.lua"
        rules.write_text(
            "rspamd_config.MSGD_TEST_JUNK = {\n"
            "  callback = function(task)\n"
            "    local s = task:get_subject() or ''\n"
            "    return s:find('junkme', 1, true) ~= nil\n"
            "  end,\n"
            "  score = 8.0,\n"
            "  description = 'msgd test: junk this',\n"
            "}\n"
        )
        conf = root / "rspamd.conf"
        conf.write_text(
            '.include "$CONFDIR/common.conf"\n'
            f'lua = "{rules}";\n'
            "options {\n"
            '    pidfile = "$RUNDIR/rspamd.pid";\n'
            '    .include "$CONFDIR/options.inc"\n'
            '    dns { nameserver = ["127.0.0.1:9"]; timeout = 0.2s; retransmits = 1; }\n'
            "}\n"
            'logging { type = "file"; filename = "$LOGDIR/rspamd.log"; level = "info"; }\n'
            'worker "normal" {\n'
            f'    bind_socket = "127.0.0.1:{self.port}";\n'
            "    count = 1;\n"
            "    mime = true;\n"
            "}\n"
        )
        self.out_path = root / "rspamd.out"
        self.out = open(self.out_path, "wb")
        args = [binary, "-f", "-i", "-c", str(conf), "--var", "CONFDIR=/etc/rspamd",
                "--var", f"LOCAL_CONFDIR={root}", "--var", f"DBDIR={root / 'db'}",
                "--var", f"RUNDIR={root / 'run'}", "--var", f"LOGDIR={root / 'log'}"]
        self.proc = subprocess.Popen(args, stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        # Loading the rules and compiling hyperscan takes 20 s or more.
        if not wait_until(self._pong, 180, interval=0.5):
            log = self.log_tail()
            self.stop()
            pytest.fail(f"rspamd did not answer /ping on port {self.port}\n{log}", pytrace=False)

    def _pong(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"rspamd exited {self.proc.returncode}\n{self.log_tail()}", pytrace=False)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=2) as r:
                return r.read().strip() == b"pong"
        except OSError:
            return False

    def log_tail(self) -> str:
        text = ""
        for p in (self.out_path, self.root / "log" / "rspamd.log"):
            if p.exists():
                text += p.read_text(errors="replace")[-3000:]
        return text

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.out.close()


def _filter_section(port: int, fail: str, extra: str = "") -> str:
    return (
        "\n[hygiene.filter]\nenabled = true\nkind = \"rspamd\"\n"
        f'url = "http://127.0.0.1:{port}"\ntimeout_ms = 5000\nfail = "{fail}"\n{extra}'
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    rspamd = Rspamd(tmp_path_factory.mktemp("rspamd"))
    factory = MsgdFactory(tmp_path_factory, "content_filter")
    try:
        insts = {}
        for name, fail, extra in (("open", "open", "max_size = 4096\n"), ("closed", "closed", "")):
            inst = factory(users=(ALICE,), start=False)
            inst.config_path.write_text(inst.config_text() + _filter_section(rspamd.port, fail, extra))
            inst.start()
            insts[name] = inst
        yield {"rspamd": rspamd, **insts}
    finally:
        factory.cleanup()
        rspamd.stop()


def _message(subject: str, body: str = "Hello, a plain note between friends.", extra: str = "") -> bytes:
    return (
        f"{extra}From: <bob@example.org>\r\nTo: <{ALICE}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@example.org>\r\nDate: Wed, 02 Dec 2026 12:00:00 +0000\r\n\r\n"
        f"{body}\r\n"
    ).encode()


def _send(inst, data: bytes):
    with smtplib.SMTP("127.0.0.1", inst.ports["smtp"], local_hostname="client.example.org", timeout=30) as s:
        s.sendmail("bob@example.org", [ALICE], data)


def _fetch(inst, subject: str, mailbox: str = "INBOX") -> bytes:
    header = wait_until(lambda: last_header(inst, ALICE, subject, mailbox), 15)
    assert header, f"{subject} not in {mailbox}"
    return header


def _fields(header: bytes, name: str) -> list[str]:
    text = header.decode(errors="replace").replace("\r\n\t", " ").replace("\r\n ", " ")
    return [line for line in text.split("\r\n") if line.lower().startswith(name.lower() + ":")]


def test_gtube_is_refused_550_5_7_1(world):
    for name in ("open", "closed"):
        with pytest.raises(smtplib.SMTPDataError) as e:
            _send(world[name], _message(unique("gtube"), GTUBE))
        assert e.value.smtp_code == 550, e.value
        assert e.value.smtp_error == b"5.7.1 Message refused as spam", e.value


def test_clean_message_delivered_with_status_no(world):
    subject = unique("clean")
    _send(world["open"], _message(subject))
    header = _fetch(world["open"], subject)
    status = _fields(header, "X-Spam-Status")
    assert len(status) == 1 and status[0].startswith("X-Spam-Status: No, score="), status
    assert _fields(header, "X-Spam-Action") == ["X-Spam-Action: no action"], header


def test_add_header_action_files_to_junk_with_status_yes(world):
    subject = unique("junkme")
    _send(world["open"], _message(subject))
    header = _fetch(world["open"], subject, "Junk")
    status = _fields(header, "X-Spam-Status")
    assert len(status) == 1 and status[0].startswith("X-Spam-Status: Yes, score="), status
    assert _fields(header, "X-Spam-Flag") == ["X-Spam-Flag: YES"], header
    assert _fields(header, "X-Spam-Action") == ["X-Spam-Action: add header"], header
    symbols = " ".join(_fields(header, "X-Spam-Symbols"))
    assert "MSGD_TEST_JUNK" in symbols, header
    m = world["open"].imap(ALICE)
    try:
        m.select("INBOX")
        typ, found = m.search(None, "HEADER", "Subject", subject)
        assert found[0] == b"", "a message filed to Junk is not in INBOX"
    finally:
        m.logout()


def test_incoming_spam_status_is_not_trusted(world):
    subject = unique("forged")
    forged = "X-Spam-Status: No, score=-100 (forged)\r\nX-Spam-Flag: NO\r\n"
    _send(world["open"], _message(subject, extra=forged))
    header = _fetch(world["open"], subject)
    status = _fields(header, "X-Spam-Status")
    assert len(status) == 1 and "forged" not in status[0], status
    assert _fields(header, "X-Spam-Flag") == [], header


def test_message_over_max_size_is_not_scanned(world):
    subject = unique("big")
    body = GTUBE + "\r\n" + "\r\n".join("padding line %04d of a large message" % i for i in range(200))
    data = _message(subject, body)
    assert len(data) > 4096
    _send(world["open"], data)
    header = _fetch(world["open"], subject)
    assert _fields(header, "X-Spam-Status") == [], header


@pytest.fixture(scope="module")
def two_tier(tmp_path_factory, world):
    """slapd, a store (store1.test, alice's mailHost) and an mta-in in
    front of it with the filter pointed at the module's rspamd."""
    root = tmp_path_factory.mktemp("content_filter_tiers")
    ldap = Ldap(root / "ldap")
    store = Node(root / "store", "store", "store1.test", ldap,
                 '[store]\nhost = "store1.test"\nmin_free_disk = 1048576\n')
    mta = Node(root / "mta-in", "mta-in", "mx.example.test", ldap,
               f'[mta]\nhosts = {{ "store1.test" = "127.0.0.1:{store.ports["lmtp"]}" }}\n'
               "delivery_timeout = 10\n[queue]\nretry_base = 1\nretry_max = 2\n"
               + _filter_section(world["rspamd"].port, "open"))
    with running(ldap, store, mta):
        yield {"mta": mta, "store": store}


def test_two_tier_junk_verdict_reaches_the_stores_junk(two_tier):
    mta, store = two_tier["mta"], two_tier["store"]
    junk, clean = unique("tierjunkme"), unique("tierclean")
    with mta.smtp() as s:
        s.sendmail("bob@example.org", [ALICE], _message(junk))
        s.sendmail("bob@example.org", [ALICE], _message(clean))
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("bob@example.org", [ALICE], _message(unique("tiergtube"), GTUBE))
        assert e.value.smtp_code == 550, e.value
    header = wait_until(lambda: last_header(store, ALICE, junk, "Junk"), 30)
    assert header, "the message rspamd junked is not in the store's Junk"
    assert _fields(header, "X-Spam-Flag") == ["X-Spam-Flag: YES"], header
    header = wait_until(lambda: last_header(store, ALICE, clean, "INBOX"), 30)
    assert header, "the clean message is not in the store's INBOX"
    status = _fields(header, "X-Spam-Status")
    assert len(status) == 1 and status[0].startswith("X-Spam-Status: No"), status


def test_rspamd_stopped_fail_open_delivers_fail_closed_defers(world):
    world["rspamd"].stop()
    subject = unique("down")
    _send(world["open"], _message(subject))
    header = _fetch(world["open"], subject)
    assert _fields(header, "X-Spam-Status") == [], header
    with pytest.raises(smtplib.SMTPDataError) as e:
        _send(world["closed"], _message(unique("downclosed")))
    assert e.value.smtp_code == 451, e.value
    assert e.value.smtp_error == b"4.7.1 Content filter unavailable, try again later", e.value
    # Operators see the failures (and the earlier verdicts) in /metrics.
    with urllib.request.urlopen(f"http://127.0.0.1:{world['closed'].admin_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("msgd_content_filter_total{"):
            labels = line.split("{", 1)[1].split("}", 1)[0]
            result = re.search(r'result="([a-z_]+)"', labels).group(1)
            counts[result] = counts.get(result, 0) + float(line.rsplit(" ", 1)[1])
    assert counts.get("failed", 0) >= 1, counts
    assert counts.get("reject", 0) >= 1, counts


# --------------------------------------------------------------------------
# spamd: SpamAssassin's daemon (Debian's `spamd` package), SPAMC/1.5


class Spamd:
    """A private spamd on a free loopback port: no network tests
    (--local), no user preferences, one child, pid file in `root`."""

    def __init__(self, root: Path):
        binary = shutil.which("spamd") or "/usr/sbin/spamd"
        if not Path(binary).exists():
            pytest.fail("spamd not found: install it with scripts/install-test-deps.sh "
                        "(apt-get install -y spamd)", pytrace=False)
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.port = free_ports(1)[0]
        self.out_path = root / "spamd.out"
        self.out = open(self.out_path, "wb")
        args = [binary, f"--listen=127.0.0.1:{self.port}", "--allowed-ips=127.0.0.1", "--local",
                "--nouser-config", "--max-children=1", "--min-children=1",
                f"--pidfile={root / 'spamd.pid'}", "--syslog=stderr"]
        if os.geteuid() == 0:
            args += ["-u", "nobody", "-g", "nogroup"]
        self.proc = subprocess.Popen(args, stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        if not wait_until(lambda: self._ready(), 120, interval=0.5):
            text = self.out_path.read_text(errors="replace")[-3000:]
            self.stop()
            pytest.fail(f"spamd did not start on port {self.port}\n{text}", pytrace=False)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"spamd exited {self.proc.returncode}\n"
                        f"{self.out_path.read_text(errors='replace')[-3000:]}", pytrace=False)
        return b"server successfully spawned child" in self.out_path.read_bytes()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.out.close()


@pytest.fixture(scope="module")
def spamd_world(tmp_path_factory):
    spamd = Spamd(tmp_path_factory.mktemp("spamd"))
    factory = MsgdFactory(tmp_path_factory, "content_filter_spamd")
    try:
        inst = factory(users=(ALICE,), start=False)
        inst.config_path.write_text(
            inst.config_text()
            + "\n[hygiene.filter]\nenabled = true\nkind = \"spamd\"\n"
            + f'address = "127.0.0.1:{spamd.port}"\ntimeout_ms = 20000\nfail = "closed"\n'
        )
        inst.start()
        yield {"spamd": spamd, "msgd": inst}
    finally:
        factory.cleanup()
        spamd.stop()


def test_spamd_gtube_refused_and_clean_delivered(spamd_world):
    inst = spamd_world["msgd"]
    with pytest.raises(smtplib.SMTPDataError) as e:
        _send(inst, _message(unique("sgtube"), GTUBE))
    assert e.value.smtp_code == 550, e.value
    assert e.value.smtp_error == b"5.7.1 Message refused as spam", e.value
    subject = unique("sclean")
    _send(inst, _message(subject))
    header = _fetch(inst, subject)
    status = _fields(header, "X-Spam-Status")
    assert len(status) == 1 and status[0].startswith("X-Spam-Status: No, score="), status
    assert status[0].endswith("required=5.00"), status
