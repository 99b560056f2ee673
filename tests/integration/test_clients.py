"""Real mail clients from Debian against the real msgd binary:

- mbsync (isync) keeps a local Maildir and msgd's IMAP in sync both ways,
  over IMAPS and over STARTTLS, trusting msgd's generated certificate:
  new mail, flag changes and deletions on each side, folders created on
  each side, and a final sync that changes nothing.
- fetchmail pulls over POP3 (STLS) and IMAP (IMAPS) into an MDA, with
  `nokeep` (the messages are gone from msgd afterwards) and `keep` (they
  stay; over IMAP they are marked \\Seen and not fetched again).

A missing tool fails the test with the install command (never a skip).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import build_message, imap_fetch_pairs, imap_ok, unique

MBSYNC_USERS = ("sync-imaps@example.test", "sync-starttls@example.test")
FETCH_USERS = ("fm-pop-nokeep@example.test", "fm-pop-keep@example.test",
               "fm-imap-nokeep@example.test", "fm-imap-keep@example.test")
USERS = MBSYNC_USERS + FETCH_USERS
CERT_NAME = "mail.example.test"  # a DNS name in msgd's generated certificate


def tool(name: str, package: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.fail(f"{name} is not installed: apt-get install -y {package} "
                    f"(or run scripts/install-test-deps.sh)", pytrace=False)
    return exe


def run(args, what: str, env=None, ok_codes=(0,), timeout: float = 90) -> subprocess.CompletedProcess:
    res = subprocess.run(args, capture_output=True, text=True, encoding="utf-8", errors="replace",
                         timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    assert res.returncode in ok_codes, (
        f"{what} exited {res.returncode}\n--- stdout ---\n{res.stdout[-8000:]}\n--- stderr ---\n{res.stderr[-8000:]}"
    )
    return res


def msg(to: str, tag: str) -> tuple[str, bytes]:
    """A message with a unique Message-ID; returns (message-id, bytes)."""
    mid = f"{tag}-{unique()}"
    body = f"Body of {tag}.\r\nSecond line of {tag}.\r\n"
    return mid, build_message(to, f"clients {tag}", body, msgid=mid)


def lf(data: bytes) -> bytes:
    """LF line ends, without the X-TUID header field mbsync adds to the
    messages it copies (it finds its copies by it)."""
    return re.sub(rb"(?m)^X-TUID: [^\n]*\n", b"", data.replace(b"\r\n", b"\n"))


def mid_of(data: bytes) -> str | None:
    mo = re.search(rb"(?im)^Message-ID:\s*<([^@>]+)@", data)
    return mo.group(1).decode() if mo else None


# --------------------------------------------------------------------------
# server side helpers (imaplib)


def server_state(server, user: str, mailbox: str = "INBOX") -> dict[str, set[str]]:
    """{message-id: {flags}} of a mailbox on msgd (\\Recent left out)."""
    m = server.imap(user)
    try:
        typ, data = m.select(f'"{mailbox}"', readonly=True)
        assert typ == "OK", f"EXAMINE {mailbox}: {data}"
        if int(data[0]) == 0:
            return {}
        data = imap_ok(m.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"), "FETCH")
        out = {}
        for meta, lit in imap_fetch_pairs(data):
            flags = re.search(rb"FLAGS \(([^)]*)\)", meta)
            assert flags and lit is not None, f"unexpected FETCH data {meta!r}"
            mid = mid_of(lit)
            assert mid, f"no Message-ID in {lit!r}"
            out[mid] = {f.decode() for f in flags.group(1).split() if f != rb"\Recent"}
        return out
    finally:
        m.logout()


def server_append(server, user: str, mailbox: str, data: bytes, flags: str = "") -> None:
    m = server.imap(user)
    try:
        imap_ok(m.append(f'"{mailbox}"', f"({flags})" if flags else None, None, data), "APPEND")
    finally:
        m.logout()


def server_store(server, user: str, mid: str, op: str, flags: str, expunge: bool = False,
                 mailbox: str = "INBOX") -> None:
    m = server.imap(user)
    try:
        imap_ok(m.select(f'"{mailbox}"'), "SELECT")
        typ, data = m.uid("SEARCH", None, "HEADER", "Message-ID", mid)
        assert typ == "OK" and data[0].split(), f"message {mid} not found on the server: {data}"
        uid = data[0].split()[0].decode()
        imap_ok(m.uid("STORE", uid, op, flags), "UID STORE")
        if expunge:
            imap_ok(m.expunge(), "EXPUNGE")
    finally:
        m.logout()


def server_create(server, user: str, mailbox: str) -> None:
    m = server.imap(user)
    try:
        imap_ok(m.create(f'"{mailbox}"'), "CREATE")
    finally:
        m.logout()


# --------------------------------------------------------------------------
# mbsync


MAILDIR_FLAGS = {"D": r"\Draft", "F": r"\Flagged", "R": r"\Answered", "S": r"\Seen", "T": r"\Deleted"}


def maildir_state(folder: Path) -> dict[str, tuple[Path, set[str]]]:
    """{message-id: (file, {IMAP flags})} of a local Maildir folder."""
    out = {}
    for sub in ("new", "cur"):
        d = folder / sub
        if not d.is_dir():
            continue
        for f in d.iterdir():
            info = f.name.split(":2,", 1)[1] if ":2," in f.name else ""
            mid = mid_of(f.read_bytes())
            assert mid, f"no Message-ID in {f}"
            assert mid not in out, f"message {mid} twice in {folder}: {out[mid][0]} and {f}"
            out[mid] = (f, {MAILDIR_FLAGS[c] for c in info if c in MAILDIR_FLAGS})
    return out


def maildir_deliver(folder: Path, data: bytes) -> Path:
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    name = f"{int(time.time())}.{unique()}.localhost"
    tmp = folder / "tmp" / name
    tmp.write_bytes(data)
    dest = folder / "new" / name
    tmp.rename(dest)
    return dest


def maildir_set_flags(path: Path, flags: str) -> Path:
    """Moves a message to cur/ with exactly these maildir flags."""
    base = path.name.split(":2,", 1)[0]
    dest = path.parent.parent / "cur" / f"{base}:2,{''.join(sorted(flags))}"
    path.rename(dest)
    return dest


class Mbsync:
    def __init__(self, server, user: str, root: Path, mode: str):
        self.exe = tool("mbsync", "isync")
        self.root = root
        self.maildir = root / "Mail"
        self.maildir.mkdir(parents=True)
        self.rc = root / "mbsyncrc"
        port = server.ports["imaps"] if mode == "IMAPS" else server.ports["imap"]
        self.rc.write_text(f"""\
