"""systemd integration (issue 14, "systemd and packaging") against the real
binary, without booting systemd:

- `systemd-analyze verify` on every unit (the `systemd` package; the units'
  /usr/bin/msgd is pointed at the built binary in a copy, since verify checks
  that the executables exist);
- Type=notify: msgd runs with NOTIFY_SOCKET set to a Unix datagram socket
  this test owns; READY=1 arrives only once every listener accepts and the
  store is open, STATUS= lines come before it, WATCHDOG=1 pings come with
  WATCHDOG_USEC, STOPPING=1 on SIGTERM, and a failed start never says READY;
- SIGHUP (ExecReload): a changed config value and certificate reach new
  sessions while an existing IMAP session stays up; a broken config on HUP
  is logged and the server keeps running with the old one.
"""

from __future__ import annotations

import imaplib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, msgd_bin, msgd_env, port_accepts, wait_until

USERS = ("alice@example.test",)
ROLES = ("all-in-one", "mta-in", "mta-out", "store", "mmp", "mem")
INSTALL = "install it with scripts/install-test-deps.sh (or: apt-get install -y systemd)"


# --------------------------------------------------------------------------
# units


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail(f"systemd-analyze not found: {INSTALL}", pytrace=False)
    return path


def unit_copy(tmp_path: Path) -> Path:
    """The units of systemd/ with /usr/bin/msgd pointing at the built binary."""
    out = tmp_path / "units"
    out.mkdir()
    for unit in (REPO_ROOT / "systemd").iterdir():
        text = unit.read_text().replace("/usr/bin/msgd", msgd_bin())
        (out / unit.name).write_text(text)
    return out


