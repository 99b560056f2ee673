"""msgd backup / msgd restore (issue 14, "Data safety"; docs/backup.md).

Against the real binary: backup while the server runs (through its admin
socket), wipe, restore (with the server stopped and running), and compare
over IMAP: byte-identical messages (BODY[]), flags, internal dates, UIDs,
UIDVALIDITY, UIDNEXT, subscriptions. Also: incremental backups, backups
while SMTP deliveries run, restore twice, into another mailbox name and
another user, progress lines when not on a terminal, and failures (exit 1
with a message, the rest restored).
"""

from __future__ import annotations

import hashlib
import imaplib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

from conftest import (
    DOMAIN,
    build_message,
    imap_fetch_pairs,
    imap_ok,
    msgd_bin,
    msgd_env,
    unique,
)

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
CAROL = f"carol@{DOMAIN}"
DAVE = f"dave@{DOMAIN}"

# imaplib knows no METADATA commands (RFC 5464).
imaplib.Commands.setdefault("SETMETADATA", ("AUTH", "SELECTED"))
imaplib.Commands.setdefault("GETMETADATA", ("AUTH", "SELECTED"))


# --------------------------------------------------------------------------
# helpers


def cli(srv, *args, env_extra=None, timeout=180):
    env = msgd_env()
    if env_extra:
        env.update(env_extra)
    return subprocess.run(
        [msgd_bin(), "--config", str(srv.config_path), *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, encoding="utf-8",
        errors="replace", timeout=timeout, cwd=srv.root, env=env,
    )


def ok(res, what):
    assert res.returncode == 0, f"{what} exited {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    return res


def append(m, mailbox, data: bytes, flags="", date='"01-Feb-2024 10:11:12 +0100"'):
    imap_ok(m.append(mailbox, f"({flags})" if flags else None, date, data), f"APPEND {mailbox}")


def mailbox_state(m, mailbox):
    """(UIDVALIDITY, UIDNEXT, {uid: (flags set, INTERNALDATE, bytes)})."""
    typ, data = m.status(f'"{mailbox}"', "(UIDVALIDITY UIDNEXT MESSAGES)")
    assert typ == "OK", f"STATUS {mailbox}: {data}"
    st = data[0].decode()
    uidvalidity = int(re.search(r"UIDVALIDITY (\d+)", st).group(1))
    uidnext = int(re.search(r"UIDNEXT (\d+)", st).group(1))
    count = int(re.search(r"MESSAGES (\d+)", st).group(1))
    imap_ok(m.select(f'"{mailbox}"', readonly=True), f"EXAMINE {mailbox}")
    msgs = {}
    if count:
        data = imap_ok(m.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE BODY.PEEK[])"), "UID FETCH")
        for meta, lit in imap_fetch_pairs(data):
            uid = int(re.search(rb"UID (\d+)", meta).group(1))
            flags = set(re.search(rb"FLAGS \(([^)]*)\)", meta).group(1).decode().split())
            flags.discard("\\Recent")
            date = re.search(rb'INTERNALDATE "([^"]+)"', meta).group(1).decode()
            msgs[uid] = (flags, date, lit)
    assert len(msgs) == count, f"{mailbox}: fetched {len(msgs)} of {count}"
    return uidvalidity, uidnext, msgs


def user_state(srv, user):
    m = srv.imap(user)
    try:
        names = []
        for line in imap_ok(m.list('""', "*"), "LIST"):
            names.append(re.search(rb'"([^"]*)"$|(\S+)$', line).group(0).decode().strip('"'))
        subs = sorted(
            re.search(rb'"([^"]*)"$|(\S+)$', line).group(0).decode().strip('"')
            for line in imap_ok(m.lsub('""', "*"), "LSUB") if line
        )
        return {n: mailbox_state(m, n) for n in sorted(names)}, subs
    finally:
        m.logout()


def wipe(srv):
    """Stops the server and deletes the store (mboxlist and partitions);
    the directory of users stays."""
    srv.stop()
    for p in ("mboxlist", "partition"):
        shutil.rmtree(srv.data_dir / p, ignore_errors=True)
    assert not (srv.data_dir / "mboxlist").exists()


def user_dir(dest: Path, user: str) -> Path:
    enc = "".join(c if c.isalnum() or c in "_-@+" else f"%{ord(c):02X}" for c in user)
    return dest / "users" / enc


def manifests(dest: Path, user: str) -> list[Path]:
    return sorted(user_dir(dest, user).glob("manifest-*.json"))


def blob_count(dest: Path, user: str) -> int:
    return sum(1 for p in (user_dir(dest, user) / "blobs").rglob("*") if p.is_file())


def seed_alice(srv):
    """Mail with flags, keywords, 8-bit bytes, a hierarchy, a gap in the
    UIDs (an expunged message) and a subscription."""
    m = srv.imap(ALICE)
    try:
        imap_ok(m.create("Projects/2026"), "CREATE")
        imap_ok(m.subscribe("Projects/2026"), "SUBSCRIBE")
        for i in range(6):
            body = f"line {i}\r\n8-bit: h\u00e9llo w\u00f6rld \u2603\r\n.dot line\r\n"
            flags = ["\\Seen", "\\Flagged $Work", "", "\\Answered \\Draft", "$Label1 \\Seen", ""][i]
            append(m, "INBOX", build_message(ALICE, f"inbox {i}", body), flags,
                   f'"0{i + 1}-Mar-2023 0{i}:15:30 +0{i}00"')
        imap_ok(m.select("INBOX"), "SELECT")
        imap_ok(m.uid("STORE", "3", "+FLAGS.SILENT", "(\\Deleted)"), "STORE")
        imap_ok(m.expunge(), "EXPUNGE")
        for i in range(3):
            append(m, "Projects/2026", build_message(ALICE, f"project {i}", f"plan {i}\r\n"), "\\Seen")
        append(m, "Sent", build_message(BOB, "sent", "hi bob\r\n", sender=ALICE), "\\Seen")
        typ, data = m._simple_command("SETMETADATA", '"Projects/2026"', '(/private/comment "plans for 2026")')
        assert typ == "OK", data
    finally:
        m.logout()


def get_comment(srv, user, mailbox):
    m = srv.imap(user)
    try:
        typ, data = m._simple_command("GETMETADATA", f'"{mailbox}"', "/private/comment")
        assert typ == "OK", data
        typ, data = m._untagged_response(typ, data, "METADATA")
        return b" ".join(x if isinstance(x, bytes) else b" ".join(x) for x in data if x)
    finally:
        m.logout()


# --------------------------------------------------------------------------
# tests


def test_backup_wipe_restore_gives_identical_messages_flags_uids(msgd_factory, tmp_path):
    srv = msgd_factory(users=[ALICE, BOB])
    seed_alice(srv)
    before, subs_before = user_state(srv, ALICE)
    assert sorted(before["INBOX"][2]) == [1, 2, 4, 5, 6]
    assert b"plans for 2026" in get_comment(srv, ALICE, "Projects/2026")
    dest = tmp_path / "bk"
    # Online (the server runs): through the admin socket.
    res = ok(cli(srv, "backup", ALICE, str(dest), "--json"), "backup")
    out = json.loads(res.stdout)
    assert out["totals"]["messages"] == 9 and out["totals"]["new_blobs"] == 9
    man = json.loads(manifests(dest, ALICE)[-1].read_text())
    assert man["format"] == "msgd-backup" and man["version"] == 1
    for mb in man["mailboxes"]:
        for msg in mb["messages"]:
            blob = (user_dir(dest, ALICE) / msg["blob"]).read_bytes()
            assert hashlib.sha256(blob).hexdigest() == msg["sha256"]
    wipe(srv)
    # Offline restore (no server): the CLI opens the store itself.
    res = ok(cli(srv, "restore", str(dest)), "restore")
    assert "9 messages at their UIDs" in res.stdout, res.stdout
    srv.start()
    after, subs_after = user_state(srv, ALICE)
    assert subs_after == subs_before
    assert b"plans for 2026" in get_comment(srv, ALICE, "Projects/2026")
    assert sorted(after) == sorted(before)
    for name, (uv, un, msgs) in before.items():
        uv2, un2, msgs2 = after[name]
        assert (uv2, un2) == (uv, un), f"{name}: UIDVALIDITY/UIDNEXT {uv2}/{un2}, want {uv}/{un}"
        assert sorted(msgs2) == sorted(msgs), f"{name}: UIDs {sorted(msgs2)}, want {sorted(msgs)}"
        for uid, (flags, date, body) in msgs.items():
            f2, d2, b2 = msgs2[uid]
            assert b2 == body, f"{name} UID {uid}: bytes differ"
            assert f2 == flags, f"{name} UID {uid}: flags {f2}, want {flags}"
            assert d2 == date, f"{name} UID {uid}: INTERNALDATE {d2}, want {date}"
    # New mail after the restore continues above the restored UIDNEXT.
    m = srv.imap(ALICE)
    try:
        append(m, "INBOX", build_message(ALICE, "after", "after restore\r\n"))
        uv, un, msgs = mailbox_state(m, "INBOX")
        assert max(msgs) == before["INBOX"][1]
    finally:
        m.logout()


def test_incremental_backup_stores_only_the_new_messages(msgd_factory, tmp_path):
    srv = msgd_factory(users=[ALICE])
    m = srv.imap(ALICE)
    try:
        for i in range(20):
            append(m, "INBOX", build_message(ALICE, f"first {i}", f"body {i}\r\n"))
    finally:
        m.logout()
    dest = tmp_path / "bk"
    ok(cli(srv, "backup", ALICE, str(dest)), "backup 1")
    assert blob_count(dest, ALICE) == 20
    # Flags change (recorded again, no new blob) and 10 new messages.
    m = srv.imap(ALICE)
    try:
        imap_ok(m.select("INBOX"), "SELECT")
        imap_ok(m.uid("STORE", "1:5", "+FLAGS.SILENT", "(\\Seen $Done)"), "STORE")
        for i in range(10):
            append(m, "INBOX", build_message(ALICE, f"second {i}", f"new body {i}\r\n"))
    finally:
        m.logout()
    time.sleep(0.01)
    res = ok(cli(srv, "backup", ALICE, str(dest), "--json"), "backup 2")
    out = json.loads(res.stdout)
    assert out["totals"]["new_blobs"] == 10, out
    assert out["totals"]["messages"] == 30, out
    assert blob_count(dest, ALICE) == 30
    runs = manifests(dest, ALICE)
    assert len(runs) == 2
    latest = json.loads(runs[-1].read_text())
    assert latest["previous"] == runs[0].name
    assert latest["totals"]["new_blobs"] == 10
    inbox = next(mb for mb in latest["mailboxes"] if mb["name"] == "INBOX")
    seen = [msg for msg in inbox["messages"] if "$Done" in msg["flags"]]
    assert [msg["uid"] for msg in seen] == [1, 2, 3, 4, 5]
    # Nothing new: a third run writes no blob.
    out = json.loads(ok(cli(srv, "backup", ALICE, str(dest), "--json"), "backup 3").stdout)
    assert out["totals"]["new_blobs"] == 0 and blob_count(dest, ALICE) == 30


def test_backup_while_deliveries_run_is_consistent(msgd_factory, tmp_path):
    srv = msgd_factory(users=[BOB, CAROL])
    sent = []
    errors = []

    def deliver():
        try:
            for i in range(60):
                data = build_message(BOB, f"flow {i}", f"delivery {i} {unique()}\r\n")
                srv.send(BOB, data)
                sent.append(data)
        except Exception as e:  # reported below
            errors.append(repr(e))

    t = threading.Thread(target=deliver)
    t.start()
    dests = []
    try:
        # The store knows bob from his first message on: a backup before
        # it is refused ("no such user in this store"), by design.
        deadline = time.monotonic() + 60
        while not sent and not errors and time.monotonic() < deadline:
            time.sleep(0.01)
        while t.is_alive() and len(dests) < 20:
            d = tmp_path / f"bk{len(dests)}"
            ok(cli(srv, "backup", BOB, str(d)), "backup during delivery")
            dests.append(d)
    finally:
        t.join(120)
    assert not errors, errors
    assert len(sent) == 60
    assert dests, "no backup ran"
    for d in dests:
        man = json.loads(manifests(d, BOB)[-1].read_text())
        inbox = next(mb for mb in man["mailboxes"] if mb["name"] == "INBOX")
        uids = [msg["uid"] for msg in inbox["messages"]]
        # One read transaction: exactly the messages below the recorded
        # UIDNEXT (nothing was expunged), each blob complete.
        assert uids == list(range(1, inbox["uidnext"])), (d, uids, inbox["uidnext"])
        for msg in inbox["messages"]:
            blob = (user_dir(d, BOB) / msg["blob"]).read_bytes()
            assert len(blob) == msg["size"] and hashlib.sha256(blob).hexdigest() == msg["sha256"]
    # The backup taken mid-flow restores (as carol) to exactly bob's first
    # messages.
    mid = dests[len(dests) // 2]
    ok(cli(srv, "restore", str(mid), BOB, "--as", CAROL), "restore as carol")
    m = srv.imap(BOB)
    try:
        _, _, bob = mailbox_state(m, "INBOX")
    finally:
        m.logout()
    m = srv.imap(CAROL)
    try:
        _, _, carol = mailbox_state(m, "INBOX")
    finally:
        m.logout()
    man = json.loads(manifests(mid, BOB)[-1].read_text())
    want = next(mb for mb in man["mailboxes"] if mb["name"] == "INBOX")["messages"]
    assert sorted(carol) == [msg["uid"] for msg in want]
    for uid, (_, _, body) in carol.items():
        assert body == bob[uid][2]


def test_restore_twice_into_new_names_and_users_duplicates_nothing(msgd_factory, tmp_path):
    srv = msgd_factory(users=[ALICE, BOB, CAROL])
    seed_alice(srv)
    dest = tmp_path / "bk"
    ok(cli(srv, "backup", "--all", str(dest)), "backup --all")
    orig, _ = user_state(srv, ALICE)
    # Same user, same names, server running: everything is already there.
    out = json.loads(ok(cli(srv, "restore", str(dest), ALICE, "--json"), "restore same").stdout)
    assert out["totals"]["restored"] == 0 and out["totals"]["present"] == 9, out
    assert user_state(srv, ALICE)[0] == orig
    # Below a new name, twice.
    for run in range(2):
        out = json.loads(ok(cli(srv, "restore", str(dest), ALICE, "--mailbox-prefix", "Restored",
                                "--json"), "restore prefix").stdout)
        assert out["totals"]["restored"] == (9 if run == 0 else 0), out
    state, subs = user_state(srv, ALICE)
    for name in ("INBOX", "Projects/2026", "Sent"):
        uv, un, msgs = orig[name]
        uv2, un2, msgs2 = state[f"Restored/{name}"]
        assert (uv2, sorted(msgs2)) == (uv, sorted(msgs)), name
        assert all(msgs2[u][2] == msgs[u][2] and msgs2[u][0] == msgs[u][0] for u in msgs), name
    assert "Restored/Projects/2026" in subs
    assert state["INBOX"] == orig["INBOX"]
    # Into another user, twice.
    for run in range(2):
        out = json.loads(ok(cli(srv, "restore", str(dest), ALICE, "--as", CAROL, "--json"),
                            "restore as").stdout)
        assert out["totals"]["restored"] + out["totals"]["renumbered"] == (9 if run == 0 else 0), out
    carol, _ = user_state(srv, CAROL)
    for name in ("INBOX", "Projects/2026", "Sent"):
        assert sorted(m[2] for m in carol[name][2].values()) == sorted(m[2] for m in orig[name][2].values())
    # bob got mail of his own meanwhile: alice's INBOX restored into his
    # (another UIDVALIDITY) is appended once, with new UIDs.
    m = srv.imap(BOB)
    try:
        append(m, "INBOX", build_message(BOB, "own", "bob's own\r\n"))
    finally:
        m.logout()
    for run in range(2):
        out = json.loads(ok(cli(srv, "restore", str(dest), ALICE, "--as", BOB, "--json"),
                            "restore into used").stdout)
        assert out["totals"]["renumbered"] == (5 if run == 0 else 0), out
    bob, _ = user_state(srv, BOB)
    assert len(bob["INBOX"][2]) == 6


def make_backup(dest: Path, user: str, n: int) -> list[bytes]:
    """A backup folder written from docs/backup.md alone (not by msgd)."""
    udir = user_dir(dest, user)
    (dest / "msgd-backup.json").parent.mkdir(parents=True, exist_ok=True)
    (dest / "msgd-backup.json").write_text(json.dumps({"format": "msgd-backup", "version": 1}))
    msgs, bodies = [], []
    for i in range(n):
        data = build_message(user, f"synthetic {i}", f"synthetic body {i}\r\n" * 20, msgid=f"s{i}.{user}")
        sha = hashlib.sha256(data).hexdigest()
        blob = udir / "blobs" / sha[:2] / sha
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        msgs.append({"uid": 2 * i + 1, "flags": ["\\Seen"] if i % 2 else [], "internal_date": 1700000000 + i,
                     "tz_offset_min": 0, "modseq": 1, "size": len(data), "sha256": sha,
                     "blob": f"blobs/{sha[:2]}/{sha}"})
        bodies.append(data)
    manifest = {
        "format": "msgd-backup", "version": 1, "user": user, "run": "001700000000-000000000",
        "created": "2023-11-14T22:13:20+00:00", "previous": None, "subscriptions": ["INBOX"],
        "mailboxes": [{"name": "INBOX", "uidvalidity": 1234567, "uidnext": 2 * n + 5, "highestmodseq": 3,
                       "special_use": None, "subscribed": True, "messages": msgs}],
        "totals": {"messages": n, "bytes": 0, "new_blobs": n, "new_bytes": 0, "vanished": 0},
    }
    (udir / "manifest-001700000000-000000000.json").write_text(json.dumps(manifest))
    return bodies


def test_progress_lines_when_not_on_a_terminal(msgd_factory, tmp_path):
    srv = msgd_factory(users=[DAVE])
    src = tmp_path / "synthetic"
    bodies = make_backup(src, DAVE, 1500)
    fast = {"MSGDCTL_PROGRESS_MS": "0"}
    res = ok(cli(srv, "restore", str(src), env_extra=fast), "restore")
    lines = [l for l in res.stderr.splitlines() if l.startswith("msgd: restoring 1 user(s): ")]
    assert lines, f"no progress lines on stderr:\n{res.stderr}"
    assert re.search(r": \d+/1500 messages$", lines[-1]), lines
    m = srv.imap(DAVE)
    try:
        uv, un, msgs = mailbox_state(m, "INBOX")
    finally:
        m.logout()
    assert (uv, un) == (1234567, 3005)
    assert sorted(msgs) == list(range(1, 3000, 2))
    assert [msgs[2 * i + 1][2] for i in range(1500)] == bodies
    res = ok(cli(srv, "backup", DAVE, str(tmp_path / "bk"), env_extra=fast), "backup")
    lines = [l for l in res.stderr.splitlines() if l.startswith("msgd: backing up 1 user(s): ")]
    assert lines, f"no progress lines on stderr:\n{res.stderr}"


def test_failures_exit_1_with_a_message_and_restore_the_rest(msgd_factory, tmp_path):
    srv = msgd_factory(users=[DAVE, CAROL])
    src = tmp_path / "synthetic"
    make_backup(src, DAVE, 6)
    man_path = next(user_dir(src, DAVE).glob("manifest-*.json"))
    man = json.loads(man_path.read_text())
    msgs = man["mailboxes"][0]["messages"]
    # UID 3: truncated blob; UID 7: corrupted (same size, other bytes).
    p3 = user_dir(src, DAVE) / msgs[1]["blob"]
    p3.write_bytes(p3.read_bytes()[:-10])
    p7 = user_dir(src, DAVE) / msgs[3]["blob"]
    b = bytearray(p7.read_bytes())
    b[-3] ^= 0x20
    p7.write_bytes(bytes(b))
    res = cli(srv, "restore", str(src))
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert "UID 3" in res.stderr and "UID 7" in res.stderr, res.stderr
    assert "truncated or corrupted" in res.stderr and "checksum" in res.stderr, res.stderr
    m = srv.imap(DAVE)
    try:
        _, _, got = mailbox_state(m, "INBOX")
    finally:
        m.logout()
    assert sorted(got) == [1, 5, 9, 11]
    # A manifest naming a path outside SRC is refused; nothing restored.
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"Subject: x\r\n\r\nnot mail\r\n")
    evil = tmp_path / "evil"
    make_backup(evil, CAROL, 2)
    ep = next(user_dir(evil, CAROL).glob("manifest-*.json"))
    em = json.loads(ep.read_text())
    em["mailboxes"][0]["messages"][0]["blob"] = "../../../secret.txt"
    em["mailboxes"][0]["messages"][0]["sha256"] = hashlib.sha256(secret.read_bytes()).hexdigest()
    em["mailboxes"][0]["messages"][0]["size"] = secret.stat().st_size
    ep.write_text(json.dumps(em))
    res = cli(srv, "restore", str(evil))
    assert res.returncode == 1 and "outside the backup" in res.stderr, (res.returncode, res.stderr)
    m = srv.imap(CAROL)
    try:
        _, _, got = mailbox_state(m, "INBOX")
    finally:
        m.logout()
    assert all(b"not mail" not in body for _, _, body in got.values())
    # Other failures: unknown user, not a backup folder, bad arguments.
    res = cli(srv, "backup", f"nobody@{DOMAIN}", str(tmp_path / "bk"))
    assert res.returncode == 1 and "no such user" in res.stderr, res.stderr
    res = cli(srv, "restore", str(tmp_path))
    assert res.returncode == 1 and "not a msgd backup folder" in res.stderr, res.stderr
    # A malformed command line is a usage error (exit 2).
    res = cli(srv, "backup", str(tmp_path / "bk"))
    assert res.returncode == 2 and "<USER>" in res.stderr, res.stderr
    res = cli(srv, "backup", "--all", ALICE, str(tmp_path / "bk"))
    assert res.returncode == 2 and "cannot be used with" in res.stderr, res.stderr
    # A stopped server: the CLI's own store reports the same errors.
    srv.stop()
    res = cli(srv, "restore", str(src))
    assert res.returncode == 1 and "UID 3" in res.stderr, res.stderr


def test_restore_follows_the_directory_partition_and_refuses_another_stores_user(tmp_path):
    """With real slapd: bob (mailHost store2.test, mailMessageStore
    secondary) is restored into store2's secondary partition; alice
    (mailHost store1.test) is refused on store2 with exit 1."""
    from tiers import Ldap, Node

    ldap = Ldap(tmp_path / "ldap")
    store_toml = ('\n[store]\nhost = "store2.test"\nmin_free_disk = 1048576\n\n'
                  '[store.partition.secondary]\npath = "partition/secondary"\n')
    node = Node(tmp_path / "store2", "store", "store2.test", ldap, store_toml)
    ldap.start()
    try:
        node.start()
        src = tmp_path / "bk"
        bodies = make_backup(src, BOB, 4)
        env = msgd_env()
        res = subprocess.run([msgd_bin(), "--config", str(node.config_path), "restore", str(src)],
                             capture_output=True, text=True, timeout=120, env=env, cwd=node.root)
        assert res.returncode == 0, res.stderr
        files = [p for p in (node.data_dir / "partition" / "secondary").rglob("*.msg")]
        assert len(files) == 4, files
        assert not list((node.data_dir / "partition" / "primary").rglob("*.msg"))
        assert sorted(f.read_bytes().split(b"\r\n", 1)[1] for f in files) == sorted(bodies)
        make_backup(src, ALICE, 2)
        res = subprocess.run([msgd_bin(), "--config", str(node.config_path), "restore", str(src), ALICE],
                             capture_output=True, text=True, timeout=120, env=env, cwd=node.root)
        assert res.returncode == 1, (res.returncode, res.stderr)
        assert "lives on store store1.test" in res.stderr, res.stderr
        node.stop()
    finally:
        node.cleanup()
        ldap.stop()


# --------------------------------------------------------------------------
# ACLs and JMAP-only data (issue 14, branch bkextra; docs/backup.md "What
# else is carried")

JMAP_USING = [
    "urn:ietf:params:jmap:core",
    "urn:ietf:params:jmap:mail",
    "urn:ietf:params:jmap:submission",
    "urn:ietf:params:jmap:vacationresponse",
    "urn:ietf:params:jmap:contacts",
]


def jmap(srv, user, calls):
    import base64
    import urllib.error
    import urllib.request

    body = json.dumps({"using": JMAP_USING, "methodCalls": calls}).encode()
    auth = base64.b64encode(f"{user}:{srv.passwords[user]}".encode()).decode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{srv.ports['http']}/jmap/api", data=body, method="POST",
        headers={"Content-Type": "application/json", "Authorization": "Basic " + auth})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return json.loads(r.read())["methodResponses"]
    except urllib.error.HTTPError as e:
        raise AssertionError(f"HTTP {e.code}: {e.read()[:500]!r}")


