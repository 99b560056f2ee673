"""Inbound SPF, DKIM, DMARC and ARC verification (issue 16) end to end.

Real components: the msgd binary (all-in-one, `[hygiene] enabled`),
dnsmasq as the DNS server of the pretend senders (TXT records: SPF, DKIM
keys, DMARC; loopback port, `[dns] nameservers` points msgd at it), and
dkimpy (PyPI `dkim`), a DKIM/ARC signer the project did not write.
Messages come from 127.0.0.1 over plain SMTP; results are read back over
IMAP from the Authentication-Results field msgd adds.

Pretend domains:
  pass.test    SPF ip4:127.0.0.1 -all, DKIM key sel._domainkey, DMARC p=reject
  fail.test    SPF -all
  soft.test    SPF ~all
  reject.test  SPF -all, DMARC p=reject
  quar.test    SPF -all, DMARC p=quarantine
  lenient.test SPF -all, DMARC p=reject, overridden to none by [hygiene.domain]
"""

from __future__ import annotations

import base64
import shutil
import smtplib
import subprocess
from pathlib import Path

import pytest

from conftest import DOMAIN, HOSTNAME, MsgdFactory, free_ports, unique, wait_for_ports, wait_until
from tiers import DEAD_DNS_PORT, Ldap, Node, last_header, running

try:
    import authres  # noqa: F401  (dkimpy's ARC signer needs it)
    import dkim
except ImportError:  # the fixture fails naming the fix
    dkim = None

ALICE = f"alice@{DOMAIN}"


def _dnsmasq_bin() -> str:
    for p in ("/usr/sbin/dnsmasq", shutil.which("dnsmasq") or ""):
        if p and Path(p).exists():
            return p
    pytest.fail("dnsmasq not found: install it with scripts/install-test-deps.sh "
                "(apt-get install -y dnsmasq-base)", pytrace=False)


def _txt(name: str, value: str) -> str:
    chunks = [value[i:i + 200] for i in range(0, len(value), 200)]
    # No quotes: dnsmasq keeps them; a comma starts the next string.
    return f"--txt-record={name}," + ",".join(chunks)


class Dns:
    def __init__(self, root: Path, dkim_p: str):
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_ports(1)[0]
        self.log_path = root / "dnsmasq.log"
        args = [
            _dnsmasq_bin(), "--keep-in-foreground", "--conf-file=/dev/null", f"--port={self.port}",
            "--no-resolv", "--no-hosts", "--listen-address=127.0.0.1", "--bind-interfaces",
            "--local=/test/", "--local=/example/", "--pid-file=", "--log-facility=-",
            "--user=root", "--group=root",
            _txt("pass.test", "v=spf1 ip4:127.0.0.1 -all"),
            _txt("sel._domainkey.pass.test", f"v=DKIM1; k=rsa; p={dkim_p}"),
            _txt("_dmarc.pass.test", "v=DMARC1; p=reject"),
            _txt("fail.test", "v=spf1 -all"),
            _txt("soft.test", "v=spf1 ~all"),
            _txt("reject.test", "v=spf1 -all"),
            _txt("_dmarc.reject.test", "v=DMARC1; p=reject"),
            _txt("quar.test", "v=spf1 -all"),
            _txt("_dmarc.quar.test", "v=DMARC1; p=quarantine"),
            _txt("lenient.test", "v=spf1 -all"),
            _txt("_dmarc.lenient.test", "v=DMARC1; p=reject"),
            # Two-tier: alice's mailHost.
            "--host-record=store1.test,127.0.0.1",
        ]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for_ports(self.proc, [self.port], 10, lambda: self.log_path.read_text(errors="replace"), "dnsmasq")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.log.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    if dkim is None:
        pytest.fail("dkimpy not found: install it with scripts/install-test-deps.sh "
                    "(python3 -m pip install dkimpy authres)", pytrace=False)
    root = tmp_path_factory.mktemp("mail_auth_world")
    key = root / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(key), "2048"], check=True, capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    dns = Dns(root, base64.b64encode(der).decode())
    factory = MsgdFactory(tmp_path_factory, "mail_auth")
    inst = factory(users=(ALICE,), start=False)
    inst.dns_nameserver = f"127.0.0.1:{dns.port}"
    inst.config_path.write_text(
        inst.config_text()
        + "\n[hygiene]\nenabled = true\ntimeout = 10\n"
        + '\n[hygiene.domain."lenient.test"]\ndmarc_policy = "none"\n'
    )
    inst.start()
    yield {"msgd": inst, "key": key.read_bytes()}
    factory.cleanup()
    dns.stop()


