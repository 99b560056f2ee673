"""The mta-out role end to end: authenticated submission on 587 (STARTTLS)
and 465 (implicit TLS), the durable queue, delivery to the local store and
to a pretend Internet by MX.

Real components: the msgd binary (all-in-one), dnsmasq as the DNS server
of the pretend Internet (on a loopback port; `[dns] nameservers` points
msgd at it), and a small SMTP server written here as the Internet's MTA
(on 127.0.0.1, the port msgd's `[mta] smtp_port` names). Every address
used is on loopback.

Pretend domains served by dnsmasq:
  internet.test  MX 10 mx.internet.test -> 127.0.0.1 (the fake MTA)
  backup.test    MX 10 dead.backup.test -> 127.0.0.2 (nothing listens)
                 MX 20 mx.backup.test   -> 127.0.0.1
  nomx.test      no MX, A 127.0.0.1 (the implicit MX)
  nullmx.test    MX 0 "." (RFC 7505)
  down.test      MX 10 mx.down.test -> 127.0.0.3 (nothing listens)
  sink.test      MX 10 mx.sink.test -> 127.0.0.5 (Postfix's smtp-sink)
  anything else under .test: NXDOMAIN
"""

from __future__ import annotations

import email
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import (
    DOMAIN,
    MsgdFactory,
    _imap_logout,
    free_ports,
    unique,
    wait_for_ports,
    wait_until,
)

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
USERS = (ALICE, BOB)


# --------------------------------------------------------------------------
# the pretend Internet: DNS and an MTA


def _dnsmasq_bin() -> str:
    for p in ("/usr/sbin/dnsmasq", shutil.which("dnsmasq") or ""):
        if p and Path(p).exists():
            return p
    pytest.fail("dnsmasq not found: install it with scripts/install-test-deps.sh "
                "(apt-get install -y dnsmasq-base)", pytrace=False)


class Dns:
    """dnsmasq on 127.0.0.1:<port>, answering only for the pretend zone."""

    def __init__(self, root: Path):
        self.port = free_ports(1)[0]
        self.log_path = root / "dnsmasq.log"
        args = [
            _dnsmasq_bin(), "--keep-in-foreground", "--conf-file=/dev/null", f"--port={self.port}",
            "--no-resolv", "--no-hosts", "--listen-address=127.0.0.1", "--bind-interfaces",
            "--local=/test/", "--pid-file=", "--log-facility=-", "--user=root", "--group=root",
            "--mx-host=internet.test,mx.internet.test,10", "--host-record=mx.internet.test,127.0.0.1",
            "--mx-host=backup.test,dead.backup.test,10", "--host-record=dead.backup.test,127.0.0.2",
            "--mx-host=backup.test,mx.backup.test,20", "--host-record=mx.backup.test,127.0.0.1",
            "--host-record=nomx.test,127.0.0.1",
            "--mx-host=nullmx.test,.,0",
            "--mx-host=down.test,mx.down.test,10", "--host-record=mx.down.test,127.0.0.3",
            "--mx-host=sink.test,mx.sink.test,10", "--host-record=mx.sink.test,127.0.0.5",
        ]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for_ports(self.proc, [self.port], 10, lambda: self.log_path.read_text(errors="replace"), "dnsmasq")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def self_signed_ctx(root: Path) -> ssl.SSLContext:
    """A server context with a self-signed mx.internet.test certificate
    (made once per folder)."""
    cert, key = root / "mta-cert.pem", root / "mta-key.pem"
    if not cert.exists():
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=mx.internet.test", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