def jmap_one(responses, name):
    got = [r[1] for r in responses if r[0] == name]
    assert got, f"no {name} in {responses}"
    return got[0]


def jmap_account(user):
    import base64

    return "a" + base64.urlsafe_b64encode(user.encode()).decode().rstrip("=")


def acl_of(srv, user, mailbox):
    """{identifier: rights} of a mailbox (IMAP GETACL, RFC 4314)."""
    m = srv.imap(user)
    try:
        typ, data = m.getacl(f'"{mailbox}"')
        assert typ == "OK", data
        words = re.findall(rb'"[^"]*"|\S+', data[0])[1:]
        words = [w.strip(b'"').decode() for w in words]
        return dict(zip(words[0::2], words[1::2]))
    finally:
        m.logout()


def extras_state(srv, user, shared="Shared"):
    """What the test set beyond messages, as the user sees it."""
    acc = jmap_account(user)
    r = jmap(srv, user, [
        ["Identity/get", {"accountId": acc}, "0"],
        ["VacationResponse/get", {"accountId": acc}, "1"],
        ["ContactCard/get", {"accountId": acc}, "2"],
        ["Mailbox/get", {"accountId": acc, "properties": ["name", "sortOrder"]}, "3"],
    ])
    identities = {(i["email"], i["name"], i.get("textSignature", "")) for i in jmap_one(r, "Identity/get")["list"]}
    v = jmap_one(r, "VacationResponse/get")["list"][0]
    contacts = sorted(c["name"]["full"] for c in jmap_one(r, "ContactCard/get")["list"])
    orders = {b["name"]: b["sortOrder"] for b in jmap_one(r, "Mailbox/get")["list"]}
    return {
        "identities": identities,
        "vacation": (v["isEnabled"], v.get("subject"), v.get("textBody")),
        "contacts": contacts,
        "sort_order": orders.get(shared.rsplit("/", 1)[-1]),
        "acl": acl_of(srv, user, shared),
    }


