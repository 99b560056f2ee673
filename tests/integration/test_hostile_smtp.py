"""Hostile SMTP/LMTP/submission clients against the real binary (issue 9).

Each test plays one attack and asserts the server's answer, that another
client is served meanwhile or right after, and where memory is at stake
that msgd's resident set (VmRSS from /proc) stays under a stated bound:

- ten concurrent 40 MB DATA bodies are spooled to disk, not held in RAM
  (`limits.spool_threshold`);
- the process-wide byte budget (`limits.max_bytes_in_flight`) answers
  `452 4.3.1` at MAIL/DATA and IMAP `NO [LIMIT]` for APPEND when spent;
- a client trickling bytes is dropped at the whole-command / whole-DATA
  deadline (`smtp.command_timeout`, `smtp.data_timeout`,
  `smtp.preauth_timeout`), not kept alive by each byte;
- a client guessing recipients is cut off after `smtp.hard_error_limit`
  rejected RCPTs (`421 4.7.0`);
- submission refuses a second From:/Sender: field and checks every
  From: address (groups included);
- a smarthost password configured without verified TLS stops msgd at
  start (and check-config);
- a DSN caused by our own failure carries no internal error text.
"""

from __future__ import annotations

import base64
import smtplib
import socket
import subprocess
import threading
import time

from conftest import (
    DOMAIN,
    LineClient,
    Msgd,
    imap_raw_login,
    msgd_bin,
    msgd_env,
    unique,
    wait_until,
)

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
USERS = (ALICE, BOB)

MB = 1024 * 1024


def rss_kib(inst: Msgd) -> int:
    with open(f"/proc/{inst.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc status")


def start(msgd_factory, extra: str = "", users=USERS) -> Msgd:
    inst = msgd_factory(users=users, start=False)
    inst.config_path.write_text(inst.config_text() + "\n" + extra)
    inst.start()
    return inst


def assert_serves_another_client(inst: Msgd) -> None:
    """A fresh SMTP client gets its greeting and a NOOP answered."""
    with LineClient(inst.ports["smtp"], timeout=20) as c:
        code, text = c.smtp_reply()
        assert code == 220, text
        assert c.smtp_cmd("EHLO other.example")[0] == 250
        assert c.smtp_cmd("NOOP")[0] == 250
        assert c.smtp_cmd("QUIT")[0] == 221


def open_data(inst: Msgd, rcpt: str = BOB, listener: str = "smtp") -> LineClient:
    """A session that has received 354 and is ready for the body."""
    c = LineClient(inst.ports[listener], timeout=60)
    assert c.smtp_reply()[0] == 220
    assert c.smtp_cmd("EHLO hostile.example")[0] == 250
    assert c.smtp_cmd("MAIL FROM:<x@remote.example>")[0] == 250
    assert c.smtp_cmd(f"RCPT TO:<{rcpt}>")[0] == 250
    code, text = c.smtp_cmd("DATA")
    assert code == 354, text
    return c


def plain_auth(address: str, password: str) -> str:
    return base64.b64encode(f"\0{address}\0{password}".encode()).decode()


# --------------------------------------------------------------------------
# memory


