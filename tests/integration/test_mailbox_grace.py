"""Issue 14: a deleted mailbox's files get the same grace as expunged ones.

IMAP DELETE takes the mailbox out of the index at once (clients see it
gone), and its folder is moved whole to `<partition>/expunged/<day>/`
(`<time>.<n>.<xx>.<user>.<mailbox id>.mailbox`). Within
`store.expire.purge_after` an operator moves it back and runs `msgd
reconstruct USER` to recover the mailbox; `msgd expire` after the grace
removes it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import DOMAIN

ALICE = f"alice@{DOMAIN}"


def message(subject: str) -> bytes:
    return (f"From: a@remote.example\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@remote.example>\r\n\r\nbody of {subject}\r\n").encode()


def user_dir(srv, user: str) -> Path:
    found = [p for p in srv.data_dir.rglob(user) if p.is_dir() and p.parent.name != "expunged"]
    found = [p for p in found if len(p.parent.name) == 2]
    assert len(found) == 1, f"user folder of {user}: {found}"
    return found[0]


def mailbox_dirs(srv, user: str) -> dict[str, Path]:
    out = {}
    for d in user_dir(srv, user).iterdir():
        rec = d / "mailbox"
        if rec.is_file():
            out[json.loads(rec.read_text())["name"]] = d
    return out


def set_aside(srv, user: str) -> list[Path]:
    expunged = user_dir(srv, user).parent.parent / "expunged"
    return sorted(p for p in expunged.glob("*/*.mailbox") if p.is_dir())


def cli_json(srv, *args: str) -> dict:
    res = srv.cli(*args, "--json")
    assert res.returncode == 0, f"msgd {' '.join(args)}: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return json.loads(res.stdout)


def subjects(m, mailbox: str) -> list[str]:
    typ, data = m.select(f'"{mailbox}"', readonly=True)
    assert typ == "OK", data
    if int(data[0]) == 0:
        return []
    typ, resp = m.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK", resp
    return sorted(re.search(rb"Subject: (.*)\r\n", i[1]).group(1).decode() for i in resp if isinstance(i, tuple))


def test_deleted_mailbox_is_set_aside_recoverable_and_purged_by_expire_after_the_grace(msgd_factory):
    srv = msgd_factory(users=[ALICE], start=False)
    srv.config_path.write_text(srv.config_path.read_text() + "\n[store.expire]\npurge_after = 3600\n")
    srv.start()
    m = srv.imap(ALICE)
    assert m.create("Projects")[0] == "OK"
    for s in ("one", "two"):
        typ, resp = m.append("Projects", None, None, message(s))
        assert typ == "OK", resp
    folder = mailbox_dirs(srv, ALICE)["Projects"]
    mailbox_id = folder.name
    assert m.delete("Projects")[0] == "OK"
    # Gone for clients, and from the user's folder...
    assert m.select("Projects")[0] == "NO"
    assert not folder.exists()
    # ...but kept whole aside: the record file and both messages.
    aside = set_aside(srv, ALICE)
    assert len(aside) == 1, aside
    assert aside[0].name.endswith(f".{mailbox_id}.mailbox")
    assert len(list(aside[0].glob("*.msg"))) == 2
    assert json.loads((aside[0] / "mailbox").read_text())["name"] == "Projects"
    # The folder aside is no orphan of the user's.
    res = srv.cli("verify", ALICE, "--json")
    assert res.returncode == 0, res.stdout + res.stderr

    # Recovery within the grace (docs/operations.md): move the folder back
    # and reconstruct the user, on the running server.
    aside[0].rename(folder)
    v = cli_json(srv, "reconstruct", ALICE)
    assert v["problems"] == 0, v
    assert subjects(m, "Projects") == ["one", "two"]

    # Deleted again; expire within the grace leaves it.
    m.close()
    assert m.delete("Projects")[0] == "OK"
    assert len(set_aside(srv, ALICE)) == 1
    v = cli_json(srv, "expire")
    assert v["purged_files"] == 0, v
    assert len(set_aside(srv, ALICE)) == 1
    m.logout()

    # After the grace (purge_after = 0, restart): expire removes it.
    srv.stop()
    srv.config_path.write_text(srv.config_path.read_text().replace("purge_after = 3600", "purge_after = 0"))
    srv.start()
    v = cli_json(srv, "expire")
    assert v["purged_files"] == 2, v
    assert set_aside(srv, ALICE) == []
    assert not folder.exists()
    m = srv.imap(ALICE)
    assert m.select("Projects")[0] == "NO"
    m.logout()