def test_acl_identity_vacation_contact_and_sort_order_survive_backup_wipe_restore(msgd_factory, tmp_path):
    srv = msgd_factory(users=[ALICE, BOB], start=False)
    with open(srv.config_path, "a") as f:
        # Not needed here, and its fixed quickstart port may be taken.
        f.write("\n[listener.https]\nenabled = false\n")
    srv.start()
    m = srv.imap(ALICE)
    try:
        imap_ok(m.create("Shared"), "CREATE")
        append(m, "Shared", build_message(ALICE, "shared", "for bob\r\n"))
        typ, data = m.setacl('"Shared"', BOB, "lrs")
        assert typ == "OK", data
    finally:
        m.logout()
    acc = jmap_account(ALICE)
    r = jmap(srv, ALICE, [["Mailbox/query", {"accountId": acc, "filter": {"name": "Shared"}}, "q"]])
    shared_id = jmap_one(r, "Mailbox/query")["ids"][0]
    r = jmap(srv, ALICE, [
        ["Identity/set", {"accountId": acc, "create": {
            "w": {"email": ALICE, "name": "Alice (work)", "textSignature": "-- Alice, at work"}}}, "0"],
        ["VacationResponse/set", {"accountId": acc, "update": {"singleton": {
            "isEnabled": True, "subject": "Away", "textBody": "Back on Monday."}}}, "1"],
        ["ContactCard/set", {"accountId": acc, "create": {"c": {
            "@type": "Card", "addressBookIds": {"default": True}, "name": {"full": "Paul Jones"},
            "emails": {"e1": {"address": "paul@outside.example"}}}}}, "2"],
        ["Mailbox/set", {"accountId": acc, "update": {shared_id: {"sortOrder": 7}}}, "3"],
    ])
    assert "w" in jmap_one(r, "Identity/set")["created"], r
    assert "singleton" in jmap_one(r, "VacationResponse/set")["updated"], r
    assert "c" in jmap_one(r, "ContactCard/set")["created"], r
    assert shared_id in jmap_one(r, "Mailbox/set")["updated"], r
    before = extras_state(srv, ALICE)
    assert before["acl"].get(BOB) == "lrs", before
    assert ("alice@example.test", "Alice (work)", "-- Alice, at work") in before["identities"]
    assert before["vacation"] == (True, "Away", "Back on Monday.")
    assert before["contacts"] == ["Paul Jones"] and before["sort_order"] == 7

    dest = tmp_path / "bk"
    ok(cli(srv, "backup", ALICE, str(dest)), "backup")
    man = json.loads(manifests(dest, ALICE)[-1].read_text())
    assert {"mailbox": "Shared", "identifier": BOB, "rights": "lrs"} in man["extras"]["acl"], man["extras"]
    assert [c["full_name"] for c in man["extras"]["contacts"]] == ["Paul Jones"]
    assert {e["entry"] for e in man["metadata"] if e["mailbox"] is None} >= {
        "/private/vendor/msgd/identities", "/private/vendor/msgd/vacation"}

    # Wipe the store and the embedded directory's address books.
    wipe(srv)
    shutil.rmtree(srv.data_dir / "pab", ignore_errors=True)
    ok(cli(srv, "restore", str(dest)), "restore")
    srv.start()
    after = extras_state(srv, ALICE)
    assert after == before, f"after restore {after}, before {before}"
    # Bob sees the shared mailbox again (the ACL works, not only shows).
    b = srv.imap(BOB)
    try:
        names = b"\n".join(imap_ok(b.list('""', "*"), "LIST"))
        assert b"Shared" in names and ALICE.encode() in names, names
    finally:
        b.logout()

    # Online, below a prefix: the ACL and the sortOrder follow the renamed
    # mailbox; JMAP data is not doubled.
    ok(cli(srv, "restore", str(dest), "--mailbox-prefix", "Old"), "restore --mailbox-prefix")
    again = extras_state(srv, ALICE, shared="Old/Shared")
    assert again["acl"].get(BOB) == "lrs", again
    assert again["sort_order"] == 7
    assert again["identities"] == before["identities"] and again["contacts"] == ["Paul Jones"]

    # Another user (--as): the ACL comes along; alice's identities stay
    # stored but are not bob's addresses, so bob sees only his own.
    ok(cli(srv, "restore", str(dest), ALICE, "--as", BOB), "restore --as")
    bob = extras_state(srv, BOB)
    # GETACL shows the owner's implicit rights; alice's entry for bob (now
    # the owner) is dropped, not stored as a second, meaningless one.
    assert bob["acl"] == {BOB: "lrswipkxtea"}, bob["acl"]
    assert bob["vacation"] == (True, "Away", "Back on Monday.")
    assert bob["contacts"] == ["Paul Jones"] and bob["sort_order"] == 7
    assert {i[0] for i in bob["identities"]} == {BOB}, bob["identities"]