def _message(sender: str, subject: str, extra: str = "") -> bytes:
    return (
        f"{extra}From: <{sender}>\r\nTo: <{ALICE}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@test>\r\nDate: Wed, 02 Dec 2026 12:00:00 +0000\r\n\r\n"
        "Hello.\r\n"
    ).encode()


def _send(world, sender: str, data: bytes):
    with smtplib.SMTP("127.0.0.1", world["msgd"].ports["smtp"], local_hostname="client.example", timeout=30) as s:
        s.sendmail(sender, [ALICE], data)


def _fetch(world, subject: str, mailbox: str = "INBOX") -> bytes:
    header = wait_until(lambda: last_header(world["msgd"], ALICE, subject, mailbox), 15)
    assert header, f"{subject} not in {mailbox}"
    return header


def _results(header: bytes) -> str:
    """The unfolded Authentication-Results fields with our authserv-id."""
    text = header.decode(errors="replace").replace("\r\n\t", " ").replace("\r\n ", " ")
    return "\n".join(line for line in text.split("\r\n") if line.lower().startswith("authentication-results:"))


def test_rfc7208_spf_pass_fail_softfail(world):
    for domain, want in (("pass.test", "spf=pass"), ("fail.test", "spf=fail"), ("soft.test", "spf=softfail")):
        subject = unique("spf")
        _send(world, f"someone@{domain}", _message(f"someone@{domain}", subject))
        ar = _results(_fetch(world, subject))
        assert ar.startswith(f"Authentication-Results: {HOSTNAME};"), ar
        assert f"{want} " in ar and f"smtp.mailfrom=someone@{domain}" in ar, ar


def test_rfc6376_dkim_valid_and_broken_signature(world):
    subject = unique("dkim")
    msg = _message("a@pass.test", subject)
    sig = dkim.sign(msg, b"sel", b"pass.test", world["key"], include_headers=[b"from", b"to", b"subject"])
    _send(world, "a@pass.test", sig + msg)
    ar = _results(_fetch(world, subject))
    assert "dkim=pass header.i=@pass.test header.s=sel" in ar, ar
    assert "dmarc=pass" in ar, ar

    subject = unique("dkimbad")
    msg = _message("a@pass.test", subject)
    sig = dkim.sign(msg, b"sel", b"pass.test", world["key"], include_headers=[b"from", b"to", b"subject"])
    _send(world, "a@pass.test", sig + msg.replace(b"Hello.", b"Hello, changed."))
    ar = _results(_fetch(world, subject))
    # A changed body: mail-auth says neutral with the reason (RFC 6376 6.3
    # leaves the choice; the signature itself did not fail).
    assert "dkim=neutral (body hash did not verify)" in ar, ar

    # A changed signed header field: the signature fails.
    signed = unique("dkimsigned")
    subject = unique("dkimhdr")
    msg = _message("a@pass.test", signed)
    sig = dkim.sign(msg, b"sel", b"pass.test", world["key"], include_headers=[b"from", b"to", b"subject"])
    _send(world, "a@pass.test", sig + msg.replace(signed.encode(), subject.encode()))
    ar = _results(_fetch(world, subject))
    assert "dkim=fail" in ar, ar


def test_rfc7489_dmarc_reject_is_550_5_7_1(world):
    subject = unique("reject")
    with pytest.raises(smtplib.SMTPDataError) as e:
        _send(world, "x@reject.test", _message("x@reject.test", subject))
    assert e.value.smtp_code == 550 and e.value.smtp_error.startswith(b"5.7.1"), e.value


def test_rfc7489_dmarc_quarantine_lands_in_junk(world):
    subject = unique("quar")
    _send(world, "x@quar.test", _message("x@quar.test", subject))
    ar = _results(_fetch(world, subject, "Junk"))
    assert "dmarc=fail" in ar and "policy.dmarc=quarantine" in ar, ar
    m = world["msgd"].imap(ALICE)
    try:
        typ, data = m.list()
        junk = [line for line in data if line.endswith(b'"Junk"') or line.endswith(b" Junk")]
        assert junk and b"\\Junk" in junk[0], data
        m.select("INBOX")
        typ, found = m.search(None, "HEADER", "Subject", subject)
        assert found[0] == b"", "a quarantined message is not in INBOX"
    finally:
        m.logout()


