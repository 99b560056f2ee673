"""Shared fixtures and helpers for the msgd integration tests.

Every test talks to the real `msgd` binary ($MSGD_BIN, default
target/debug/msgd) with real clients: smtplib, imaplib, poplib, swaks, and a
few raw sockets where the standard library has no client (BDAT, IDLE,
malformed input).

A `Msgd` is one server instance: a temporary directory holding `msgd.toml`,
the data dir and the captured stdout/stderr, with free loopback ports for
every listener. The module-scoped `server` fixture starts one per test module
with the users that module lists in `USERS` (and `INACTIVE_USERS`); tests
that restart or reconfigure a server use `msgd_factory`.
"""

from __future__ import annotations

import base64
import email.utils
import imaplib
import os
import poplib
import random
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "example.test"
HOSTNAME = "mail.example.test"
LISTENERS = ("smtp", "submission", "submissions", "lmtp", "imap", "imaps", "pop3", "pop3s", "http")
LOG_LEVEL = os.environ.get("MSGD_TEST_LOG_LEVEL", "info")
INSTALL_HINT = "install it with scripts/install-test-deps.sh (or: apt-get install -y swaks)"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
DELIVERY_TIMEOUT = 15.0
TEST_TIMEOUT = 180  # hard cap per test body, so a hung socket never hangs CI
CLIENT_HELO = "client.example"
REMOTE_SENDER = "sender@remote.example"


# --------------------------------------------------------------------------
# binary, environment, ports


def msgd_bin() -> str:
    path = os.environ.get("MSGD_BIN") or str(REPO_ROOT / "target" / "debug" / "msgd")
    path = os.path.abspath(path)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(
            f"msgd binary not found at {path}: build it with `cargo build` or set MSGD_BIN",
            pytrace=False,
        )
    return path


def msgd_env() -> dict:
    """The environment for msgd: ours without MSGD_* (figment would read
    MSGD_BIN as the unknown config key `bin`)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MSGD_")}


def _listen_port_range() -> tuple[int, int]:
    """Ports for test listeners: below the kernel's ephemeral range, so an
    outgoing connection of a server being started (to slapd, a store, DNS)
    cannot take a port between the pick and the server's bind."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return (20000, low) if low > 21000 else (0, 0)


