"""Quickstart: msgd with no config file runs on fixed ports with a generated
postmaster account (docs/contract.md, "No config file")."""

import imaplib
import re
import signal
import subprocess
import time

import pytest

from conftest import (
    CLIENT_HELO,
    START_TIMEOUT,
    STOP_TIMEOUT,
    imap_literals,
    imap_ok,
    msgd_bin,
    msgd_env,
    port_accepts,
    run_swaks,
    unique,
    wait_for_ports,
)

QUICKSTART_PORTS = {
    "smtp": 10025, "submission": 10587, "submissions": 10465, "imap": 10143, "imaps": 10993,
    "pop3": 10110, "pop3s": 10995, "lmtp": 10024, "http": 18080,
}
POSTMASTER = "postmaster@localhost"


class Quickstart:
    def __init__(self, cwd):
        self.cwd = cwd
        self.stdout_path = cwd / "quickstart.stdout.log"
        self.stderr_path = cwd / "quickstart.stderr.log"
        self.proc = None

    def log(self, tail=8000):
        text = self.stderr_path.read_text(encoding="utf-8", errors="replace") if self.stderr_path.exists() else ""
        return text[-tail:]

    def stdout(self):
        return self.stdout_path.read_text(encoding="utf-8", errors="replace") if self.stdout_path.exists() else ""

    def start(self):
        busy = {name: port for name, port in QUICKSTART_PORTS.items() if port_accepts(port)}
        if busy:
            pytest.fail(f"quickstart ports already in use by another process on 127.0.0.1: {busy}; "
                        "stop whatever listens there and rerun", pytrace=False)
        # stdout is truncated per start, so each start's output can be checked on its own
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen([msgd_bin()], cwd=self.cwd, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err, env=msgd_env())
        wait_for_ports(self.proc, [QUICKSTART_PORTS["imap"], QUICKSTART_PORTS["smtp"]], START_TIMEOUT,
                       self.log, "msgd quickstart")

    def stop(self):
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"quickstart msgd ignored SIGTERM for {STOP_TIMEOUT}s\n{self.log()}", pytrace=False)
        assert rc == 0, f"quickstart msgd exited {rc} on SIGTERM\n{self.log()}"


def generated_password(stdout: str) -> str | None:
    """The first token after the word "password" that is not filler or an
    address ("password: X", "password for postmaster@localhost is X", "password=X")."""
    for line in stdout.splitlines():
        mo = re.search(r"(?i)password", line)
        if not mo:
            continue
        for token in re.split(r"[\s:=\"'`]+", line[mo.end():]):
            if token and token.lower() not in {"for", "is", "of", "the", "-"} and "@" not in token:
                return token
    return None


@pytest.fixture
def quickstart(tmp_path):
    qs = Quickstart(tmp_path)
    yield qs
    if qs.proc is not None and qs.proc.poll() is None:
        qs.stop()


def test_quickstart_without_config_creates_postmaster_and_accepts_mail(quickstart):
    quickstart.start()
    out = ""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (POSTMASTER not in out or generated_password(out) is None):
        time.sleep(0.1)
        out = quickstart.stdout()
    assert POSTMASTER in out, f"quickstart stdout does not name {POSTMASTER}:\n{out}"
    password = generated_password(out)
    assert password, f"no generated password found on stdout:\n{out}"
    for port in ("10025", "10143"):
        assert port in out, f"quickstart stdout does not list port {port}:\n{out}"
    assert (quickstart.cwd / "msgd-data").is_dir(), "quickstart did not create ./msgd-data"

    m = imaplib.IMAP4("127.0.0.1", QUICKSTART_PORTS["imap"], timeout=20)
    try:
        imap_ok(m.login(POSTMASTER, password), "LOGIN postmaster with the printed password")
        before = int(imap_ok(m.select("INBOX", readonly=True))[0])
    finally:
        m.logout()

    subject = f"quickstart {unique()}"
    res = run_swaks("--server", f"127.0.0.1:{QUICKSTART_PORTS['smtp']}", "--helo", CLIENT_HELO,
                    "--from", "someone@remote.example", "--to", POSTMASTER,
                    "--header", f"Subject: {subject}", "--body", "hello from the quickstart test")
    assert res.returncode == 0, f"swaks failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"

    m = imaplib.IMAP4("127.0.0.1", QUICKSTART_PORTS["imap"], timeout=20)
    try:
        imap_ok(m.login(POSTMASTER, password), "LOGIN")
        count = before
        deadline = time.monotonic() + 15
        while count <= before and time.monotonic() < deadline:
            count = int(imap_ok(m.select("INBOX", readonly=True))[0])
            time.sleep(0.2)
        assert count == before + 1, f"INBOX has {count} messages, expected {before + 1}"
        (msg,) = imap_literals(imap_ok(m.fetch(str(count), "(BODY.PEEK[])"), "FETCH"))
    finally:
        m.logout()
    assert f"Subject: {subject}".encode() in msg
    assert b"hello from the quickstart test" in msg

    # a second start with the same directory keeps the account and does not
    # print the password again
    quickstart.stop()
    quickstart.start()
    deadline = time.monotonic() + 10
    while quickstart.log(10**6).count("msgd ready") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert quickstart.log(10**6).count("msgd ready") >= 2, "second start never logged 'msgd ready'"
    assert password not in quickstart.stdout(), "the password was printed again on the second start"
    m = imaplib.IMAP4("127.0.0.1", QUICKSTART_PORTS["imap"], timeout=20)
    try:
        imap_ok(m.login(POSTMASTER, password), "LOGIN after restart")
        assert int(imap_ok(m.select("INBOX", readonly=True))[0]) == before + 1
    finally:
        m.logout()
    quickstart.stop()
