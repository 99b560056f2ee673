"""Issue 14, data safety: `msgd reconstruct`, `msgd verify [--repair]`,
`msgd expire` against the real binary, with and without a running server.

- reconstruct after deleting the mboxlist (server stopped) restores every
  message with its UID, flags at delivery, INTERNALDATE, the mailbox names
  and UIDVALIDITY; for one user on a running server it replaces that
  user's index only;
- verify finds a deleted file, a corrupted one and an orphan, `--repair`
  fixes them, and the command exits 1 while problems remain;
- expire removes by age, size and flag per rule and leaves the rest,
  purges expunged files only after the grace, and trims the expunged
  table: QRESYNC within the kept window gets the exact VANISHED set, an
  older client every missing UID (RFC 7162 3.2.5.2).
"""

from __future__ import annotations

import imaplib
import json
import os
import re
import shutil
import time
from pathlib import Path

from conftest import DOMAIN, LineClient, imap_ok

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
CAROL = f"carol@{DOMAIN}"
DAVE = f"dave@{DOMAIN}"
ERIN = f"erin@{DOMAIN}"
FRANK = f"frank@{DOMAIN}"


def message(subject: str, body: str = "hello", extra: str = "") -> bytes:
    return (
        f"From: sender@remote.example\r\nTo: someone@{DOMAIN}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@remote.example>\r\n{extra}\r\n{body}\r\n"
    ).encode()


def append(m: imaplib.IMAP4, mailbox: str, data: bytes, flags: str = "", date: str | None = None) -> int:
    typ, resp = m.append(mailbox, flags or None, date, data)
    assert typ == "OK", resp
    mo = re.search(rb"APPENDUID \d+ (\d+)", resp[-1])
    assert mo, resp
    return int(mo.group(1))


def mailbox_state(m: imaplib.IMAP4, mailbox: str) -> dict:
    """UIDVALIDITY, UIDNEXT and per UID (flags without \\Recent, date, size, body)."""
    typ, data = m.select(f'"{mailbox}"', readonly=True)
    assert typ == "OK", data
    uidvalidity = int(m.untagged_responses.get("UIDVALIDITY", [b"0"])[-1])
    typ, st = m.status(f'"{mailbox}"', "(UIDNEXT UIDVALIDITY MESSAGES)")
    assert typ == "OK", st
    uidnext = int(re.search(rb"UIDNEXT (\d+)", st[0]).group(1))
    msgs = {}
    if int(data[0]) > 0:
        typ, resp = m.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
        assert typ == "OK", resp
        for item in resp:
            if not isinstance(item, tuple):
                continue
            head = item[0].decode()
            uid = int(re.search(r"UID (\d+)", head).group(1))
            flags = set(re.search(r"FLAGS \(([^)]*)\)", head).group(1).split()) - {"\\Recent"}
            date = re.search(r'INTERNALDATE "([^"]+)"', head).group(1)
            msgs[uid] = (flags, date, item[1])
    return {"uidvalidity": uidvalidity, "uidnext": uidnext, "messages": msgs}


def user_dir(srv, user: str) -> Path:
    found = [p for p in srv.data_dir.rglob(user) if p.is_dir()]
    assert len(found) == 1, f"user folder of {user}: {found}"
    return found[0]


def mailbox_dirs(srv, user: str) -> dict[str, Path]:
    """Mailbox name -> folder, from the folders' `mailbox` record files."""
    out = {}
    for d in user_dir(srv, user).iterdir():
        rec = d / "mailbox"
        if rec.is_file():
            out[json.loads(rec.read_text())["name"]] = d
    return out


def partition_of(srv, user: str) -> Path:
    return user_dir(srv, user).parent.parent


def cli_json(srv, *args: str, expect: int = 0) -> dict:
    res = srv.cli(*args, "--json")
    assert res.returncode == expect, f"msgd {' '.join(args)}: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return json.loads(res.stdout)


def add_expire_config(srv, text: str) -> None:
    srv.config_path.write_text(srv.config_path.read_text() + "\n" + text + "\n")


# --------------------------------------------------------------------------
# reconstruct