# Ports this test process has handed out lately: a port picked for one
# server is free until that server binds it, so a second pick in the same
# test (another server, a console port chosen first and bound later) must
# not get it again.
_RECENT_PORTS: dict[int, None] = {}
_RECENT_LIMIT = 4000


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (all held open while picking), taken
    outside the ephemeral range where there is room for them, and never one
    handed out lately by this process."""
    lo, hi = _listen_port_range()
    socks = []
    try:
        tries = 0
        while len(socks) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            port = random.randrange(lo, hi) if hi and tries < 50 * n else 0
            tries += 1
            if port and port in _RECENT_PORTS:
                s.close()
                continue
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        ports = [s.getsockname()[1] for s in socks]
        for p in ports:
            _RECENT_PORTS[p] = None
        while len(_RECENT_PORTS) > _RECENT_LIMIT:
            del _RECENT_PORTS[next(iter(_RECENT_PORTS))]
        return ports
    finally:
        for s in socks:
            s.close()


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def password_for(address: str) -> str:
    local = address.split("@", 1)[0]
    return f"pw-{local}-Xk93q"


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def wait_until(predicate, timeout: float, interval: float = 0.2):
    """Calls predicate until it returns a truthy value; returns it, or the
    last (falsy) value after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def wait_for_ports(proc: subprocess.Popen, ports, timeout: float, log, what: str = "msgd") -> None:
    """Waits until every port accepts a connection; fails (killing `proc`)
    with msgd's stderr if it exits first or the timeout passes."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while not port_accepts(port):
            rc = proc.poll()
            if rc is not None:
                pytest.fail(f"{what} exited with status {rc} before port {port} accepted connections\n"
                            f"--- msgd stderr ---\n{log()}", pytrace=False)
            if time.monotonic() >= deadline:
                proc.kill()
                proc.wait()
                pytest.fail(f"{what} did not accept connections on port {port} within {timeout:.0f}s\n"
                            f"--- msgd stderr ---\n{log()}", pytrace=False)
            time.sleep(0.1)


# --------------------------------------------------------------------------
# one msgd instance


class Msgd:
    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.data_dir = root / "data"
        self.config_path = root / "msgd.toml"
        self.stderr_path = root / "msgd.stderr.log"
        self.stdout_path = root / "msgd.stdout.log"
        ports = free_ports(len(LISTENERS) + 1)
        self.ports = dict(zip(LISTENERS, ports))
        # The admin listener (/metrics, /health), one per process.
        self.admin_port = ports[-1]
        self.passwords: dict[str, str] = {}
        self.dns_nameserver = "127.0.0.1:9"
        self.proc: subprocess.Popen | None = None
        self.config_path.write_text(self.config_text())

    # -- config and CLI

    def config_text(self) -> str:
        lines = [
            "[server]",
            f'hostname = "{HOSTNAME}"',
            f'data_dir = "{self.data_dir}"',
            f'domain = "{DOMAIN}"',
            "",
            "[log]",
            f'level = "{LOG_LEVEL}"',
            'format = "text"',
            "",
        ]
        for name in LISTENERS:
            lines += [f"[listener.{name}]", f'bind = ["127.0.0.1:{self.ports[name]}"]', "enabled = true", ""]
        # MX lookups (bounces to remote senders, forwards) never leave this
        # machine: by default they go to a loopback port where nothing
        # answers; tests with a DNS server of their own set dns_nameserver.
        lines += ["[dns]", f'nameservers = ["{self.dns_nameserver}"]', "timeout = 2", ""]
        lines += ["[admin]", f'bind = ["127.0.0.1:{self.admin_port}"]', ""]
        return "\n".join(lines)

    def cli(self, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        """Runs `msgd --config <ours> ARGS...`; returns the completed process
        (text output)."""
        return subprocess.run(
            [msgd_bin(), "--config", str(self.config_path), *args],
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            cwd=self.root,
            env=msgd_env(),
        )

    def add_user(self, address: str, password: str | None = None, inactive: bool = False) -> str:
        """`msgd user add ADDRESS` with the password on stdin."""
        password = password or password_for(address)
        args = ["user", "add", address] + (["--inactive"] if inactive else [])
        res = self.cli(*args, input=password + "\n")
        assert res.returncode == 0, (
            f"`msgd user add {address}` exited {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"
        )
        self.passwords[address] = password
        return password

    # -- process

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        assert not self.running, "msgd already running"
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [msgd_bin(), "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.root,
                env=msgd_env(),
            )
        wait_for_ports(self.proc, [self.ports["imap"], self.ports["smtp"]], timeout, self.log,
                       f"msgd ({self.config_path})")

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then asserts msgd exits with status 0 within `timeout`."""
        if self.proc is None:
            return 0
        proc = self.proc
        self.proc = None
        rc = proc.poll()
        if rc is not None:
            pytest.fail(
                f"msgd had already exited (status {rc}) before SIGTERM\n--- msgd stderr ---\n{self.log()}",
                pytrace=False,
            )
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(
                f"msgd did not exit within {timeout:.0f}s of SIGTERM\n--- msgd stderr ---\n{self.log()}",
                pytrace=False,
            )
        if rc != 0:
            pytest.fail(f"msgd exited with status {rc} after SIGTERM (want 0)\n--- msgd stderr ---\n{self.log()}",
                        pytrace=False)
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log(self, tail: int = 20000) -> str:
        try:
            text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no stderr log)"
        return text[-tail:] if len(text) > tail else text

    def stdout(self) -> str:
        try:
            return self.stdout_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    # -- TLS

    @property
    def cert_path(self) -> Path:
        return self.data_dir / "tls" / "cert.pem"

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts msgd's generated
        self-signed certificate (hostname checking stays on: the certificate
        names 127.0.0.1)."""
        assert self.cert_path.is_file(), f"msgd did not generate {self.cert_path}"
        ctx = ssl.create_default_context(cafile=str(self.cert_path))
        # a self-signed end-entity certificate is its own trust anchor
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        return ctx

    # -- clients bound to this instance

    def smtp(self, listener: str = "smtp", timeout: float = 20) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.ports[listener], local_hostname=CLIENT_HELO, timeout=timeout)

    def imap(self, address: str | None = None, timeout: float = 20) -> imaplib.IMAP4:
        m = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=timeout)
        if address is not None:
            m.login(address, self.passwords[address])
        return m

    def pop3(self, address: str | None = None, timeout: float = 20) -> poplib.POP3:
        p = poplib.POP3("127.0.0.1", self.ports["pop3"], timeout=timeout)
        if address is not None:
            p.user(address)
            p.pass_(self.passwords[address])
        return p

    def send(self, rcpts, data: bytes, sender: str = REMOTE_SENDER, listener: str = "smtp",
             mail_options=("BODY=8BITMIME",)) -> None:
        """Sends one message with smtplib and asserts every recipient was accepted."""
        if isinstance(rcpts, str):
            rcpts = [rcpts]
        with self.smtp(listener) as s:
            s.ehlo()
            refused = s.sendmail(sender, list(rcpts), data, mail_options=list(mail_options))
        assert refused == {}, f"recipients refused: {refused}"

    def wait_count(self, address: str, count: int, mailbox: str = "INBOX",
                   timeout: float = DELIVERY_TIMEOUT) -> int:
        """Polls (EXAMINE) until `mailbox` of `address` holds at least
        `count` messages; fails otherwise. Returns the count seen."""
        m = self.imap(address)
        try:
            seen = -1
            deadline = time.monotonic() + timeout
            while True:
                typ, data = m.select(mailbox, readonly=True)
                assert typ == "OK", f"EXAMINE {mailbox} failed: {data}"
                seen = int(data[0])
                if seen >= count or time.monotonic() >= deadline:
                    break
                time.sleep(0.2)
            assert seen >= count, (
                f"{address}: {mailbox} holds {seen} messages after {timeout:.0f}s, expected {count}"
            )
            return seen
        finally:
            _imap_logout(m)


    def wait_count_pop3(self, address: str, count: int, timeout: float = DELIVERY_TIMEOUT) -> int:
        """Like wait_count, but polls the POP3 maildrop (STAT) of `address`."""
        seen = -1
        deadline = time.monotonic() + timeout
        while True:
            p = self.pop3(address)
            try:
                seen = p.stat()[0]
            finally:
                p.quit()
            if seen >= count or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        assert seen >= count, f"{address}: POP3 maildrop holds {seen} messages after {timeout:.0f}s, expected {count}"
        return seen


def _imap_logout(m: imaplib.IMAP4) -> None:
    try:
        m.logout()
    except Exception:
        try:
            m.shutdown()
        except Exception:
            pass


class MsgdFactory:
    def __init__(self, tmp_path_factory, name: str):
        self.tmp_path_factory = tmp_path_factory
        self.name = name
        self.instances: list[Msgd] = []

    def __call__(self, users=(), inactive=(), start: bool = True) -> Msgd:
        root = self.tmp_path_factory.mktemp(self.name)
        inst = Msgd(root)
        self.instances.append(inst)
        for address in users:
            inst.add_user(address)
        for address in inactive:
            inst.add_user(address, inactive=True)
        if start:
            inst.start()
        return inst

    def cleanup(self) -> None:
        errors = []
        for inst in self.instances:
            if inst.running:
                try:
                    inst.stop()
                except BaseException as e:  # pytest.fail raises a BaseException subclass
                    errors.append(str(e))
            else:
                inst.kill()
        if errors:
            pytest.fail("\n".join(errors), pytrace=False)


# --------------------------------------------------------------------------
# fixtures and hooks


@pytest.fixture
def msgd_factory(tmp_path_factory, request):
    factory = MsgdFactory(tmp_path_factory, re.sub(r"\W", "_", request.node.name)[:40])
    yield factory
    factory.cleanup()


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    """One running msgd per test module, with the module's USERS (active)
    and INACTIVE_USERS created before start."""
    factory = MsgdFactory(tmp_path_factory, request.module.__name__.rsplit(".", 1)[-1])
    inst = factory(users=getattr(request.module, "USERS", ()), inactive=getattr(request.module, "INACTIVE_USERS", ()))
    yield inst
    factory.cleanup()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the tail of every involved msgd's stderr log."""
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    instances = []
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, Msgd):
            instances.append(value)
        elif isinstance(value, MsgdFactory):
            instances.extend(value.instances)
    for inst in instances:
        rep.sections.append((f"msgd stderr ({inst.stderr_path})", inst.log(8000)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    def on_alarm(signum, frame):
        raise TimeoutError(f"test exceeded {TEST_TIMEOUT}s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# --------------------------------------------------------------------------
# messages


UTF8_LINES = [
    "Grüße aus Köln: naïve café, Ærøskøbing, ½ € ✓",
    "日本語のテキスト、中文文本, Ελληνικά, русский текст, emoji 📬",
]


def rich_body(lines: int = 1500) -> str:
    """A long-ish body with 8-bit UTF-8 text, dot-leading lines (including a
    lone '.' that would end DATA unless stuffed), a 'From ' line and
    trailing spaces."""
    out = [UTF8_LINES[0], "", ".a line that starts with a dot", ".", "..", "From the start of a line", "trailing spaces   ", ""]
    for i in range(lines):
        out.append(f"{i:05d} {UTF8_LINES[i % 2]} the quick brown fox jumps over the lazy dog")
        if i % 250 == 0:
            out.append(".dot again " + str(i))
    out.append("-- ")
    out.append("end of message")
    return "\r\n".join(out) + "\r\n"


def build_message(to: str, subject: str, body: str, sender: str = REMOTE_SENDER,
                  extra_headers=(), content_type: str = "text/plain; charset=utf-8",
                  cte: str = "8bit", msgid: str | None = None) -> bytes:
    """An RFC 5322 message with CRLF line ends, as bytes."""
    headers = [
        f"From: Test Sender <{sender}>",
        f"To: <{to}>",
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate(localtime=False)}",
        f"Message-ID: <{msgid or unique('m')}@remote.example>",
        "MIME-Version: 1.0",
        f"Content-Type: {content_type}",
    ]
    if cte:
        headers.append(f"Content-Transfer-Encoding: {cte}")
    headers.extend(extra_headers)
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode("utf-8")


def multipart_message(to: str, subject: str, sender: str = REMOTE_SENDER) -> tuple[bytes, dict]:
    """multipart/mixed with text/plain, text/html and a base64 attachment.
    Returns (bytes, facts) where facts holds the parts' expected content."""
    boundary = "=_b_" + uuid.uuid4().hex
    plain = "Plain part line one.\r\nPlain part line two.\r\n"
    html = "<html><body><p>HTML part</p></body></html>\r\n"
    attachment = bytes(range(256)) * 4
    b64 = base64.encodebytes(attachment).decode().replace("\n", "\r\n")
    # the CRLF before a boundary belongs to the boundary (RFC 2046), hence
    # the extra "\r\n" after each part's content
    body = (
        "This is a multi-part message in MIME format.\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"
        f"{plain}\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/html; charset=us-ascii\r\n"
        "Content-Transfer-Encoding: 7bit\r\n"
        "\r\n"
        f"{html}\r\n"
        f"--{boundary}\r\n"
        'Content-Type: application/octet-stream; name="blob.bin"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="blob.bin"\r\n'
        "\r\n"
        f"{b64}\r\n"
        f"--{boundary}--\r\n"
    )
    data = build_message(to, subject, body, sender=sender,
                         content_type=f'multipart/mixed; boundary="{boundary}"', cte="")
    return data, {"plain": plain.encode(), "html": html.encode(), "attachment": attachment}


TRACE_RE = re.compile(rb"(?i)(return-path|received)\s*:")


def split_trace_headers(raw: bytes) -> tuple[list[bytes], bytes]:
    """Splits the leading Return-Path/Received header fields (with their
    continuation lines) off a stored message."""
    trace: list[bytes] = []
    pos = 0
    while True:
        end = raw.find(b"\r\n", pos)
        if end < 0:
            break
        line = raw[pos:end + 2]
        if TRACE_RE.match(line):
            trace.append(line)
        elif line[:1] in (b" ", b"\t") and trace:
            trace[-1] += line
        else:
            break
        pos = end + 2
    return trace, raw[pos:]


def first_difference(a: bytes, b: bytes) -> str:
    n = min(len(a), len(b))
    i = next((k for k in range(n) if a[k] != b[k]), n)
    return (f"lengths {len(a)} vs {len(b)}; first difference at offset {i}:\n"
            f"  got:  {a[max(0, i - 60):i + 60]!r}\n  want: {b[max(0, i - 60):i + 60]!r}")


def assert_delivered_copy(raw: bytes, sent: bytes, envelope_from: str, how: str) -> None:
    """`raw` (as fetched) is `sent` with Return-Path and Received prepended."""
    trace, rest = split_trace_headers(raw)
    names = [t.split(b":", 1)[0].strip().lower() for t in trace]
    assert b"return-path" in names, f"{how}: no Return-Path header prepended; message starts {raw[:300]!r}"
    assert b"received" in names, f"{how}: no Received header prepended; message starts {raw[:300]!r}"
    return_path = next(t for t in trace if t.lower().startswith(b"return-path"))
    assert f"<{envelope_from}>".encode() in return_path, f"{how}: Return-Path is {return_path!r}"
    assert rest == sent, f"{how}: stored message differs from what was sent: " + first_difference(rest, sent)


# --------------------------------------------------------------------------
# imaplib result helpers


def imap_literals(data) -> list[bytes]:
    """The literal payloads of an imaplib FETCH result."""
    return [item[1] for item in data if isinstance(item, tuple)]


def imap_fetch_pairs(data) -> list[tuple[bytes, bytes | None]]:
    """imaplib FETCH data as [(metadata, literal)]: the metadata joins the
    text before the literal with the text after it (`UID 5)` may follow)."""
    pairs = []
    for item in data:
        if isinstance(item, tuple):
            pairs.append([item[0], item[1]])
        elif item is None:
            continue
        elif pairs and not re.match(rb"\d+ \(", item):
            pairs[-1][0] += b" " + item
        else:
            pairs.append([item, None])
    return [(meta, lit) for meta, lit in pairs]


def imap_ok(result, what: str = "command"):
    typ, data = result
    assert typ == "OK", f"IMAP {what} failed: {typ} {data}"
    return data


def imap_list_names(m: imaplib.IMAP4) -> dict[str, set[str]]:
    """LIST "" "*" as {name: {attributes}}."""
    data = imap_ok(m.list(), "LIST")
    result = {}
    for line in data:
        if isinstance(line, tuple):  # name sent as a literal
            line = line[0] + b'"' + line[1] + b'"'
        mo = re.match(rb'\((?P<attrs>[^)]*)\) (?P<delim>NIL|"(?:[^"\\]|\\.)*") (?P<name>.+)$', line)
        assert mo, f"unparsable LIST line {line!r}"
        name = mo.group("name").decode()
        if name.startswith('"') and name.endswith('"'):
            name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        result[name] = {a.decode() for a in mo.group("attrs").split()}
    return result


def parse_status(data) -> dict[str, int]:
    line = data[0].decode()
    inner = line[line.rindex("(") + 1:line.rindex(")")].split()
    return {inner[i].upper(): int(inner[i + 1]) for i in range(0, len(inner), 2)}


# --------------------------------------------------------------------------
# raw line-oriented client (BDAT, IDLE, smuggling, malformed input)


class LineClient:
    def __init__(self, port: int, timeout: float = 15, tls: ssl.SSLContext | None = None):
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
        self.sock = sock
        self.buf = b""

    def send(self, data) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def readline(self) -> bytes:
        """One line including its line end; b'' at EOF."""
        while b"\n" not in self.buf:
            if not self._fill():
                line, self.buf = self.buf, b""
                return line
        i = self.buf.index(b"\n") + 1
        line, self.buf = self.buf[:i], self.buf[i:]
        return line

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError(f"EOF after {len(self.buf)} of {n} bytes")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def starttls(self, ctx: ssl.SSLContext) -> None:
        assert self.buf == b"", f"unread data before TLS: {self.buf!r}"
        self.sock = ctx.wrap_socket(self.sock, server_hostname="127.0.0.1")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # SMTP

    def smtp_reply(self) -> tuple[int, str]:
        """One (possibly multi-line) SMTP reply; (0, '') at EOF."""
        lines = []
        while True:
            line = self.readline()
            if not line:
                return (int(lines[-1][:3]) if lines else 0), "\n".join(lines)
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return int(text[:3]), "\n".join(lines)

    def smtp_cmd(self, line: str) -> tuple[int, str]:
        self.send(line + "\r\n")
        return self.smtp_reply()

    # IMAP

    def imap_response(self) -> bytes:
        """One IMAP response line with any literals inlined; b'' at EOF."""
        out = b""
        while True:
            line = self.readline()
            if not line:
                return out
            out += line
            mo = re.search(rb"\{(\d+)\+?\}\r?\n$", line)
            if not mo:
                return out
            out += self.read_exact(int(mo.group(1)))

    def imap_cmd(self, tag: str, command: str | bytes) -> tuple[bytes, list[bytes]]:
        """Sends `tag command`; returns (tagged completion line, untagged/other lines)."""
        if isinstance(command, str):
            command = command.encode()
        self.send(tag.encode() + b" " + command + b"\r\n")
        return self.imap_until_tagged(tag)

    def imap_until_tagged(self, tag: str) -> tuple[bytes, list[bytes]]:
        others = []
        while True:
            resp = self.imap_response()
            if not resp:
                raise EOFError(f"connection closed before tagged reply to {tag}; got {others!r}")
            if resp.startswith(tag.encode() + b" "):
                return resp, others
            others.append(resp)


def imap_raw_login(server: Msgd, address: str, tls: ssl.SSLContext | None = None,
                   port: str = "imap") -> LineClient:
    c = LineClient(server.ports[port], tls=tls)
    greeting = c.imap_response()
    assert greeting.startswith(b"* OK"), f"IMAP greeting {greeting!r}"
    tagged, _ = c.imap_cmd("L1", f'LOGIN "{address}" "{server.passwords[address]}"')
    assert tagged.startswith(b"L1 OK"), f"LOGIN failed: {tagged!r}"
    return c


# --------------------------------------------------------------------------
# IMAP s-expression parser (ENVELOPE, BODYSTRUCTURE)


class _Parser:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def skip_ws(self):
        while self.pos < len(self.data) and self.data[self.pos:self.pos + 1] in (b" ", b"\r", b"\n"):
            self.pos += 1

    def value(self):
        self.skip_ws()
        c = self.data[self.pos:self.pos + 1]
        if c == b"(":
            self.pos += 1
            items = []
            while True:
                self.skip_ws()
                if self.data[self.pos:self.pos + 1] == b")":
                    self.pos += 1
                    return items
                if self.pos >= len(self.data):
                    raise ValueError("unterminated list")
                items.append(self.value())
        if c == b'"':
            self.pos += 1
            out = bytearray()
            while True:
                ch = self.data[self.pos:self.pos + 1]
                if ch == b"\\":
                    out += self.data[self.pos + 1:self.pos + 2]
                    self.pos += 2
                elif ch == b'"':
                    self.pos += 1
                    return bytes(out)
                elif not ch:
                    raise ValueError("unterminated string")
                else:
                    out += ch
                    self.pos += 1
        if c == b"{":
            end = self.data.index(b"}", self.pos)
            n = int(self.data[self.pos + 1:end].rstrip(b"+"))
            self.pos = end + 1
            if self.data[self.pos:self.pos + 2] == b"\r\n":
                self.pos += 2
            elif self.data[self.pos:self.pos + 1] == b"\n":
                self.pos += 1
            lit = self.data[self.pos:self.pos + n]
            self.pos += n
            return lit
        start = self.pos
        depth = 0
        while self.pos < len(self.data):
            ch = self.data[self.pos:self.pos + 1]
            if ch == b"[":
                depth += 1
            elif ch == b"]":
                depth -= 1
            elif depth == 0 and ch in (b" ", b"(", b")", b"\r", b"\n"):
                break
            self.pos += 1
        atom = self.data[start:self.pos]
        if atom.upper() == b"NIL":
            return None
        return atom


def parse_fetch(resp: bytes) -> tuple[int, dict[str, object]]:
    """`* N FETCH (...)` -> (N, {ITEM: value}) with keys upper-cased."""
    mo = re.match(rb"\* (\d+) FETCH ", resp)
    assert mo, f"not a FETCH response: {resp[:200]!r}"
    p = _Parser(resp[mo.end():])
    items = p.value()
    assert isinstance(items, list), resp[:200]
    out = {}
    for i in range(0, len(items) - 1, 2):
        out[items[i].decode().upper()] = items[i + 1]
    return int(mo.group(1)), out


# --------------------------------------------------------------------------
# swaks


def run_swaks(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    exe = shutil.which("swaks")
    if exe is None:
        pytest.fail(f"swaks is not installed: {INSTALL_HINT}", pytrace=False)
    return subprocess.run([exe, *args], capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=timeout)