class FakeMta:
    """A small SMTP server standing in for the Internet's MTAs.

    Recipients decide its behaviour: `greylist*` gets 451 at RCPT on the
    first attempt of each message and 250 afterwards, `reject*` gets 550.
    It offers STARTTLS with `ctx` (none without) and records every
    accepted message with the envelope, the body and whether TLS was on.
    """

    def __init__(self, port: int, ctx: ssl.SSLContext | None, ip: str = "127.0.0.1"):
        self.port = port
        self.messages: list[dict] = []
        self.greylisted: set[str] = set()
        self.lock = threading.Lock()
        self.ctx = ctx
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, port))
        self.sock.listen(16)
        self.stopped = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopped = True
        try:
            self.sock.close()
        except OSError:
            pass

    def for_rcpt(self, rcpt: str) -> list[dict]:
        with self.lock:
            return [m for m in self.messages if rcpt in m["rcpts"]]

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket):
        conn.settimeout(30)
        f = conn.makefile("rb")
        tls = False

        def send(line: str):
            conn.sendall((line + "\r\n").encode())

        try:
            send("220 mx.internet.test ESMTP fake")
            mail_from, rcpts = None, []
            while True:
                raw = f.readline()
                if not raw:
                    return
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                verb = line[:4].upper()
                if verb == "EHLO":
                    caps = ["mx.internet.test", "PIPELINING", "8BITMIME", "SIZE 10000000", "SMTPUTF8"]
                    if self.ctx and not tls:
                        caps.append("STARTTLS")
                    for c in caps[:-1]:
                        send("250-" + c)
                    send("250 " + caps[-1])
                elif line.upper() == "STARTTLS" and self.ctx and not tls:
                    send("220 2.0.0 go ahead")
                    f.close()
                    conn = self.ctx.wrap_socket(conn, server_side=True)
                    f = conn.makefile("rb")
                    tls = True
                    mail_from, rcpts = None, []
                elif verb == "MAIL":
                    mail_from = re.search(r"<([^>]*)>", line).group(1)
                    rcpts = []
                    send("250 2.1.0 ok")
                elif verb == "RCPT":
                    rcpt = re.search(r"<([^>]*)>", line).group(1)
                    local = rcpt.split("@")[0]
                    key = f"{mail_from}|{rcpt}"
                    if local.startswith("reject"):
                        send("550 5.1.1 no such user here")
                    elif local.startswith("greylist") and key not in self.greylisted:
                        with self.lock:
                            self.greylisted.add(key)
                        send("451 4.7.1 greylisted, try again later")
                    else:
                        rcpts.append(rcpt)
                        send("250 2.1.5 ok")
                elif verb == "DATA":
                    if not rcpts:
                        send("554 5.5.1 no valid recipients")
                        continue
                    send("354 go ahead")
                    body = []
                    while True:
                        l = f.readline()
                        if not l or l == b".\r\n":
                            break
                        body.append(l[1:] if l.startswith(b".") else l)
                    with self.lock:
                        self.messages.append({"from": mail_from, "rcpts": list(rcpts),
                                              "data": b"".join(body), "tls": tls})
                    send("250 2.0.0 queued")
                    mail_from, rcpts = None, []
                elif verb == "RSET":
                    mail_from, rcpts = None, []
                    send("250 2.0.0 ok")
                elif verb == "NOOP":
                    send("250 2.0.0 ok")
                elif verb == "QUIT":
                    send("221 2.0.0 bye")
                    return
                else:
                    send("502 5.5.1 unknown command")
        except (OSError, ssl.SSLError, AttributeError):
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass


# --------------------------------------------------------------------------
# fixtures


def mta_out_config(dns: Dns, smtp_port: int, extra: str = "") -> str:
    return (
        f"\n[mta]\nsmtp_port = {smtp_port}\ndelivery_timeout = 20\n"
        "\n[queue]\nretry_base = 1\nretry_max = 2\n"
        + extra
    )


