"""Greylisting (issue 16, `[hygiene.greylist]`) end to end.

Real components: the msgd binary (all-in-one) with a 2-second delay,
smtplib as the sending MTA from loopback (a stranger on port 25), IMAP to
see what was delivered. The triplet state lives in
`<data_dir>/greylist.redb`; msgd is killed with SIGKILL and restarted to
show it is durable.
"""

from __future__ import annotations

import time

import pytest

from conftest import CLIENT_HELO, DOMAIN, MsgdFactory, unique
import smtplib

ALICE = f"alice@{DOMAIN}"
DELAY = 2


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    factory = MsgdFactory(tmp_path_factory, "greylist")
    m = factory(users=(ALICE,), start=False)
    m.config_path.write_text(
        m.config_text()
        + f"\n[hygiene.greylist]\nenabled = true\ndelay = {DELAY}\nretry_window = 600\n"
        + f'domains = ["{DOMAIN}"]\n'
    )
    m.start()
    yield m
    factory.cleanup()


def message(sender: str, subject: str) -> bytes:
    return (f"From: <{sender}>\r\nTo: <{ALICE}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{unique('g')}@test>\r\n\r\nHello.\r\n").encode()


def attempt(inst, sender: str, subject: str) -> tuple[int, bytes]:
    """One delivery attempt; returns the RCPT reply (the message is sent
    when it was accepted)."""
    with smtplib.SMTP("127.0.0.1", inst.ports["smtp"], local_hostname=CLIENT_HELO, timeout=20) as s:
        s.ehlo()
        assert s.mail(sender)[0] == 250
        code, msg = s.rcpt(ALICE)
        if code == 250:
            dcode, dmsg = s.data(message(sender, subject))
            assert dcode == 250, (dcode, dmsg)
        return code, msg


def assert_greylisted(reply):
    code, msg = reply
    assert code == 451, reply
    assert b"4.7.1" in msg and b"Greylisted" in msg, reply


def count(inst) -> int:
    m = inst.imap(ALICE)
    try:
        typ, data = m.select("INBOX", readonly=True)
        assert typ == "OK", data
        return int(data[0])
    finally:
        m.logout()


def test_first_attempt_and_early_retry_are_deferred_a_later_retry_is_delivered(inst):
    sender = f"{unique('s')}@far.example"
    before = count(inst)
    assert_greylisted(attempt(inst, sender, "first"))
    assert_greylisted(attempt(inst, sender, "early retry"))
    time.sleep(DELAY + 0.5)
    assert attempt(inst, sender, "retry")[0] == 250
    inst.wait_count(ALICE, before + 1)
    # Remembered: the next message passes at once.
    assert attempt(inst, sender.upper(), "again")[0] == 250
    inst.wait_count(ALICE, before + 2)


def test_other_domains_are_not_greylisted(inst):
    # A domain not in `domains` is not greylisted: the recipient is then
    # refused by the relay rules, not deferred.
    with smtplib.SMTP("127.0.0.1", inst.ports["smtp"], local_hostname=CLIENT_HELO, timeout=20) as s:
        s.ehlo()
        assert s.mail(f"{unique('s')}@far.example")[0] == 250
        code, msg = s.rcpt("someone@elsewhere.example")
        assert code >= 500 and b"Greylisted" not in msg, (code, msg)


def test_state_survives_kill_9(inst):
    passed = f"{unique('p')}@far.example"
    pending = f"{unique('q')}@far.example"
    assert_greylisted(attempt(inst, passed, "first"))
    time.sleep(DELAY + 0.5)
    assert attempt(inst, passed, "passes")[0] == 250
    assert_greylisted(attempt(inst, pending, "first"))
    sighted = time.monotonic()
    before = count(inst)

    inst.kill()
    inst.start()
    assert (inst.data_dir / "greylist.redb").exists()

    # The passed triplet passes at once.
    assert attempt(inst, passed, "after restart")[0] == 250
    # The pending one kept its first sighting: after the delay it passes
    # (a forgotten one would be deferred again).
    time.sleep(max(0.0, DELAY + 0.5 - (time.monotonic() - sighted)))
    assert attempt(inst, pending, "after restart")[0] == 250
    inst.wait_count(ALICE, before + 2)