IMAPAccount msgd
Host 127.0.0.1
Port {port}
User {user}
Pass "{server.passwords[user]}"
SSLType {mode}
CertificateFile {server.cert_path}
AuthMechs LOGIN PLAIN

IMAPStore remote
Account msgd

MaildirStore local
Path {self.maildir}/
Inbox {self.maildir}/INBOX
SubFolders Verbatim

Channel msgd
Far :remote:
Near :local:
Patterns *
Create Both
Remove None
Expunge Both
SyncState *
Sync All
""")
        self.rc.chmod(0o600)

    def sync(self) -> str:
        env = dict(os.environ, HOME=str(self.root))
        res = run([self.exe, "-c", str(self.rc), "-V", "-a"], "mbsync", env=env)
        return res.stdout + res.stderr


@pytest.mark.parametrize("mode,user", [("IMAPS", MBSYNC_USERS[0]), ("STARTTLS", MBSYNC_USERS[1])])
def test_mbsync_two_way_sync(server, tmp_path, mode, user):
    sync = Mbsync(server, user, tmp_path, mode)
    inbox = sync.maildir / "INBOX"

    # -- initial state on the server: INBOX with three messages, a folder
    a, data_a = msg(user, "a")
    b, data_b = msg(user, "b")
    c, data_c = msg(user, "c")
    p1, data_p1 = msg(user, "p1")
    server_append(server, user, "INBOX", data_a)
    server_append(server, user, "INBOX", data_b)
    server_append(server, user, "INBOX", data_c, r"\Seen")
    server_create(server, user, "Projects")
    server_append(server, user, "Projects", data_p1, r"\Flagged")

    log = sync.sync()
    local = maildir_state(inbox)
    assert set(local) == {a, b, c}, f"first sync pulled {sorted(local)}\n{log}"
    assert local[c][1] == {r"\Seen"} and local[a][1] == set(), {k: v[1] for k, v in local.items()}
    # mbsync stores LF line ends in the Maildir
    assert lf(local[a][0].read_bytes()) == lf(data_a), "pulled message differs from the stored one"
    projects = maildir_state(sync.maildir / "Projects")
    assert set(projects) == {p1} and projects[p1][1] == {r"\Flagged"}, f"Projects: {projects}\n{log}"

    # -- changes on both sides
    l1, data_l1 = msg(user, "l1")
    maildir_deliver(inbox, data_l1)                       # new local mail
    l2, data_l2 = msg(user, "l2")
    maildir_deliver(sync.maildir / "Local", data_l2)      # new local folder
    maildir_set_flags(local[c][0], "RS")                  # local flag change: \Answered
    projects[p1][0].unlink()                              # local deletion
    s1, data_s1 = msg(user, "s1")
    server_append(server, user, "INBOX", data_s1)         # new server mail
    server_store(server, user, a, "+FLAGS", r"(\Flagged)")  # server flag change
    server_store(server, user, b, "+FLAGS", r"(\Deleted)", expunge=True)  # server deletion

    log = sync.sync()
    remote = server_state(server, user)
    assert set(remote) == {a, c, s1, l1}, f"server INBOX after sync: {sorted(remote)}\n{log}"
    assert remote[a] == {r"\Flagged"}, remote[a]
    assert remote[c] == {r"\Seen", r"\Answered"}, f"local flag change not pushed: {remote[c]}\n{log}"
    assert remote[l1] == set(), remote[l1]
    assert server_state(server, user, "Local") == {l2: set()}, f"local folder not created on the server\n{log}"
    assert server_state(server, user, "Projects") == {}, f"local deletion not propagated\n{log}"
    local = maildir_state(inbox)
    assert set(local) == {a, c, s1, l1}, f"local INBOX after sync: {sorted(local)}\n{log}"
    assert local[a][1] == {r"\Flagged"}, f"server flag change not pulled: {local[a][1]}\n{log}"
    assert lf(local[s1][0].read_bytes()) == lf(data_s1)
    assert maildir_state(sync.maildir / "Projects") == {}

    # -- a deletion and a flag change made locally, then nothing left to do
    maildir_set_flags(local[s1][0], "FS")
    local[l1][0].unlink()
    log = sync.sync()
    remote = server_state(server, user)
    assert set(remote) == {a, c, s1}, f"server INBOX: {sorted(remote)}\n{log}"
    assert remote[s1] == {r"\Flagged", r"\Seen"}, remote[s1]
    before_local = {k: v[1] for k, v in maildir_state(inbox).items()}
    log = sync.sync()
    assert server_state(server, user) == remote, f"an idle sync changed the server\n{log}"
    assert {k: v[1] for k, v in maildir_state(inbox).items()} == before_local, "an idle sync changed the Maildir"


# --------------------------------------------------------------------------
# fetchmail


class Fetchmail:
    def __init__(self, server, user: str, root: Path, protocol: str, keep: bool):
        self.exe = tool("fetchmail", "fetchmail")
        self.root = root
        self.out = root / "delivered"
        self.out.mkdir(parents=True)
        deliver = root / "deliver.sh"
        deliver.write_text(f'#!/bin/sh\nexec cat > "$(mktemp {self.out}/msg.XXXXXX)"\n')
        deliver.chmod(0o755)
        if protocol == "POP3":
            # STLS on the plain port: sslproto makes STARTTLS mandatory.
            port, tls = server.ports["pop3"], 'sslproto "TLS1.2+"'
        else:
            port, tls = server.ports["imaps"], "ssl"
        self.rc = root / "fetchmailrc"
        self.rc.write_text(f"""\