def start_msgd(factory: MsgdFactory, dns: Dns, smtp_port: int, extra: str = "", queue_extra: str = ""):
    inst = factory(users=USERS, start=False)
    inst.dns_nameserver = f"127.0.0.1:{dns.port}"
    text = inst.config_text() + mta_out_config(dns, smtp_port, queue_extra) + extra
    inst.config_path.write_text(text)
    inst.start()
    wait_for_ports(inst.proc, [inst.ports["submission"], inst.ports["submissions"]], 10, inst.log)
    return inst


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("mta_out_world")
    dns = Dns(root)
    port = free_ports(1)[0]
    mta = FakeMta(port, self_signed_ctx(root))
    factory = MsgdFactory(tmp_path_factory, "mta_out")
    server = start_msgd(factory, dns, port)
    yield {"dns": dns, "mta": mta, "server": server, "root": root}
    factory.cleanup()
    mta.stop()
    dns.stop()


def client_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def submit(inst, rcpts, data: bytes, sender: str = ALICE, implicit: bool = False, login: str | None = None,
           rcpt_options=(), mail_options=()):
    """Submits over 465 (implicit) or 587 + STARTTLS with AUTH; returns the
    refused dict of smtplib.sendmail."""
    login = login or sender
    if implicit:
        s = smtplib.SMTP_SSL("127.0.0.1", inst.ports["submissions"], context=client_ctx(), timeout=30)
    else:
        s = smtplib.SMTP("127.0.0.1", inst.ports["submission"], timeout=30)
        s.ehlo("laptop.example")
        s.starttls(context=client_ctx())
    with s:
        s.ehlo("laptop.example")
        s.login(login, inst.passwords[login])
        return s.sendmail(sender, rcpts, data, mail_options=list(mail_options), rcpt_options=list(rcpt_options))


def message(to: str, subject: str, sender: str = ALICE, headers: bool = True) -> bytes:
    lines = [f"From: Alice <{sender}>", f"To: <{to}>", f"Subject: {subject}"]
    if headers:
        lines += [f"Message-ID: <{unique('m')}@laptop.example>", "Date: Mon, 1 Jan 2024 00:00:00 +0000"]
    return ("\r\n".join(lines) + "\r\n\r\nHello from the test.\r\n.leading dot line\r\n").encode()


def inbox_messages(inst, address: str) -> list[bytes]:
    m = inst.imap(address)
    try:
        typ, data = m.select("INBOX", readonly=True)
        assert typ == "OK", data
        n = int(data[0])
        out = []
        for i in range(1, n + 1):
            typ, d = m.fetch(str(i), "(BODY.PEEK[])")
            assert typ == "OK", d
            out.append(d[0][1])
        return out
    finally:
        _imap_logout(m)


def wait_inbox(inst, address: str, predicate, timeout: float = 30) -> bytes:
    found = wait_until(lambda: next((m for m in inbox_messages(inst, address) if predicate(m)), None), timeout, 0.5)
    assert found, f"{address}: no matching message after {timeout:.0f}s; INBOX: " \
                  f"{[m[:300] for m in inbox_messages(inst, address)]}\n--- msgd log ---\n{inst.log(6000)}"
    return found


# --------------------------------------------------------------------------
# submission


def test_submission_starttls_auth_delivers_to_local_store(world):
    inst = world["server"]
    subject = unique("local")
    refused = submit(inst, [BOB], message(BOB, subject, headers=False))
    assert refused == {}
    raw = wait_inbox(inst, BOB, lambda m: subject.encode() in m)
    msg = email.message_from_bytes(raw)
    assert msg["Message-ID"], "submission adds a Message-ID when missing (RFC 6409 8.3)"
    assert msg["Date"], "submission adds a Date when missing (RFC 6409 8.2)"
    assert msg["Return-Path"] == f"<{ALICE}>", raw[:400]
    received = msg.get_all("Received")
    assert any("ESMTPSA" in r for r in received), received
    assert not any("127.0.0.1" in r for r in received), f"client address must not show: {received}"
    assert b".leading dot line" in raw