def test_ten_concurrent_40mb_bodies_are_spooled_not_held_in_ram(msgd_factory):
    """Before spooling each unauthenticated DATA pinned its whole body (ten
    40 MB bodies: ~460 MB). Bound: with the default 1 MiB spool threshold,
    msgd's RSS grows by less than 64 MB while all ten bodies are in
    flight, and one of them is still delivered whole."""
    inst = msgd_factory(users=USERS)
    baseline = rss_kib(inst)
    line = b"x" * 76 + b"\r\n"
    body = b"Subject: big\r\n\r\n" + line * (40 * MB // len(line))
    clients = [open_data(inst) for _ in range(10)]
    errors = []

    def push(c: LineClient) -> None:
        try:
            c.sock.sendall(body)
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=push, args=(c,)) for c in clients]
    peak = baseline
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_kib(inst))
        time.sleep(0.2)
    for t in threads:
        t.join()
    assert not errors, errors
    peak = max(peak, rss_kib(inst))
    print(f"\nRSS baseline {baseline} KiB, peak with ten 40 MB bodies in flight {peak} KiB")
    assert peak - baseline < 64 * 1024, f"RSS grew by {(peak - baseline) // 1024} MB"
    # Served meanwhile.
    assert_serves_another_client(inst)
    # One finishes and is delivered whole; the rest just go away.
    first, rest = clients[0], clients[1:]
    for c in rest:
        c.close()
    first.send(".\r\n")
    code, text = first.smtp_reply()
    assert code == 250, text
    first.close()
    m = inst.imap(BOB)
    try:
        typ, data = m.select("INBOX", readonly=True)
        assert typ == "OK" and int(data[0]) == 1, data
        typ, data = m.fetch("1", "(RFC822.SIZE)")
        size = int(data[0].decode().split("RFC822.SIZE ")[1].rstrip(")"))
        assert size >= len(body), (size, len(body))
    finally:
        m.logout()
    # The spool files were anonymous: nothing left behind.
    spool = inst.data_dir / "spool"
    assert list(spool.iterdir()) == []
    assert (spool.stat().st_mode & 0o777) == 0o700


def test_spent_byte_budget_answers_452_and_imap_no_limit(msgd_factory):
    """limits.max_bytes_in_flight = 2.5 MiB with a 1 MiB spool threshold:
    two bodies in flight take 2 MiB; a third MAIL gets 452 4.3.1, an IMAP
    APPEND of 1 MiB gets NO [LIMIT]; once a body is gone both work."""
    inst = start(
        msgd_factory,
        "[smtp]\nmax_message_size = 2097152\n"
        "[imap]\nmax_literal = 2097152\n"
        "[limits]\nspool_threshold = 1048576\nmax_bytes_in_flight = 2621440\n",
    )
    hogs = [open_data(inst) for _ in range(2)]
    with LineClient(inst.ports["smtp"], timeout=20) as c:
        assert c.smtp_reply()[0] == 220
        assert c.smtp_cmd("EHLO third.example")[0] == 250
        code, text = c.smtp_cmd("MAIL FROM:<x@remote.example>")
        assert (code, text[4:9]) == (452, "4.3.1"), text
        assert "Insufficient system resources" in text
        # The session goes on: NOOP is answered.
        assert c.smtp_cmd("NOOP")[0] == 250
        with imap_raw_login(inst, ALICE) as im:
            im.send(b"a1 APPEND INBOX {1048576}\r\n")
            resp = im.imap_response()
            assert resp.startswith(b"a1 NO [LIMIT]"), resp
            tag, _ = im.imap_cmd("a2", "NOOP")
            assert tag.startswith(b"a2 OK"), tag
        hogs[0].close()
        hogs[1].close()

        def mail_ok():
            code, _ = c.smtp_cmd("MAIL FROM:<x@remote.example>")
            if code == 250:
                return True
            return False

        assert wait_until(mail_ok, 10), "budget not given back after the clients left"
        assert c.smtp_cmd(f"RCPT TO:<{BOB}>")[0] == 250
        assert c.smtp_cmd("DATA")[0] == 354
        c.send("Subject: after\r\n\r\nok\r\n.\r\n")
        assert c.smtp_reply()[0] == 250
    with imap_raw_login(inst, ALICE) as im:
        payload = b"Subject: appended\r\n\r\n" + b"y" * (MB - 40) + b"\r\n"
        im.send(b"a1 APPEND INBOX {%d+}\r\n" % len(payload) + payload + b"\r\n")
        tag, _ = im.imap_until_tagged("a1")
        assert tag.startswith(b"a1 OK"), tag


# --------------------------------------------------------------------------
# time