def test_reconstruct_after_deleting_the_mboxlist_restores_uids_flags_uidvalidity_names(msgd_factory):
    srv = msgd_factory(users=[ALICE])
    for i in range(3):
        srv.send(ALICE, message(f"delivered {i}"))
    srv.wait_count(ALICE, 3)
    m = srv.imap(ALICE)
    imap_ok(m.create('"Projects/2026"'))
    append(m, "Projects/2026", message("flagged one"), r"(\Flagged $Label)", '"01-Feb-2024 10:00:00 +0100"')
    append(m, "Projects/2026", message("seen one"), r"(\Seen)", '"02-Feb-2024 11:30:00 -0500"')
    append(m, "Projects/2026", message("gone"), r"(\Deleted)")
    m.select('"Projects/2026"')
    imap_ok(m.expunge())
    # Renamed after creation: the new name must come back.
    imap_ok(m.create("Old"))
    append(m, "Old", message("in renamed"))
    imap_ok(m.rename("Old", "Renamed"))
    before = {name: mailbox_state(m, name) for name in ("INBOX", "Projects/2026", "Renamed")}
    m.logout()
    srv.stop()

    db = srv.data_dir / "mboxlist" / "mboxlist.redb"
    assert db.is_file()
    db.unlink()
    res = srv.cli("reconstruct", "--all")
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}"
    assert ALICE in res.stdout and "Projects/2026" in res.stdout, res.stdout

    srv.start()
    m = srv.imap(ALICE)
    for name, was in before.items():
        now = mailbox_state(m, name)
        assert now["uidvalidity"] == was["uidvalidity"], name
        assert now["messages"] == was["messages"], name
        # The expunged UID is not handed out again.
        assert now["uidnext"] >= was["uidnext"], name
    typ, names = m.list()
    listed = b"\n".join(names)
    assert b"Projects/2026" in listed and b"Renamed" in listed and b'"Old"' not in listed
    # Delivery goes on with the next UID.
    srv.send(ALICE, message("after"))
    srv.wait_count(ALICE, 4)
    st = mailbox_state(m, "INBOX")
    assert max(st["messages"]) == before["INBOX"]["uidnext"]
    m.logout()


def test_reconstruct_one_user_on_a_running_server(msgd_factory):
    srv = msgd_factory(users=[BOB, CAROL])
    for i in range(4):
        srv.send([BOB, CAROL], message(f"m{i}"))
    srv.wait_count(BOB, 4)
    srv.wait_count(CAROL, 4)
    m = srv.imap(BOB)
    append(m, "INBOX", message("kw"), "($Important)")
    before = mailbox_state(m, "INBOX")
    carol_before = srv.imap(CAROL)
    carol_state = mailbox_state(carol_before, "INBOX")

    v = cli_json(srv, "reconstruct", BOB)
    assert v["online"] is True
    assert [u["user"] for u in v["users"]] == [BOB]
    assert v["messages"] == 5
    assert v["problems"] == 0

    after = mailbox_state(m, "INBOX")
    assert after["uidvalidity"] == before["uidvalidity"]
    assert after["messages"] == before["messages"]
    assert mailbox_state(carol_before, "INBOX") == carol_state
    m.logout()
    carol_before.logout()
    # Failure: a user with no folder, a clear message and exit 1.
    res = srv.cli("reconstruct", f"nobody@{DOMAIN}")
    assert res.returncode == 1
    assert "no folder for nobody@" in res.stderr, res.stderr
    res = srv.cli("reconstruct")
    assert res.returncode == 1 and "give a user or --all" in res.stderr, res.stderr


# --------------------------------------------------------------------------
# verify


def test_verify_finds_missing_corrupted_and_orphan_files_and_repair_fixes_them(msgd_factory):
    srv = msgd_factory(users=[DAVE])
    for i in range(4):
        srv.send(DAVE, message(f"v{i}", body="body " * 50))
    srv.wait_count(DAVE, 4)
    clean = cli_json(srv, "verify", DAVE)
    assert clean["problems"] == 0 and clean["users"][0]["entries"] == 4

    m = srv.imap(DAVE)
    m.select("INBOX")
    imap_ok(m.uid("STORE", "4", "+FLAGS", r"(\Deleted)"))
    imap_ok(m.expunge())
    inbox = mailbox_dirs(srv, DAVE)["INBOX"]
    (inbox / "1.msg").unlink()
    corrupt = inbox / "2.msg"
    data = bytearray(corrupt.read_bytes())
    data[-5] ^= 0x20  # same size, other bytes
    corrupt.write_bytes(bytes(data))
    # The expunged message's file comes back: an orphan.
    aside = list((partition_of(srv, DAVE) / "expunged").rglob("*.4.msg"))
    assert len(aside) == 1, aside
    shutil.copy(aside[0], inbox / "4.msg")

    v = cli_json(srv, "verify", DAVE, expect=1)
    kinds = sorted((p["kind"], p["uid"]) for p in v["users"][0]["problems"])
    assert kinds == [("checksum", 2), ("missing", 1), ("orphan", 4)], v
    res = srv.cli("verify", DAVE)
    assert res.returncode == 1 and "3 problems remain" in res.stderr, res.stderr
    assert "checksum" in res.stdout and "missing" in res.stdout

    res = srv.cli("verify", "--repair", DAVE)
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}"
    assert cli_json(srv, "verify", DAVE)["problems"] == 0
    lost = partition_of(srv, DAVE) / "lost+found"
    assert len(list(lost.iterdir())) == 2
    # Clients see the removed entries as expunged.
    m.noop()
    typ, data = m.uid("SEARCH", "ALL")
    assert data[0].split() == [b"3"]
    m.logout()


# --------------------------------------------------------------------------
# expire


EXPIRE_RULES = """
[store.expire]
interval = 0
purge_after = {grace}
expunged_keep = 2

[[store.expire.rule]]
mailbox = "Trash"
max_age_days = 30

[[store.expire.rule]]
mailbox = "*"
max_size = 20000

[[store.expire.rule]]
mailbox = "Junk"
flags = ["seen"]
"""