def test_submissions_implicit_tls_relays_by_mx_with_starttls(world):
    inst, mta = world["server"], world["mta"]
    rcpt = f"{unique('far')}@internet.test"
    subject = unique("remote")
    assert submit(inst, [rcpt], message(rcpt, subject), implicit=True) == {}
    got = wait_until(lambda: mta.for_rcpt(rcpt), 30, 0.3)
    assert got, f"nothing arrived at the Internet MTA\n{inst.log(6000)}"
    time.sleep(1.5)
    got = mta.for_rcpt(rcpt)
    assert len(got) == 1, got
    assert got[0]["from"] == ALICE
    assert got[0]["tls"], "STARTTLS is used whenever offered"
    assert subject.encode() in got[0]["data"]
    assert b"\r\n.leading dot line\r\n" in got[0]["data"], "dot-stuffing round trip"
    assert not re.search(rb"(?im)^return-path:", got[0]["data"]), "no Return-Path when relaying"


def test_auth_login_and_one_transaction_per_domain(world):
    inst, mta = world["server"], world["mta"]
    r1, r2 = f"{unique('a')}@internet.test", f"{unique('b')}@internet.test"
    with smtplib.SMTP("127.0.0.1", inst.ports["submission"], timeout=30) as s:
        s.ehlo("laptop")
        s.starttls(context=client_ctx())
        s.ehlo("laptop")
        assert "PLAIN" in s.esmtp_features["auth"] and "LOGIN" in s.esmtp_features["auth"]
        s.user, s.password = ALICE, inst.passwords[ALICE]
        code, _ = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        assert code == 235
        assert s.sendmail(ALICE, [r1, r2], message(r1, unique("two"))) == {}
    got = wait_until(lambda: mta.for_rcpt(r1), 30, 0.3)
    assert got and sorted(got[0]["rcpts"]) == sorted([r1, r2]), f"one transaction for both: {got}"


def test_next_mx_when_the_first_is_down(world):
    inst, mta = world["server"], world["mta"]
    rcpt = f"{unique('b')}@backup.test"
    assert submit(inst, [rcpt], message(rcpt, unique("backup"))) == {}
    assert wait_until(lambda: mta.for_rcpt(rcpt), 30, 0.3), inst.log(6000)


def test_domain_without_mx_uses_its_address(world):
    inst, mta = world["server"], world["mta"]
    rcpt = f"{unique('n')}@nomx.test"
    assert submit(inst, [rcpt], message(rcpt, unique("nomx"))) == {}
    assert wait_until(lambda: mta.for_rcpt(rcpt), 30, 0.3), inst.log(6000)


def test_remote_4xx_then_accept_is_delivered_once(world):
    inst, mta = world["server"], world["mta"]
    rcpt = f"greylist{unique('')}@internet.test"
    assert submit(inst, [rcpt], message(rcpt, unique("grey"))) == {}
    assert wait_until(lambda: mta.for_rcpt(rcpt), 40, 0.3), inst.log(6000)
    time.sleep(3)
    assert len(mta.for_rcpt(rcpt)) == 1, "delivered exactly once"
    assert f"{ALICE}|{rcpt}" in mta.greylisted, "the first attempt was refused with 451"


def test_remote_5xx_bounces_to_the_senders_inbox(world):
    inst = world["server"]
    rcpt = f"reject{unique('')}@internet.test"
    assert submit(inst, [rcpt], message(rcpt, unique("bounce"))) == {}
    dsn = wait_inbox(inst, ALICE, lambda m: rcpt.encode() in m and b"Action: failed" in m)
    assert b"Status: 5.1.1" in dsn
    assert b"multipart/report" in dsn


@pytest.mark.parametrize("domain,status", [("nullmx.test", b"5.1.10"), (f"nxdomain.test", b"5.1.2")])
def test_null_mx_and_nxdomain_bounce_at_once(world, domain, status):
    inst = world["server"]
    rcpt = f"{unique('x')}@{domain}"
    assert submit(inst, [rcpt], message(rcpt, unique("nomail"))) == {}
    dsn = wait_inbox(inst, ALICE, lambda m: rcpt.encode() in m and b"Action: failed" in m, timeout=20)
    assert b"Status: " + status in dsn, dsn[:2000]