def trickle_until_closed(c: LineClient, data: bytes, interval: float, give_up: float) -> tuple[int, str]:
    """Sends `data` one byte every `interval` seconds until the server
    answers (or `give_up` seconds pass); returns the reply."""
    c.sock.settimeout(interval)
    end = time.monotonic() + give_up
    i = 0
    while time.monotonic() < end:
        try:
            chunk = c.sock.recv(4096)
            if chunk:
                c.buf += chunk
                c.sock.settimeout(20)
                return c.smtp_reply()
            return 0, "EOF"
        except socket.timeout:
            pass
        try:
            c.sock.sendall(data[i % len(data):i % len(data) + 1])
        except OSError:
            c.sock.settimeout(20)
            return c.smtp_reply()
        i += 1
    return 0, "still connected"


def test_trickling_clients_are_dropped_at_the_whole_command_deadline(msgd_factory):
    """One byte every 0.5 s keeps every read under any per-read timeout; the
    deadlines are for the whole line (command_timeout 3 s) and the whole
    DATA transfer (data_timeout 4 s), and 2 s before EHLO."""
    inst = start(msgd_factory, "[smtp]\ncommand_timeout = 3\ndata_timeout = 4\npreauth_timeout = 2\n")
    # Pre-greeting / pre-EHLO: a silent client.
    with LineClient(inst.ports["smtp"], timeout=20) as c:
        assert c.smtp_reply()[0] == 220
        code, text = c.smtp_reply()
        assert (code, text[4:9]) == (421, "4.4.2"), text
        assert "imeout" in text
    # A command line trickled after EHLO.
    with LineClient(inst.ports["smtp"], timeout=20) as c:
        assert c.smtp_reply()[0] == 220
        assert c.smtp_cmd("EHLO slow.example")[0] == 250
        code, text = trickle_until_closed(c, b"NOOP NOOP NOOP NOOP NOOP NOOP", 0.5, 30)
        assert (code, text[4:9]) == (421, "4.4.2"), text
        assert c.readline() == b"", "connection closed after the 421"
    # A body trickled after 354.
    c = open_data(inst)
    with c:
        code, text = trickle_until_closed(c, b"slow body line ", 0.5, 30)
        assert (code, text[4:9]) == (421, "4.4.2"), text
    assert_serves_another_client(inst)


# --------------------------------------------------------------------------
# errors


def test_recipient_guessing_is_disconnected_after_hard_error_limit(server):
    """Postfix's smtpd_hard_error_limit default: the 20th rejected RCPT is
    followed by 421 4.7.0 and the connection closes."""
    with LineClient(server.ports["smtp"], timeout=20) as c:
        assert c.smtp_reply()[0] == 220
        assert c.smtp_cmd("EHLO guesser.example")[0] == 250
        assert c.smtp_cmd("MAIL FROM:<x@remote.example>")[0] == 250
        for i in range(19):
            code, text = c.smtp_cmd(f"RCPT TO:<{unique('nobody')}@{DOMAIN}>")
            assert code == 550, text
        c.send(f"RCPT TO:<{unique('nobody')}@{DOMAIN}>\r\n")
        assert c.smtp_reply()[0] == 550
        code, text = c.smtp_reply()
        assert (code, text[4:9]) == (421, "4.7.0"), text
        assert "Too many errors" in text
        assert c.readline() == b""
    assert_serves_another_client(server)


# --------------------------------------------------------------------------
# submission


def submission_session(inst: Msgd) -> LineClient:
    c = LineClient(inst.ports["submission"], timeout=20)
    assert c.smtp_reply()[0] == 220
    assert c.smtp_cmd("EHLO laptop.example")[0] == 250
    code, text = c.smtp_cmd(f"AUTH PLAIN {plain_auth(ALICE, inst.passwords[ALICE])}")
    assert code == 235, text
    return c


def submit_raw(c: LineClient, message: str) -> tuple[int, str]:
    assert c.smtp_cmd(f"MAIL FROM:<{ALICE}>")[0] == 250
    assert c.smtp_cmd(f"RCPT TO:<{BOB}>")[0] == 250
    assert c.smtp_cmd("DATA")[0] == 354
    c.send(message.replace("\n", "\r\n") + ".\r\n")
    return c.smtp_reply()