def test_per_domain_override_turns_reject_into_none(world):
    subject = unique("lenient")
    _send(world, "x@lenient.test", _message("x@lenient.test", subject))
    ar = _results(_fetch(world, subject))
    assert "dmarc=fail" in ar, ar


def test_rfc8617_arc_chain_sealed_by_dkimpy_passes(world):
    subject = unique("arc")
    msg = _message("a@pass.test", subject, "Authentication-Results: relay.pass.test; spf=pass smtp.mailfrom=pass.test\r\n")
    seal = dkim.arc_sign(msg, b"sel", b"pass.test", world["key"], b"relay.pass.test")
    assert seal, "dkimpy produced no ARC set"
    _send(world, "a@pass.test", b"".join(seal) + msg)
    ar = _results(_fetch(world, subject))
    assert "arc=pass" in ar, ar


def test_rfc8601_5_forged_results_with_our_authserv_id_removed(world):
    subject = unique("forged")
    forged = f"Authentication-Results: {HOSTNAME}; dkim=pass header.d=bank.test; dmarc=pass\r\n"
    _send(world, "someone@fail.test", _message("someone@fail.test", subject, forged))
    header = _fetch(world, subject)
    ar = _results(header)
    assert ar.count("Authentication-Results:") == 1, ar
    assert "bank.test" not in ar and "spf=fail" in ar, ar


# --------------------------------------------------------------------------
# two-tier: an mta-in verifies, the store behind it (LMTP) files into Junk


@pytest.fixture(scope="module")
def two_tier(tmp_path_factory, world):
    root = tmp_path_factory.mktemp("mail_auth_tiers")
    der = subprocess.run(["openssl", "rsa", "-pubout", "-outform", "DER"], input=world["key"],
                         check=True, capture_output=True).stdout
    dns = Dns(root / "dns", base64.b64encode(der).decode())
    ldap = Ldap(root / "ldap")
    store = Node(root / "store", "store", "store1.test", ldap,
                 '[store]\nhost = "store1.test"\nmin_free_disk = 1048576\n')
    mta = Node(root / "mta-in", "mta-in", "mx.example.test", ldap,
               f"[mta]\nlmtp_port = {store.ports['lmtp']}\ndelivery_timeout = 10\n"
               "\n[queue]\nretry_base = 1\nretry_max = 2\n"
               "\n[hygiene]\nenabled = true\n")
    text = mta.config_text().replace(f"127.0.0.1:{DEAD_DNS_PORT}", f"127.0.0.1:{dns.port}")
    assert f"127.0.0.1:{dns.port}" in text
    mta.config_path.write_text(text)
    try:
        with running(ldap, store, mta):
            yield {"mta": mta, "store": store}
    finally:
        dns.stop()


def test_two_tier_quarantine_reaches_the_stores_junk_and_results_travel(two_tier):
    mta, store = two_tier["mta"], two_tier["store"]
    subject = unique("tierquar")
    forged_mark = "X-Msgd-Quarantine: dmarc\r\n"
    with mta.smtp() as s:
        s.sendmail("x@quar.test", [ALICE], _message("x@quar.test", subject))
        # A stranger's own mark is removed at the mta-in: delivered to INBOX.
        plain = unique("tierplain")
        s.sendmail("x@pass.test", [ALICE], _message("x@pass.test", plain, forged_mark))
    header = wait_until(lambda: last_header(store, ALICE, subject, "Junk"), 30)
    assert header, "the quarantined message is not in the store's Junk"
    ar = _results(header)
    # The mta-in's results travel; the store added none of its own.
    assert ar.startswith("Authentication-Results: mx.example.test;") and ar.count("Authentication-Results:") == 1, ar
    assert "policy.dmarc=quarantine" in ar, ar
    header = wait_until(lambda: last_header(store, ALICE, plain, "INBOX"), 30)
    assert header, "the message with a forged mark is not in INBOX"
    assert b"X-Msgd-Quarantine" not in header
    assert "dmarc=pass" in _results(header)