def test_every_unit_passes_systemd_analyze_verify(tmp_path):
    tool = systemd_analyze()
    units = unit_copy(tmp_path)
    names = sorted(p.name for p in units.iterdir())
    assert names == ["msgd.target", "msgd@.service"], names
    targets = [str(units / f"msgd@{role}.service") for role in ROLES] + [str(units / "msgd.target")]
    r = subprocess.run([tool, "verify", "--man=no", *targets], capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    # Unknown keys and the like are warnings with status 0: none may name
    # our units.
    ours = [line for line in out.splitlines() if "msgd" in line]
    assert ours == [], "\n".join(ours)


def test_a_broken_unit_fails_verify(tmp_path):
    """The check above would catch a mistake: a bad executable fails."""
    tool = systemd_analyze()
    units = unit_copy(tmp_path)
    unit = units / "msgd@.service"
    unit.write_text(unit.read_text().replace(msgd_bin(), "/nonexistent/msgd") + "\n[Service]\nBogusKey=1\n")
    r = subprocess.run([tool, "verify", "--man=no", str(units / "msgd@store.service")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "BogusKey" in r.stdout + r.stderr


def test_unit_declares_notify_watchdog_reload_and_sandbox():
    text = (REPO_ROOT / "systemd" / "msgd@.service").read_text()
    settings = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            settings.setdefault(k, v)
    expect = {
        "Type": "notify",
        "ExecStart": "/usr/bin/msgd --role %i --config /etc/msgd/%i.toml",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "RestartPreventExitStatus": "2",
        "ProtectSystem": "strict",
        "StateDirectory": "msgd",
        "NoNewPrivileges": "true",
        "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
        "UMask": "0077",
        "PrivateTmp": "true",
        "ProtectHome": "true",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    }
    for k, v in expect.items():
        assert settings.get(k) == v, (k, settings.get(k))
    assert int(settings["WatchdogSec"]) > 0
    assert int(settings["LimitNOFILE"]) >= 65536
    # Every role's sample config is where ExecStart looks for it.
    for role in ROLES:
        assert (REPO_ROOT / "etc" / "tiers" / f"{role}.toml").is_file(), role


# --------------------------------------------------------------------------
# sd_notify


class Notify:
    """A datagram socket standing in for systemd's notification socket."""

    def __init__(self):
        # Short path: sun_path holds 108 bytes.
        self.dir = tempfile.mkdtemp(prefix="msgd-n", dir="/tmp")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.seen: list[str] = []

    def recv(self, timeout: float) -> list[str]:
        """Lines of the next datagram, [] on timeout."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return []
        lines = data.decode().splitlines()
        self.seen += lines
        return lines

    def wait_for(self, line: str, proc: subprocess.Popen, timeout: float, log) -> list[str]:
        """Every line received until (and with) `line`; fails if msgd exits
        or the timeout passes."""
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.recv(0.2)
            got += lines
            if line in lines:
                return got
            if not lines and proc.poll() is not None:
                pytest.fail(f"msgd exited ({proc.returncode}) before {line}; got {got}\n{log()}", pytrace=False)
        pytest.fail(f"no {line} within {timeout}s; got {got}\n{log()}", pytrace=False)

    def drain(self, seconds: float) -> list[str]:
        got: list[str] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            got += self.recv(max(0.01, deadline - time.monotonic()))
        return got

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify():
    n = Notify()
    yield n
    n.close()


def start_notified(inst, notify: Notify, **extra_env) -> subprocess.Popen:
    env = msgd_env()
    env["NOTIFY_SOCKET"] = notify.path
    env.update(extra_env)
    with open(inst.stdout_path, "ab") as out, open(inst.stderr_path, "ab") as err:
        inst.proc = subprocess.Popen([msgd_bin(), "--config", str(inst.config_path)], stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=err, cwd=inst.root, env=env)
    return inst.proc


def test_ready_only_once_listeners_accept_and_the_store_is_open(msgd_factory, notify):
    inst = msgd_factory(users=USERS, start=False)
    proc = start_notified(inst, notify)
    before = notify.wait_for("READY=1", proc, 30, inst.log)
    # At the moment READY=1 arrives, every port accepts and the store's
    # admin socket (opened with the store) exists.
    closed = [name for name, port in inst.ports.items() if not port_accepts(port)]
    assert closed == [], f"READY=1 before {closed} accepted"
    assert (inst.data_dir / "admin.sock").exists()
    statuses = [line for line in before if line.startswith("STATUS=")]
    assert any("starting" in s for s in statuses), before
    assert any(s.startswith("STATUS=serving") for s in statuses), before
    assert before.index(statuses[0]) < before.index("READY=1")
    # No watchdog asked for: no pings.
    assert "WATCHDOG=1" not in notify.drain(1.0)
    m = inst.imap(USERS[0])
    assert m.noop()[0] == "OK"
    m.logout()
    inst.stop()
    rest = notify.drain(0.5)
    assert "STOPPING=1" in rest, rest
    assert "READY=1" not in rest


def test_a_failed_start_never_says_ready(msgd_factory, notify):
    inst = msgd_factory(start=False)
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", inst.ports["imap"]))
    blocker.listen()
    try:
        proc = start_notified(inst, notify)
        rc = proc.wait(30)
        inst.proc = None
        assert rc == 1, inst.log()
        got = notify.drain(0.3)
        assert "READY=1" not in got, got
        assert any(line.startswith("STATUS=failed") and "listener.imap" in line for line in got), got
    finally:
        blocker.close()


def test_watchdog_pings_while_the_runtime_answers(msgd_factory, notify):
    inst = msgd_factory(start=False)
    proc = start_notified(inst, notify, WATCHDOG_USEC="200000")
    notify.wait_for("READY=1", proc, 30, inst.log)
    pings = [line for line in notify.drain(2.0) if line == "WATCHDOG=1"]
    assert len(pings) >= 3, pings
    assert "systemd watchdog on" in inst.log()
    inst.stop()


def test_watchdog_is_for_the_named_process_only(msgd_factory, notify):
    """WATCHDOG_PID naming another process (a child inherited the
    variables): msgd does not ping."""
    inst = msgd_factory(start=False)
    proc = start_notified(inst, notify, WATCHDOG_USEC="200000", WATCHDOG_PID="1")
    notify.wait_for("READY=1", proc, 30, inst.log)
    assert "WATCHDOG=1" not in notify.drain(1.0)
    inst.stop()


# --------------------------------------------------------------------------
# SIGHUP


def make_cert(dir: Path, name: str) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl not found: install it with scripts/install-test-deps.sh", pytrace=False)
    dir.mkdir(parents=True, exist_ok=True)
    cert, key = dir / "new-cert.pem", dir / "new-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def trusting(cert: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


def der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


def hup_and_wait(inst, notify: Notify, proc) -> list[str]:
    proc.send_signal(signal.SIGHUP)
    got = notify.wait_for("READY=1", proc, 30, inst.log)
    assert "RELOADING=1" in got, got
    assert any(line.startswith("MONOTONIC_USEC=") for line in got), got
    return got


def test_sighup_reloads_config_and_certificate_without_dropping_sessions(msgd_factory, notify):
    inst = msgd_factory(users=USERS, start=False)
    proc = start_notified(inst, notify)
    notify.wait_for("READY=1", proc, 30, inst.log)
    user = USERS[0]
    old_cert = inst.cert_path.read_bytes()

    # Sessions open before the reload: plain IMAP and IMAPS.
    plain = inst.imap(user)
    assert plain.select("INBOX")[0] == "OK"
    secure = imaplib.IMAP4_SSL("127.0.0.1", inst.ports["imaps"], ssl_context=inst.ssl_context(), timeout=20)
    assert b"mail.example.test" in secure.welcome
    secure.login(user, inst.passwords[user])

    # A new hostname (through `msgd config set`), a renewed certificate
    # written over the old files (as certbot does), and a key read at start.
    r = inst.cli("config", "set", "server.hostname", "mx-reloaded.example.test")
    assert r.returncode == 0, r.stderr
    r = inst.cli("config", "set", "store.dbcachesize", "33554432")
    assert r.returncode == 0, r.stderr
    cert, key = make_cert(inst.root / "newtls", "mx-reloaded.example.test")
    shutil.copy(cert, inst.data_dir / "tls" / "cert.pem")
    shutil.copy(key, inst.data_dir / "tls" / "key.pem")
    assert inst.cert_path.read_bytes() != old_cert

    got = hup_and_wait(inst, notify, proc)
    assert any(line.startswith("STATUS=serving") for line in got), got
    log = inst.log()
    assert "configuration reloaded" in log
    assert "server.hostname" in log
    assert "store.dbcachesize" in log and "next restart" in log

    # The sessions from before are still up and working.
    assert plain.noop()[0] == "OK"
    assert plain.select("INBOX")[0] == "OK"
    assert secure.noop()[0] == "OK"
    assert secure.select("INBOX")[0] == "OK"

    # A new TLS connection: the new certificate and the new hostname.
    new = imaplib.IMAP4_SSL("127.0.0.1", inst.ports["imaps"], ssl_context=trusting(cert), timeout=20)
    assert new.sock.getpeercert(binary_form=True) == der(cert)
    assert b"mx-reloaded.example.test" in new.welcome, new.welcome
    new.login(user, inst.passwords[user])
    assert new.select("INBOX")[0] == "OK"
    new.logout()
    # A plain session started now sees the new hostname too.
    fresh = inst.imap()
    assert b"mx-reloaded.example.test" in fresh.welcome
    fresh.logout()

    # A broken config on HUP: logged, the running one stays, no exit.
    with open(inst.config_path, "a") as f:
        f.write("\n[bogus_section]\nx = 1\n")
    got = hup_and_wait(inst, notify, proc)
    assert any("last reload failed" in line for line in got), got
    assert proc.poll() is None
    assert "reload refused" in inst.log()
    assert "bogus_section" in inst.log()
    again = imaplib.IMAP4_SSL("127.0.0.1", inst.ports["imaps"], ssl_context=trusting(cert), timeout=20)
    assert b"mx-reloaded.example.test" in again.welcome
    again.logout()
    assert plain.noop()[0] == "OK"

    # A certificate that does not load on HUP: the old one stays.
    text = inst.config_path.read_text().replace("\n[bogus_section]\nx = 1\n", "")
    inst.config_path.write_text(text)
    (inst.data_dir / "tls" / "key.pem").write_text("not a key\n")
    got = hup_and_wait(inst, notify, proc)
    assert any("last reload failed" in line for line in got), got
    again = imaplib.IMAP4_SSL("127.0.0.1", inst.ports["imaps"], ssl_context=trusting(cert), timeout=20)
    assert again.sock.getpeercert(binary_form=True) == der(cert)
    again.logout()

    plain.logout()
    secure.logout()
    inst.stop()
    assert wait_until(lambda: "STOPPING=1" in notify.seen + notify.drain(0.2), 5)


def greeting(port: int) -> bytes:
    """The first line a new IMAP connection gets (b"" if closed at once)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        f = s.makefile("rb")
        return f.readline()


def test_sighup_applies_limits_and_log_level_to_new_sessions(msgd_factory, notify):
    inst = msgd_factory(users=USERS, start=False)
    proc = start_notified(inst, notify)
    notify.wait_for("READY=1", proc, 30, inst.log)
    user = USERS[0]
    port = inst.ports["imap"]
    # Two sessions open before the reload, under the default limits.
    first = inst.imap(user)
    second = inst.imap(user)
    assert greeting(port).startswith(b"* OK")

    # Connection limiter, session limit and log level, changed on disk.
    for key, value in (("limits.max_connections_per_ip", "2"), ("limits.max_bad_commands", "1"),
                       ("log.level", "debug")):
        r = inst.cli("config", "set", key, value)
        assert r.returncode == 0, r.stderr
    got = hup_and_wait(inst, notify, proc)
    assert any(line.startswith("STATUS=serving") for line in got), got
    log_mark = len(inst.stderr_path.read_text(errors="replace"))
    log = inst.log()
    assert "limits.max_connections_per_ip" in log and "log.level" in log
    reload_lines = [line for line in log.splitlines() if "next restart" in line]
    assert not any("limits" in line or "log.level" in line for line in reload_lines), reload_lines

    # The two sessions from before stay; a third connection from the same
    # client is refused by the new per-client limit.
    assert first.noop()[0] == "OK" and second.noop()[0] == "OK"
    assert greeting(port) == b"* BYE Too many connections\r\n"
    second.logout()
    # One slot free again: a new session, which gets the new
    # max_bad_commands (one bad command ends it), while the old session
    # keeps its own snapshot (several bad commands tolerated).
    # (the slot is free once the server has closed the logged-out session)
    def connected():
        c = socket.create_connection(("127.0.0.1", port), timeout=20)
        r = c.makefile("rb")
        if r.readline().startswith(b"* OK"):
            return c, r
        c.close()
        return None
    got_in = wait_until(connected, 10, 0.05)
    assert got_in, "no slot after a logout"
    fresh, f = got_in
    fresh.sendall(b"a1 FROBNICATE\r\n")
    lines = [f.readline() for _ in range(2)]
    assert any(b"BAD" in line for line in lines), lines
    assert any(line.startswith(b"* BYE") for line in lines) or f.readline() == b"", lines
    fresh.close()
    raw = first.socket()
    for i in range(3):
        raw.sendall(f"x{i} FROBNICATE\r\n".encode())
        assert b"BAD" in first.readline()
    assert first.noop()[0] == "OK"
    first.logout()
    # log.level = debug is in force: the commands of sessions after the
    # reload are logged at debug level.
    after = inst.stderr_path.read_text(errors="replace")[log_mark:]
    assert any("DEBUG" in line and "command" in line for line in after.splitlines()), after[-3000:]
