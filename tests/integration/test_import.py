"""`msgd import` from Maildir and mbox and `msgd export` to Maildir
(issue 14, "Moving and migrating"), against the real binary:

- a Maildir made like Dovecot's (Maildir++ subfolders, `:2,` flags,
  `dovecot-keywords`, mtimes as dates) and one written by mbsync from
  another account show the same messages, flags and dates over IMAP;
- an mbox written by Python's `mailbox.mbox` and a mutt-style one with
  Status/X-Status headers, into `--mailbox`;
- re-running an import adds nothing; it works with the server running and
  with it stopped (the CLI opens the store itself);
- export to a Maildir that Python's `mailbox.Maildir` and mbsync read back;
- hostile inputs: not an mbox, oversized lines, NUL bytes, symlinks, bad
  folder names, a destination with a symlinked folder, mailbox names with
  `..` and `/` -- clear errors (exit 1), nothing written outside DEST.
"""

from __future__ import annotations

import calendar
import email.utils
import json
import mailbox
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import imap_fetch_pairs, imap_ok, unique

SRC_USER = "imp-src@example.test"
USERS = (
    "imp-dove@example.test",
    "imp-dove2@example.test",
    "imp-mbsync@example.test",
    SRC_USER,
    "imp-mbox@example.test",
    "imp-mutt@example.test",
    "imp-hostile@example.test",
    "imp-export@example.test",
    "imp-back@example.test",
)

FLAG_RE = re.compile(rb"FLAGS \(([^)]*)\)")
DATE_RE = re.compile(rb'INTERNALDATE "([^"]+)"')
MID_RE = re.compile(rb"(?im)^Message-ID:\s*<([^>]+)>")