def test_notify_success_gives_a_delivered_report(world):
    inst = world["server"]
    subject = unique("notify")
    assert submit(inst, [BOB], message(BOB, subject), rcpt_options=["NOTIFY=SUCCESS,FAILURE"],
                  mail_options=["ENVID=" + subject]) == {}
    report = wait_inbox(inst, ALICE, lambda m: b"Action: delivered" in m and subject.encode() in m)
    assert b"Status: 2.0.0" in report and f"Final-Recipient: rfc822; {BOB}".encode() in report


# --------------------------------------------------------------------------
# refusals


def test_relaying_without_auth_is_refused_530(world):
    inst = world["server"]
    with smtplib.SMTP("127.0.0.1", inst.ports["submission"], timeout=30) as s:
        s.ehlo("laptop")
        code, msg = s.mail(ALICE)
        assert code == 530 and b"5.7.0" in msg, (code, msg)
        code, msg = s.rcpt("someone@internet.test")
        assert code >= 500, (code, msg)


def test_sending_as_someone_else_is_refused_553(world):
    inst = world["server"]
    with smtplib.SMTP_SSL("127.0.0.1", inst.ports["submissions"], context=client_ctx(), timeout=30) as s:
        s.ehlo("laptop")
        s.login(ALICE, inst.passwords[ALICE])
        code, msg = s.mail(BOB)
        assert code == 553 and b"5.7.1" in msg, (code, msg)
        # The envelope is hers but the From: header is not (check_from_header).
        s.rset()
        assert s.mail(ALICE)[0] == 250
        assert s.rcpt(BOB)[0] == 250
        code, msg = s.data(message(BOB, "forged", sender=BOB))
        assert code == 553 and b"5.7.1" in msg, (code, msg)


def test_wrong_password_is_535_after_a_delay(world):
    inst = world["server"]
    with smtplib.SMTP_SSL("127.0.0.1", inst.ports["submissions"], context=client_ctx(), timeout=30) as s:
        s.ehlo("laptop")
        t0 = time.monotonic()
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.login(BOB, "not-the-password")
        assert e.value.smtp_code == 535 and b"5.7.8" in e.value.smtp_error
        assert time.monotonic() - t0 >= 0.9, "failures are answered after a delay"


# --------------------------------------------------------------------------
# the queue: operator commands, expiry, restart


def queue_ids(inst) -> list[str]:
    res = inst.cli("queue", "list")
    assert res.returncode == 0, res.stderr
    return re.findall(r"(?m)^([0-9A-F]{21,})\b", res.stdout)


def test_queue_cli_hold_release_delete_while_running(world):
    inst = world["server"]
    rcpt = f"{unique('w')}@down.test"
    assert submit(inst, [rcpt], message(rcpt, unique("held"))) == {}
    def find():
        res = inst.cli("queue", "list")
        m = re.search(r"(?m)^([0-9A-F]{21,})\b[^\n]*\n(?:    [^\n]*\n)*?    " + re.escape(rcpt), res.stdout)
        return m.group(1) if m else None
    qid = wait_until(find, 15, 0.3)
    assert qid, inst.cli("queue", "list").stdout
    show = inst.cli("queue", "show", qid)
    assert show.returncode == 0 and rcpt in show.stdout and "Subject:" in show.stdout, show.stdout
    res = inst.cli("queue", "hold", qid)
    assert res.returncode == 0 and "held" in res.stdout, (res.stdout, res.stderr)
    assert f"{qid} (held)" in inst.cli("queue", "list").stdout
    res = inst.cli("queue", "release", qid)
    assert res.returncode == 0 and "released" in res.stdout, (res.stdout, res.stderr)
    assert inst.cli("queue", "retry", qid).returncode == 0
    assert inst.cli("queue", "flush").returncode == 0
    res = inst.cli("queue", "delete", qid)
    assert res.returncode == 0 and "deleted" in res.stdout, (res.stdout, res.stderr)
    assert qid not in queue_ids(inst)
    res = inst.cli("queue", "hold", qid)
    assert res.returncode != 0 and "no such message" in (res.stdout + res.stderr)