set no bouncemail
set no syslog
poll 127.0.0.1 port {port} protocol {protocol} auth password timeout 30
  user "{user}" there with password "{server.passwords[user]}" is "root" here
  {tls} sslcertck sslcertfile "{server.cert_path}" sslcommonname "{CERT_NAME}"
  mda "{deliver}"
  {"keep" if keep else "nokeep"}
""")
        self.rc.chmod(0o600)

    def fetch(self, expect_mail: bool = True) -> str:
        env = dict(os.environ, HOME=str(self.root), FETCHMAILHOME=str(self.root))
        # exit 0: mail delivered; 1: no mail
        res = run([self.exe, "-f", str(self.rc), "-v", "--nodetach", "--pidfile", str(self.root / "pid")],
                  "fetchmail", env=env, ok_codes=(0,) if expect_mail else (1,))
        return res.stdout + res.stderr

    def delivered(self) -> dict[str, bytes]:
        out = {}
        for f in self.out.iterdir():
            data = f.read_bytes()
            mid = mid_of(data)
            assert mid, f"delivered file {f} has no Message-ID: {data[:300]!r}"
            assert mid not in out, f"{mid} delivered twice"
            out[mid] = data
        return out


def seed_inbox(server, user: str, n: int = 3) -> dict[str, bytes]:
    msgs = {}
    for i in range(n):
        mid, data = msg(user, f"fm{i}")
        server_append(server, user, "INBOX", data)
        msgs[mid] = data
    return msgs


def assert_delivered(got: dict[str, bytes], sent: dict[str, bytes], log: str) -> None:
    assert set(got) == set(sent), f"delivered {sorted(got)}, expected {sorted(sent)}\n{log}"
    for mid, data in sent.items():
        # fetchmail prepends its own Received: header and may turn CRLF
        # into LF for the MDA; the message itself must be intact.
        norm = got[mid].replace(b"\r\n", b"\n")
        assert norm.endswith(data.replace(b"\r\n", b"\n")), (
            f"{mid}: delivered copy differs:\n{got[mid][:600]!r}\nwant\n{data[:600]!r}"
        )


@pytest.mark.parametrize("protocol,keep,user", [
    ("POP3", False, FETCH_USERS[0]),
    ("POP3", True, FETCH_USERS[1]),
    ("IMAP", False, FETCH_USERS[2]),
    ("IMAP", True, FETCH_USERS[3]),
])
def test_fetchmail_retrieves_over_tls(server, tmp_path, protocol, keep, user):
    sent = seed_inbox(server, user)
    fm = Fetchmail(server, user, tmp_path, protocol, keep)
    log = fm.fetch()
    assert "SSL/TLS: using protocol" in log, f"fetchmail did not use TLS\n{log}"
    assert_delivered(fm.delivered(), sent, log)
    remote = server_state(server, user)
    if not keep:
        assert remote == {}, f"--nokeep left messages on the server: {sorted(remote)}\n{log}"
        return
    assert set(remote) == set(sent), f"--keep: server now holds {sorted(remote)}\n{log}"
    if protocol == "IMAP":
        # fetchmail marks what it fetched \Seen and fetches only unseen mail
        assert all(r"\Seen" in f for f in remote.values()), remote
        log2 = fm.fetch(expect_mail=False)
        assert len(fm.delivered()) == len(sent), f"a second run fetched again\n{log2}"
    else:
        # POP3 without UIDL bookkeeping fetches the kept messages again
        p = server.pop3(user)
        try:
            count, _ = p.stat()
        finally:
            p.quit()
        assert count == len(sent), f"POP3 STAT after --keep: {count}"