def tool(name: str, package: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.fail(f"{name} is not installed: apt-get install -y {package} "
                    f"(or run scripts/install-test-deps.sh)", pytrace=False)
    return exe


def cli_ok(server, *args) -> dict:
    res = server.cli(*args, "--json")
    assert res.returncode == 0, f"msgd {' '.join(args)} exited {res.returncode}\n{res.stdout}\n{res.stderr}"
    return json.loads(res.stdout)


def cli_fails(server, *args) -> str:
    res = server.cli(*args)
    assert res.returncode == 1, f"msgd {' '.join(args)} exited {res.returncode} (want 1)\n{res.stdout}\n{res.stderr}"
    return res.stderr


def mutf7(name: str) -> str:
    """A mailbox name in modified UTF-7 (RFC 3501 5.1.3), for the wire."""
    out, run = [], []

    def flush():
        if run:
            b = "".join(run).encode("utf-16-be")
            import base64
            out.append("&" + base64.b64encode(b).decode().rstrip("=").replace("/", ",") + "-")
            run.clear()
    for c in name:
        if " " <= c <= "~":
            flush()
            out.append("&-" if c == "&" else c)
        else:
            run.append(c)
    flush()
    return "".join(out)


def state(server, user: str, box: str = "INBOX") -> dict[str, tuple[set[str], int, bytes]]:
    """{message-id: ({flags}, internaldate epoch, body)} of one mailbox over IMAP."""
    m = server.imap(user)
    try:
        typ, data = m.select(f'"{mutf7(box)}"', readonly=True)
        assert typ == "OK", f"SELECT {box}: {data}"
        if int(data[0]) == 0:
            return {}
        typ, data = m.fetch("1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
        imap_ok((typ, data), "FETCH")
        out = {}
        for meta, body in imap_fetch_pairs(data):
            flags = set(FLAG_RE.search(meta).group(1).decode().split())
            flags.discard("\\Recent")
            date = email.utils.parsedate_to_datetime(
                DATE_RE.search(meta).group(1).decode().replace("-", " ", 2)).timestamp()
            mid = MID_RE.search(body).group(1).decode()
            assert mid not in out, f"{mid} twice in {box}"
            out[mid] = (flags, int(date), body)
        return out
    finally:
        m.logout()


def mailboxes(server, user: str) -> set[str]:
    m = server.imap(user)
    try:
        typ, data = m.list()
        imap_ok((typ, data), "LIST")
        return {re.search(rb'"([^"]*)"$|(\S+)$', d).group(0).decode().strip('"') for d in data}
    finally:
        m.logout()


def message(mid: str, subject: str, body: str = "Hello.\nSecond line.\n") -> bytes:
    return (f"From: a@remote.example\nTo: x@example.test\nSubject: {subject}\n"
            f"Message-ID: <{mid}>\nDate: Mon, 1 Jun 2020 10:00:00 +0000\n\n{body}").encode()


def put(folder: Path, sub: str, name: str, data: bytes, mtime: int) -> Path:
    for s in ("cur", "new", "tmp"):
        (folder / s).mkdir(parents=True, exist_ok=True)
    p = folder / sub / name
    p.write_bytes(data)
    os.utime(p, (mtime, mtime))
    return p


# --------------------------------------------------------------------------
# Maildir


def dovecot_maildir(root: Path) -> dict[str, dict[str, tuple[set[str], int]]]:
    """A Maildir as Dovecot leaves it; returns {mailbox: {mid: (flags, date)}}."""
    want: dict[str, dict[str, tuple[set[str], int]]] = {"INBOX": {}, "Work/Projects": {}, "Sent": {}, "Entwürfe": {}}
    (root / "dovecot-keywords").parent.mkdir(parents=True, exist_ok=True)
    n = 0

    def add(box, folder, sub, info, flags, kwfile=None):
        nonlocal n
        n += 1
        mid = f"dove{n}-{unique()}@example.test"
        data = message(mid, f"dove {n}")
        date = 1_600_000_000 + n * 3600
        lines = data.count(b"\n")
        name = f"{date}.M{n}P42.dovehost,S={len(data)},W={len(data) + lines}"
        if sub == "cur":
            name += f":2,{info}"
        put(folder, sub, name, data, date)
        want[box][mid] = (flags, date)

    (root / "cur").mkdir(parents=True, exist_ok=True)
    (root / "dovecot-keywords").write_text("0 $Junk\n1 Important\n")
    add("INBOX", root, "new", "", set())
    add("INBOX", root, "cur", "S", {"\\Seen"})
    add("INBOX", root, "cur", "FRSab", {"\\Flagged", "\\Answered", "\\Seen", "$Junk", "Important"})
    add("INBOX", root, "cur", "DT", {"\\Draft", "\\Deleted"})
    add("INBOX", root, "cur", "PS", {"$Forwarded", "\\Seen"})
    proj = root / ".Work.Projects"
    add("Work/Projects", proj, "cur", "Sa", {"\\Seen", "Later"})
    (proj / "dovecot-keywords").write_text("0 Later\n")
    (proj / "maildirfolder").touch()
    add("Work/Projects", proj, "cur", "", set())
    add("Sent", root / ".Sent", "cur", "S", {"\\Seen"})
    add("Entwürfe", root / ".Entw&APw-rfe", "cur", "D", {"\\Draft"})
    return want


def check(server, user, want):
    for box, msgs in want.items():
        got = state(server, user, box)
        assert set(got) == set(msgs), f"{box}: got {sorted(got)}, want {sorted(msgs)}"
        for mid, (flags, date) in msgs.items():
            assert got[mid][0] == flags, f"{box} {mid}: flags {got[mid][0]}, want {flags}"
            assert got[mid][1] == date, f"{box} {mid}: date {got[mid][1]}, want {date}"


def test_import_dovecot_maildir_keeps_folders_flags_dates_and_reruns_add_nothing(server, tmp_path):
    user = "imp-dove@example.test"
    src = tmp_path / "Maildir"
    want = dovecot_maildir(src)
    r = cli_ok(server, "import", user, str(src))
    assert r["imported"] == 9 and r["already_there"] == 0, r
    assert {"INBOX", "Work/Projects", "Sent", "Entwürfe"} <= set(r["mailboxes"]), r
    check(server, user, want)
    assert {"Work", "Work/Projects", "Entw&APw-rfe"} <= mailboxes(server, user)
    # the body is served with CRLF line ends
    body = next(iter(state(server, user, "Sent").values()))[2]
    assert b"\r\n\r\nHello.\r\nSecond line.\r\n" in body
    # idempotent: a second run adds nothing
    r = cli_ok(server, "import", user, str(src))
    assert r["imported"] == 0 and r["already_there"] == 9, r
    check(server, user, want)
    # a new message since: only it is added
    mid = f"late-{unique()}@example.test"
    put(src, "cur", f"1700000000.M99P1.dovehost:2,F", message(mid, "late"), 1_700_000_000)
    r = cli_ok(server, "import", user, str(src))
    assert r["imported"] == 1 and r["already_there"] == 9, r
    want["INBOX"][mid] = ({"\\Flagged"}, 1_700_000_000)
    check(server, user, want)


def test_import_works_with_the_server_stopped(msgd_factory, tmp_path):
    user = "imp-off@example.test"
    inst = msgd_factory(users=(user,), start=False)
    src = tmp_path / "Maildir"
    want = dovecot_maildir(src)
    r = cli_ok(inst, "import", user, str(src), "--mailbox", "Old")
    assert r["imported"] == 9, r
    inst.start()
    want = {("Old" if b == "INBOX" else f"Old/{b}"): v for b, v in want.items()}
    check(inst, user, want)


def test_import_maildir_written_by_mbsync(server, tmp_path):
    exe = tool("mbsync", "isync")
    src_user, user = SRC_USER, "imp-mbsync@example.test"
    want = {"INBOX": {}, "Projects/2026": {}}
    m = server.imap(src_user)
    try:
        imap_ok(m.create("Projects/2026"), "CREATE")
        for box, flags in [("INBOX", r"(\Seen)"), ("INBOX", r"(\Flagged \Answered)"), ("INBOX", "()"),
                           ("Projects/2026", r"(\Seen \Draft)")]:
            mid = f"sync-{unique()}@example.test"
            data = message(mid, "via mbsync").replace(b"\n", b"\r\n")
            imap_ok(m.append(box, flags, '"01-Jun-2021 10:00:00 +0000"', data), "APPEND")
            want[box][mid] = (set(flags.strip("()").split()), calendar.timegm((2021, 6, 1, 10, 0, 0)))
    finally:
        m.logout()
    maildir = tmp_path / "Mail"
    maildir.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(f"""\
IMAPAccount msgd
Host 127.0.0.1
Port {server.ports["imap"]}
User {src_user}
Pass "{server.passwords[src_user]}"
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account msgd

MaildirStore local
Inbox {maildir}
SubFolders Maildir++

Channel msgd
Far :remote:
Near :local:
Patterns *
Create Near
Sync Pull
SyncState *
""")
    rc.chmod(0o600)
    res = subprocess.run([exe, "-c", str(rc), "-a"], capture_output=True, text=True, timeout=90,
                         env=dict(os.environ, HOME=str(tmp_path)), stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"mbsync: {res.stdout}\n{res.stderr}"
    assert (maildir / ".Projects.2026" / "cur").is_dir(), list(maildir.iterdir())
    r = cli_ok(server, "import", user, str(maildir))
    assert r["imported"] == 4, r
    # mbsync sets the files' mtimes from INTERNALDATE, so dates survive too
    for box, msgs in want.items():
        got = state(server, user, box)
        assert set(got) == set(msgs), f"{box}: {sorted(got)} vs {sorted(msgs)}"
        for mid, (flags, _date) in msgs.items():
            assert got[mid][0] == flags, f"{box} {mid}: {got[mid][0]} want {flags}"


# --------------------------------------------------------------------------
# mbox


def test_import_python_mbox_into_a_named_mailbox(server, tmp_path):
    user = "imp-mbox@example.test"
    path = tmp_path / "saved.mbox"
    box = mailbox.mbox(str(path))
    want = {}
    specs = [("", set()), ("RO", {"\\Seen"}), ("RAF", {"\\Seen", "\\Answered", "\\Flagged"}), ("D", {"\\Deleted"})]
    for i, (pyflags, flags) in enumerate(specs):
        mid = f"pymbox{i}-{unique()}@example.test"
        body = "Hello.\nFrom here on a line of its own.\n>From quoted already.\n"
        msg = mailbox.mboxMessage(message(mid, f"py {i}", body))
        msg.set_flags(pyflags)
        date = 1_500_000_000 + i * 86400
        msg.set_from("sender@remote.example", time.gmtime(date))
        box.add(msg)
        want[mid] = (flags, date)
    box.flush()
    box.close()
    r = cli_ok(server, "import", user, str(path), "--mailbox", "Archive/2017")
    assert r["imported"] == 4 and r["format"] == "mbox", r
    got = state(server, user, "Archive/2017")
    assert set(got) == set(want)
    for mid, (flags, date) in want.items():
        assert got[mid][0] == flags, f"{mid}: {got[mid][0]} want {flags}"
        assert got[mid][1] == date
        body = got[mid][2]
        # Python quoted the body's From line (mboxo); mboxrd reading undoes it
        assert b"\r\nFrom here on a line of its own.\r\n" in body, body
        assert b"Status:" not in body and b"X-Status:" not in body
    # re-run: nothing doubled
    r = cli_ok(server, "import", user, str(path), "--mailbox", "Archive/2017")
    assert r["imported"] == 0 and r["already_there"] == 4, r
    assert len(state(server, user, "Archive/2017")) == 4


def test_import_mutt_mbox_with_status_headers(server, tmp_path):
    user = "imp-mutt@example.test"
    mids = [f"mutt{i}-{unique()}@example.test" for i in range(3)]
    text = (
        f"From alice@example.test Tue Mar  3 09:00:00 2015\n"
        f"From: alice@example.test\nSubject: one\nMessage-ID: <{mids[0]}>\nStatus: RO\nX-Status: A\n\nbody one\n>From me\n>>From deeper\n\n"
        f"From bob@example.test Wed Mar  4 09:00:00 2015\n"
        f"From: bob@example.test\nSubject: two\nMessage-ID: <{mids[1]}>\nStatus: O\nX-Status: FT\n"
        f"X-Keywords: $Label1 project\n\nbody two\n\n"
        f"From carol@example.test Thu Mar  5 09:00:00 2015\n"
        f"From: carol@example.test\nSubject: three\nMessage-ID: <{mids[2]}>\n\nbody three\n"
    )
    path = tmp_path / "mutt-mbox"
    path.write_text(text)
    r = cli_ok(server, "import", user, str(path))
    assert r["imported"] == 3, r
    got = state(server, user)
    assert got[mids[0]][0] == {"\\Seen", "\\Answered"}
    assert got[mids[1]][0] == {"\\Flagged", "\\Draft", "$Label1", "project"}
    assert got[mids[2]][0] == set()
    assert got[mids[0]][1] == calendar.timegm((2015, 3, 3, 9, 0, 0))
    assert b"body one\r\nFrom me\r\n>From deeper\r\n" in got[mids[0]][2]
    assert got[mids[2]][2].endswith(b"body three\r\n")


# --------------------------------------------------------------------------
# hostile inputs


def test_import_refuses_hostile_inputs_with_clear_errors(msgd_factory, tmp_path):
    user = "imp-hostile@example.test"
    inst = msgd_factory(users=(user,), start=False)
    with open(inst.config_path, "a") as f:
        f.write("\n[smtp]\nmax_message_size = 100000\n")
    inst.start()
    # not an mbox: a binary file
    binary = tmp_path / "binary"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00" + os.urandom(4096))
    err = cli_fails(inst, "import", user, str(binary))
    assert "not an mbox" in err, err
    # an mbox with a huge line, a NUL byte, and one good message
    good = f"good-{unique()}@example.test"
    mb = tmp_path / "hostile.mbox"
    with open(mb, "wb") as f:
        f.write(b"From x Wed Dec  2 08:19:40 2026\nSubject: huge\n\n")
        f.write(b"A" * 5_000_000 + b"\n")
        f.write(b"From y Wed Dec  2 08:19:40 2026\nSubject: nul\n\nx\x00y\n")
        f.write(b"From z Wed Dec  2 08:19:40 2026\n" + message(good, "good") + b"\n")
    err = cli_fails(inst, "import", user, str(mb))
    assert "refused 2" in err and "message limit" in err and "NUL" in err, err
    assert good in state(inst, user)
    # a Maildir with a symlink to a file outside, a bad folder name, a big file
    md = tmp_path / "Maildir"
    ok = f"okmd-{unique()}@example.test"
    put(md, "cur", "1.M1P1.h:2,S", message(ok, "fine"), 1_000_000_000)
    os.symlink("/etc/passwd", md / "cur" / "2.M2P2.h:2,S")
    put(md / ".a..b", "cur", "3.M3.h:2,", message("x@y", "bad folder"), 1_000_000_000)
    put(md, "new", "4.M4.h", b"Subject: big\n\n" + b"B" * 200_000, 1_000_000_000)
    err = cli_fails(inst, "import", user, str(md), "--mailbox", "FromMaildir")
    assert "refused 3" in err, err
    assert "not a regular file" in err and "empty level" in err and "message limit" in err, err
    assert set(state(inst, user, "FromMaildir")) == {ok}
    assert "a" not in mailboxes(inst, user) and "a/b" not in mailboxes(inst, user)
    # a source that is neither
    err = cli_fails(inst, "import", user, str(tmp_path / "nothing-here"))
    assert "nothing-here" in err
    # an unknown user
    err = cli_fails(inst, "import", "nobody@example.test", str(mb))
    assert "no such user" in err


# --------------------------------------------------------------------------
# export


def test_export_is_read_back_by_python_and_mbsync_and_stays_inside_dest(server, tmp_path):
    user, back = "imp-export@example.test", "imp-back@example.test"
    m = server.imap(user)
    want: dict[str, dict[str, set[str]]] = {"INBOX": {}, "Lists/rust.users": {}, "../escape": {}}
    try:
        for box in want:
            if box != "INBOX":
                imap_ok(m.create(f'"{box}"'), f"CREATE {box}")
        for box, flags in [("INBOX", r"(\Seen)"), ("INBOX", r"(\Flagged \Answered work)"),
                           ("INBOX", r"(\Draft)"), ("Lists/rust.users", r"(\Seen $Forwarded)"),
                           ("../escape", "()")]:
            mid = f"exp-{unique()}@example.test"
            data = message(mid, "export me").replace(b"\n", b"\r\n")
            imap_ok(m.append(f'"{box}"', flags, '"02-Jan-2022 03:04:05 +0000"', data), "APPEND")
            want[box][mid] = set(flags.strip("()").split())
    finally:
        m.logout()
    dest = tmp_path / "export"
    r = cli_ok(server, "export", user, str(dest))
    assert r["written"] == 5, r
    # nothing outside DEST
    assert not (tmp_path / "escape").exists() and not (tmp_path / ".escape").exists()
    assert all(str(p.resolve()).startswith(str(dest)) for p in dest.rglob("*"))
    # Python's Maildir reader (Maildir++ folders)
    md = mailbox.Maildir(str(dest), factory=None, create=False)
    folders = set(md.list_folders())
    assert folders == {"Lists", "Lists.rust&AC4-users", "&AC4-&AC4-", "&AC4-&AC4-.escape",
                       "Sent", "Drafts", "Trash", "Junk"}, folders
    letters = {"\\Seen": "S", "\\Flagged": "F", "\\Answered": "R", "\\Draft": "D", "$Forwarded": "P"}

    def check_folder(box, folder):
        got = {}
        for key in folder.keys():
            msg = folder.get_message(key)
            got[msg["Message-ID"].strip("<>")] = msg
        assert set(got) == set(want[box]), f"{box}: {sorted(got)}"
        for mid, flags in want[box].items():
            expect = "".join(sorted(letters[f] for f in flags if f in letters))
            kw = {f for f in flags if f not in letters}
            assert "".join(c for c in got[mid].get_flags() if c.isupper()) == expect, \
                (mid, got[mid].get_flags(), expect)
            assert got[mid].get_date() == calendar.timegm((2022, 1, 2, 3, 4, 5))
            assert b"\r\n" not in bytes(got[mid]), "Maildir files use LF"
            if kw:
                kwfile = Path(folder._path) / "dovecot-keywords"
                kws = dict(line.split(" ", 1) for line in kwfile.read_text().splitlines())
                lower = [c for c in got[mid].get_flags() if c.islower()]
                assert {kws[str(ord(c) - ord("a"))] for c in lower} == kw

    check_folder("INBOX", md)
    check_folder("Lists/rust.users", md.get_folder("Lists.rust&AC4-users"))
    # a second export adds nothing
    r = cli_ok(server, "export", user, str(dest))
    assert r["written"] == 0 and r["already_there"] == 5, r
    # the export imports back to the same state
    r = cli_ok(server, "import", back, str(dest))
    assert r["imported"] == 5, r
    for box, msgs in want.items():
        got = state(server, back, box)
        assert {k: v[0] for k, v in got.items()} == msgs, box
    # mbsync reads it as a Maildir++ store and pushes it to an account
    exe = tool("mbsync", "isync")
    target = "imp-dove2@example.test"
    rc = tmp_path / "mbsyncrc"
    rc.write_text(f"""\
IMAPAccount msgd
Host 127.0.0.1
Port {server.ports["imap"]}
User {target}
Pass "{server.passwords[target]}"
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account msgd

MaildirStore local
Inbox {dest}
SubFolders Maildir++

Channel push
Far :remote:
Near :local:
Patterns INBOX
Create Far
Sync Push
SyncState {tmp_path}/mbsync-state/
""")
    rc.chmod(0o600)
    (tmp_path / "mbsync-state").mkdir()
    res = subprocess.run([exe, "-c", str(rc), "-a"], capture_output=True, text=True, timeout=90,
                         env=dict(os.environ, HOME=str(tmp_path)), stdin=subprocess.DEVNULL)
    assert res.returncode == 0, f"mbsync: {res.stdout}\n{res.stderr}"
    got = state(server, target)
    base = {f for f in ("\\Seen", "\\Flagged", "\\Answered", "\\Draft")}
    assert {k: v[0] & base for k, v in got.items()} == {k: v & base for k, v in want["INBOX"].items()}


def test_export_refuses_a_symlinked_folder_in_dest(server, tmp_path):
    user = "imp-export@example.test"
    dest = tmp_path / "dest"
    elsewhere = tmp_path / "elsewhere"
    dest.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, dest / ".Lists.rust&AC4-users")
    err = cli_fails(server, "export", user, str(dest))
    assert "symlinks are refused" in err, err
    assert list(elsewhere.iterdir()) == []