def test_expire_removes_by_age_size_and_flag_and_purges_after_the_grace(msgd_factory):
    srv = msgd_factory(users=[ERIN], start=False)
    add_expire_config(srv, EXPIRE_RULES.format(grace=3600))
    srv.start()
    m = srv.imap(ERIN)
    append(m, "INBOX", message("small"))
    append(m, "INBOX", message("big", body="x" * 30000))
    append(m, "Trash", message("old trash"))
    append(m, "Trash", message("new trash"))
    append(m, "Junk", message("seen junk"), r"(\Seen)")
    append(m, "Junk", message("unseen junk"))
    # Age: the old Trash message entered 40 days ago (reconstruct takes
    # the date a message entered its mailbox from its file).
    old = mailbox_dirs(srv, ERIN)["Trash"] / "1.msg"
    forty_days = time.time() - 40 * 86400
    os.utime(old, (forty_days, forty_days))
    cli_json(srv, "reconstruct", ERIN)

    dry = cli_json(srv, "expire", "--dry-run")
    assert dry["removed"] == 3 and dry["dry_run"] is True
    assert mailbox_state(m, "Trash")["messages"].keys() == {1, 2}

    v = cli_json(srv, "expire")
    assert v["removed"] == 3, v
    assert v["partitions"][0]["by_rule"] == [1, 1, 1]
    assert v["purged_files"] == 0  # within the grace
    subjects = {}
    for name in ("INBOX", "Trash", "Junk"):
        st = mailbox_state(m, name)
        subjects[name] = sorted(re.search(rb"Subject: (.*)\r\n", b).group(1).decode()
                                for _, _, b in st["messages"].values())
    assert subjects == {"INBOX": ["small"], "Trash": ["new trash"], "Junk": ["unseen junk"]}
    expunged = partition_of(srv, ERIN) / "expunged"
    assert len([p for p in expunged.rglob("*.msg")]) == 3
    m.logout()

    # After the grace (a restart with purge_after = 0): purged.
    srv.stop()
    srv.config_path.write_text(srv.config_path.read_text().replace("purge_after = 3600", "purge_after = 0"))
    srv.start()
    v = cli_json(srv, "expire")
    assert v["removed"] == 0 and v["purged_files"] == 3, v
    assert [p for p in expunged.rglob("*.msg")] == []
    # Text output and offline run (server stopped) work too.
    srv.stop()
    res = srv.cli("expire")
    assert res.returncode == 0 and "removed 0 messages" in res.stdout, res.stdout + res.stderr


def imap_raw(c: LineClient, tag: str, command: str) -> list[str]:
    c.send(f"{tag} {command}\r\n")
    lines = []
    while True:
        line = c.readline().decode()
        assert line, f"connection closed during {command}"
        lines.append(line.rstrip("\r\n"))
        if line.startswith(tag + " "):
            assert line.startswith(f"{tag} OK"), lines
            return lines


def test_qresync_after_trimming_exact_within_the_window_full_before(msgd_factory):
    srv = msgd_factory(users=[FRANK], start=False)
    add_expire_config(srv, EXPIRE_RULES.format(grace=0))
    srv.start()
    m = srv.imap(FRANK)
    for i in range(6):
        append(m, "INBOX", message(f"q{i}"))
    uidvalidity = mailbox_state(m, "INBOX")["uidvalidity"]
    marks = []
    m.select("INBOX")
    for uid in range(1, 5):
        typ, st = m.status("INBOX", "(HIGHESTMODSEQ)")
        marks.append(int(re.search(rb"HIGHESTMODSEQ (\d+)", st[0]).group(1)))
        imap_ok(m.uid("STORE", str(uid), "+FLAGS", r"(\Deleted)"))
        imap_ok(m.expunge())
    m.logout()
    v = cli_json(srv, "expire")
    assert v["trimmed"] == 2, v

    c = LineClient(srv.ports["imap"])
    try:
        assert c.readline().startswith(b"* OK")
        imap_raw(c, "a", f'LOGIN {FRANK} "{srv.passwords[FRANK]}"')
        imap_raw(c, "b", "ENABLE QRESYNC")
        # Within the kept window (the last two expunges): exact.
        r = imap_raw(c, "c", f"SELECT INBOX (QRESYNC ({uidvalidity} {marks[2]}))")
        assert "* VANISHED (EARLIER) 3:4" in r, r
        # Older than the trimmed point: every UID not present.
        r = imap_raw(c, "d", f"SELECT INBOX (QRESYNC ({uidvalidity} {marks[0]}))")
        assert "* VANISHED (EARLIER) 1:4" in r, r
        r = imap_raw(c, "e", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {marks[0]} VANISHED)")
        assert "* VANISHED (EARLIER) 1:4" in r, r
        r = imap_raw(c, "f", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {marks[3]} VANISHED)")
        assert "* VANISHED (EARLIER) 4" in r, r
        imap_raw(c, "z", "LOGOUT")
    finally:
        c.close()