def test_submission_sender_checks_cannot_be_dodged(server):
    with submission_session(server) as c:
        for msg in (
            f"From: {ALICE}\nFrom: ceo@{DOMAIN}\nSubject: two From fields\n\nx\n",
            f"From: {ALICE}\nSender: {ALICE}\nsender : ceo@{DOMAIN}\n\nx\n",
        ):
            code, text = submit_raw(c, msg)
            assert (code, text[4:9]) == (550, "5.6.0"), (msg, text)
        for msg in (
            f"From: {ALICE}, ceo@{DOMAIN}\nSubject: second address\n\nx\n",
            f"From: board: {ALICE}, ceo@{DOMAIN};\nSubject: group\n\nx\n",
            f"From: {ALICE}\nSender: ceo@{DOMAIN}\n\nx\n",
        ):
            code, text = submit_raw(c, msg)
            assert (code, text[4:9]) == (553, "5.7.1"), (msg, text)
        code, text = submit_raw(c, f"From: Alice <{ALICE}>\nSubject: fine\n\nx\n")
        assert code == 250, text
    assert_serves_another_client(server)


# --------------------------------------------------------------------------
# trust


def test_relay_password_without_verified_tls_stops_msgd(tmp_path):
    for tls, verify in (("opportunistic", "true"), ("require", "false"), ("none", "true")):
        inst = Msgd(tmp_path / f"{tls}-{verify}")
        inst.config_path.write_text(
            inst.config_text()
            + f'\n[mta]\nrelay = "smtp.example.net:587"\nrelay_user = "me"\nrelay_tls = "{tls}"\n'
            + f"relay_tls_verify = {verify}\n"
        )
        res = inst.cli("check-config")
        assert res.returncode == 2, (tls, verify, res.stdout, res.stderr)
        assert "mta.relay_user" in res.stdout + res.stderr
        res = subprocess.run([msgd_bin(), "--config", str(inst.config_path)], capture_output=True,
                             text=True, timeout=30, cwd=inst.root, env=msgd_env())
        assert res.returncode == 2, (tls, verify, res.returncode)
        assert "mta.relay_user" in res.stdout + res.stderr
    # Verified TLS (or a loopback relay) is accepted.
    for relay, tls in (("smtp.example.net:587", "require"), ("127.0.0.1:2525", "opportunistic")):
        inst = Msgd(tmp_path / f"ok-{tls}")
        inst.config_path.write_text(
            inst.config_text()
            + f'\n[mta]\nrelay = "{relay}"\nrelay_user = "me"\nrelay_tls = "{tls}"\n'
        )
        res = inst.cli("check-config")
        assert res.returncode == 0, (relay, res.stdout, res.stderr)


def test_dsn_for_our_own_failure_carries_no_internal_error_text(msgd_factory):
    """The smarthost is a closed loopback port and messages expire at once:
    the bounce to the (local) sender says "cannot connect", not the io
    error or the relay's address."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    inst = start(
        msgd_factory,
        f'[mta]\nrelay = "127.0.0.1:{port}"\ndelivery_timeout = 5\n'
        "[queue]\nretry_base = 1\nretry_max = 1\nlifetime = 1\n",
    )
    with submission_session(inst) as c:
        assert c.smtp_cmd(f"MAIL FROM:<{ALICE}>")[0] == 250
        assert c.smtp_cmd("RCPT TO:<someone@elsewhere.example>")[0] == 250
        assert c.smtp_cmd("DATA")[0] == 354
        c.send(f"From: {ALICE}\r\nSubject: to nowhere\r\n\r\nhi\r\n.\r\n")
        assert c.smtp_reply()[0] == 250
    inst.wait_count(ALICE, 1, timeout=30)
    m = inst.imap(ALICE)
    try:
        m.select("INBOX", readonly=True)
        typ, data = m.fetch("1", "(BODY.PEEK[])")
        dsn = data[0][1].decode("utf-8", "replace")
    finally:
        m.logout()
    assert "Diagnostic-Code: smtp; 451 4.4.1 cannot connect" in dsn, dsn
    for leak in ("os error", "Connection refused", f"127.0.0.1:{port}", str(inst.data_dir)):
        assert leak not in dsn, (leak, dsn)
    assert "Connection refused" in inst.log() or "cannot connect" in inst.log()