def test_remote_down_past_lifetime_bounces(world, msgd_factory):
    inst = start_msgd(msgd_factory, world["dns"], world["mta"].port,
                      queue_extra="lifetime = 3\n")
    rcpt = f"{unique('gone')}@down.test"
    assert submit(inst, [rcpt], message(rcpt, unique("expire"))) == {}
    dsn = wait_inbox(inst, ALICE, lambda m: rcpt.encode() in m and b"Action: failed" in m, timeout=40)
    assert b"Status: 4." in dsn or b"Status: 5." in dsn
    assert b"gave up" in dsn


def test_restart_mid_queue_delivers_once(world, msgd_factory, tmp_path):
    port = free_ports(1)[0]  # no MTA listens here yet
    inst = start_msgd(msgd_factory, world["dns"], port)
    rcpt = f"{unique('r')}@internet.test"
    assert submit(inst, [rcpt], message(rcpt, unique("restart"))) == {}
    time.sleep(2)  # at least one failed attempt (connection refused)
    inst.stop()
    ids = queue_ids(inst)
    assert len(ids) == 1, inst.cli("queue", "list").stdout
    mta = FakeMta(port, self_signed_ctx(tmp_path))
    try:
        inst.start()
        assert wait_until(lambda: mta.for_rcpt(rcpt), 30, 0.3), inst.log(6000)
        time.sleep(3)
        assert len(mta.for_rcpt(rcpt)) == 1, "delivered exactly once"
        assert wait_until(lambda: queue_ids(inst) == [], 10, 0.3), inst.cli("queue", "list").stdout
    finally:
        mta.stop()


def test_remote_mail_reaches_postfix_smtp_sink_by_mx(world, tmp_path):
    """A peer we did not write: Postfix's smtp-sink as the Internet MTA of
    sink.test (MX -> 127.0.0.5 on the MX port), dumping each message."""
    sink_bin = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not Path(sink_bin).exists():
        pytest.fail("smtp-sink not found: install postfix with scripts/install-test-deps.sh", pytrace=False)
    inst, mta = world["server"], world["mta"]
    dump = tmp_path / "sink"
    dump.mkdir()
    port = mta.port
    sink = subprocess.Popen(
        [sink_bin, "-u", "root", "-d", f"{dump}/msg.", "-h", "mx.sink.test", f"127.0.0.5:{port}", "16"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.5", port), 1).close()
                break
            except OSError:
                assert time.time() < deadline and sink.poll() is None, "smtp-sink did not start"
                time.sleep(0.1)
        rcpt = f"{unique('far')}@sink.test"
        subject = unique("sink")
        assert submit(inst, [rcpt], message(rcpt, subject)) == {}
        got = wait_until(lambda: [p for p in dump.iterdir() if subject.encode() in p.read_bytes()], 30, 0.3)
        assert got, f"nothing arrived at smtp-sink\n{inst.log(6000)}"
        time.sleep(1)
        files = [p for p in dump.iterdir() if subject.encode() in p.read_bytes()]
        assert len(files) == 1, files
        data = files[0].read_bytes()
        assert f"<{ALICE}>".encode() in data or ALICE.encode() in data
        assert b"\r\n.leading dot line\r\n" in data or b"\n.leading dot line\n" in data
    finally:
        sink.terminate()
        try:
            sink.wait(5)
        except subprocess.TimeoutExpired:
            sink.kill()
            sink.wait()
