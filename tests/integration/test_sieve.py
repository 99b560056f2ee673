"""Sieve at delivery and ManageSieve (issue 16; docs/sieve.md).

Scripts are uploaded with a real ManageSieve client (sieve-connect, Debian)
and take effect on the next delivery, checked over IMAP and SMTP.
"""

from __future__ import annotations

import shutil
import smtplib
import socket
import subprocess
import time

import pytest

from conftest import DOMAIN, build_message

BOB = f"bob@{DOMAIN}"
ANN = f"ann@{DOMAIN}"
INSTALL = "install it with scripts/install-test-deps.sh (or: apt-get install -y sieve-connect)"


@pytest.fixture(scope="module")
def sieve_server(tmp_path_factory, request):
    from conftest import MsgdFactory, free_ports

    factory = MsgdFactory(tmp_path_factory, "sieve")
    m = factory(users=[BOB, ANN], start=False)
    m.ports["managesieve"] = free_ports(1)[0]
    with open(m.config_path, "a") as f:
        f.write(f'\n[listener.managesieve]\nbind = ["127.0.0.1:{m.ports["managesieve"]}"]\nenabled = true\n')
    m.start()
    yield m
    factory.cleanup()


def sieve_connect(m, user: str, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("sieve-connect")
    if exe is None:
        pytest.fail(f"sieve-connect is missing: {INSTALL}", pytrace=False)
    res = subprocess.run(
        [exe, "--server", "127.0.0.1", "--port", str(m.ports["managesieve"]), "--user", user,
         "--tlscafile", str(m.cert_path), "--tlshostname", "127.0.0.1",
         "--authmech", "PLAIN", "--passwordfd", "0", *args],
        input=m.passwords[user] + "\n", capture_output=True, text=True, timeout=20,
    )
    return res


def upload(m, tmp_path, user: str, name: str, script: str) -> None:
    f = tmp_path / f"{name}.sieve"
    f.write_text(script)
    res = sieve_connect(m, user, "--localsieve", str(f), "--remotesieve", name, "--upload")
    assert res.returncode == 0, f"upload: {res.stdout}\n{res.stderr}\n{m.log()[-3000:]}"
    res = sieve_connect(m, user, "--remotesieve", name, "--activate")
    assert res.returncode == 0, f"activate: {res.stdout}\n{res.stderr}"


def count(m, user: str, mailbox: str) -> int:
    i = m.imap(user)
    try:
        typ, data = i.select(f'"{mailbox}"', readonly=True)
        return int(data[0]) if typ == "OK" else -1
    finally:
        i.logout()


def test_rfc5804_putscript_listscripts_and_syntax_errors(sieve_server, tmp_path):
    m = sieve_server
    upload(m, tmp_path, BOB, "first", "keep;\r\n")
    res = sieve_connect(m, BOB, "--list")
    assert res.returncode == 0, res.stderr
    assert "first" in res.stdout
    bad = tmp_path / "bad.sieve"
    bad.write_text('if header :contains "Subject" {\r\n')
    res = sieve_connect(m, BOB, "--localsieve", str(bad), "--remotesieve", "bad", "--upload")
    assert res.returncode != 0, "a script with a syntax error must be refused"
    res = sieve_connect(m, BOB, "--list")
    assert "bad" not in res.stdout


def test_rfc5804_raw_session_capabilities_and_bounded_literal(sieve_server):
    m = sieve_server
    with socket.create_connection(("127.0.0.1", m.ports["managesieve"]), timeout=10) as s:
        f = s.makefile("rb")
        caps = []
        while True:
            line = f.readline()
            caps.append(line)
            if line.startswith(b"OK"):
                break
        text = b"".join(caps)
        assert b'"SIEVE"' in text and b"fileinto" in text and b"vacation" in text
        assert b'"STARTTLS"' in text
        # A claimed literal far over the limit: refused, not buffered; the
        # session goes on.
        n = 64 * 1024 + 2048
        s.sendall(b"PUTSCRIPT \"x\" {%d+}\r\n" % n + b"x" * n + b"\r\n")
        assert f.readline().startswith(b"NO")
        s.sendall(b'NOOP "t1"\r\n')
        assert f.readline().startswith(b'OK (TAG "t1")')


def test_fileinto_takes_effect_on_the_next_delivery(sieve_server, tmp_path):
    m = sieve_server
    upload(m, tmp_path, BOB, "filing",
           'require ["fileinto", "mailbox"];\r\n'
           'if header :contains "Subject" "report" { fileinto :create "Reports"; }\r\n')
    m.send(BOB, build_message(BOB, "Weekly report", "numbers"))
    deadline = time.monotonic() + 15
    while count(m, BOB, "Reports") < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert count(m, BOB, "Reports") == 1
    m.send(BOB, build_message(BOB, "Lunch", "soup"))
    m.wait_count(BOB, 1)
    assert count(m, BOB, "Reports") == 1


def test_reject_refuses_at_end_of_data(sieve_server, tmp_path):
    m = sieve_server
    upload(m, tmp_path, BOB, "refuse", 'require "reject";\r\nreject "not today";\r\n')
    with m.smtp() as s:
        s.ehlo()
        with pytest.raises((smtplib.SMTPDataError, smtplib.SMTPRecipientsRefused)) as e:
            s.sendmail("x@remote.example", [BOB], build_message(BOB, "hello", "x"))
    assert "550" in str(e.value) and "not today" in str(e.value)
    # The store's LMTP (the two-tier path): the same reply for the recipient.
    with smtplib.LMTP("127.0.0.1", m.ports["lmtp"], timeout=20) as s:
        s.ehlo("mta-in.example.test")
        with pytest.raises((smtplib.SMTPDataError, smtplib.SMTPRecipientsRefused)) as e:
            s.sendmail("x@remote.example", [BOB], build_message(BOB, "hello", "x"))
    assert "550" in str(e.value) and "not today" in str(e.value)


def test_vacation_one_reply_none_to_null_or_lists_none_twice(sieve_server, tmp_path):
    m = sieve_server
    upload(m, tmp_path, BOB, "away",
           'require "vacation";\r\nvacation :days 1 :subject "Away" "Back on Monday.";\r\n')
    before = count(m, ANN, "INBOX")
    m.send(BOB, build_message(BOB, "question", "are you there?", sender=ANN), sender=ANN)
    m.wait_count(ANN, before + 1)
    # The second message within :days: no reply; <> and a list: none.
    m.send(BOB, build_message(BOB, "again", "hello?", sender=ANN), sender=ANN)
    m.send(BOB, build_message(BOB, "bounce", "x", sender=ANN), sender="")
    listmsg = build_message(BOB, "list post", "x", sender=ANN, extra_headers=["List-Id: <l.example.test>"])
    m.send(BOB, listmsg, sender=ANN)
    time.sleep(4)
    assert count(m, ANN, "INBOX") == before + 1
    i = m.imap(ANN)
    try:
        i.select("INBOX", readonly=True)
        typ, data = i.fetch(str(before + 1), "(BODY.PEEK[HEADER])")
        head = data[0][1].decode(errors="replace")
    finally:
        i.logout()
    assert "Auto-Submitted: auto-replied" in head
    assert "Away" in head
