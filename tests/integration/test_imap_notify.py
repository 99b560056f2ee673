"""NOTIFY (RFC 5465) against the real msgd binary: one raw connection sets
NOTIFY, another (imaplib) appends, deletes, renames. The notified side reads
each event as a line (no timing: every read waits for its line).
docs/imap.md maps each test to its RFC section."""

import re

from conftest import DOMAIN, LineClient, build_message, imap_raw_login

NA = f"x-notify@{DOMAIN}"
NB = f"x-notify2@{DOMAIN}"
NC = f"x-notify3@{DOMAIN}"
USERS = [NA, NB, NC]


def ok(c: LineClient, tag: str, command) -> list[bytes]:
    tagged, others = c.imap_cmd(tag, command)
    assert tagged.startswith(tag.encode() + b" OK"), f"{command!r}: {tagged!r} {others!r}"
    return [l.rstrip(b"\r\n") for l in others]


def line(c: LineClient) -> bytes:
    r = c.imap_response()
    assert r, "connection closed"
    return r.rstrip(b"\r\n")


def lines_until(c: LineClient, pattern: bytes) -> list[bytes]:
    out = []
    while True:
        out.append(line(c))
        if re.search(pattern, out[-1]):
            return out


def other(server, address):
    m = server.imap(address)
    return m


def test_rfc5465_5_events_of_other_mailboxes_between_commands(server):
    a = imap_raw_login(server, NA)
    caps = b" ".join(ok(a, "C", "CAPABILITY")).split()
    assert b"NOTIFY" in caps
    ok(a, "c", "CREATE Work")
    ok(a, "s", "SELECT INBOX")
    r = ok(a, "n", "NOTIFY SET STATUS (selected (MessageNew (UID FLAGS) MessageExpunge)) "
                   "(personal (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange))")
    assert any(l.startswith(b'* STATUS "Work" (MESSAGES 0 UIDNEXT 1 ') for l in r), r
    assert not any(l.startswith(b'* STATUS "INBOX"') for l in r), r

    b = other(server, NA)
    msg = build_message(NA, "notify", "body\r\n")
    assert b.append("Work", None, None, msg)[0] == "OK"
    assert line(a).startswith(b'* STATUS "Work" (MESSAGES 1 UIDNEXT 2 ')
    b.select("Work")
    b.store("1", "+FLAGS", "\\Deleted")
    assert line(a).startswith(b'* STATUS "Work" (MESSAGES 1 UIDNEXT 2 ')
    b.expunge()
    assert line(a).startswith(b'* STATUS "Work" (MESSAGES 0 UIDNEXT 2 ')
    b.close()

    assert b.create("Lists")[0] == "OK"
    assert line(a) == b'* LIST () "/" "Lists"'
    assert b.rename("Lists", "Groups")[0] == "OK"
    assert line(a) == b'* LIST () "/" "Groups" ("OLDNAME" ("Lists"))'
    assert b.subscribe("Groups")[0] == "OK"
    assert line(a) == b'* LIST (\\Subscribed) "/" "Groups"'
    assert b.delete("Groups")[0] == "OK"
    assert line(a) == b'* LIST (\\NonExistent) "/" "Groups"'

    # The selected mailbox: EXISTS and the MessageNew fetch attributes.
    assert b.append("INBOX", None, None, msg)[0] == "OK"
    got = lines_until(a, rb" FETCH ")
    assert b"* 1 EXISTS" in got, got
    assert re.match(rb"\* 1 FETCH \(UID 1 FLAGS \(", got[-1]), got
    assert not any(l.startswith(b'* STATUS "INBOX"') for l in got), got
    ok(a, "z", "NOOP")
    b.logout()
    a.close()


def test_rfc5465_5_idle_and_notify_none(server):
    a = imap_raw_login(server, NB)
    ok(a, "c", "CREATE Work")
    ok(a, "s", "SELECT INBOX")
    ok(a, "n", "NOTIFY SET (selected (MessageNew MessageExpunge)) (personal (MessageNew MessageExpunge))")
    a.send(b"i IDLE\r\n")
    assert line(a).startswith(b"+")
    b = other(server, NB)
    msg = build_message(NB, "idle", "body\r\n")
    assert b.append("Work", None, None, msg)[0] == "OK"
    assert line(a).startswith(b'* STATUS "Work" (MESSAGES 1 UIDNEXT 2 ')
    assert b.append("INBOX", None, None, msg)[0] == "OK"
    assert line(a) == b"* 1 EXISTS"
    a.send(b"DONE\r\n")
    tagged, _ = a.imap_until_tagged("i")
    assert tagged.startswith(b"i OK")
    # NOTIFY NONE: nothing more unasked.
    ok(a, "o", "NOTIFY NONE")
    assert b.create("Quiet")[0] == "OK"
    assert ok(a, "x", "NOOP") == []
    b.logout()
    a.close()


def test_rfc5465_5_9_badevent_and_5_8_overflow(server):
    a = imap_raw_login(server, NC)
    tagged, _ = a.imap_cmd("n", "NOTIFY SET (personal (MailboxName AnnotationChange))")
    assert tagged.startswith(b"n NO [BADEVENT ("), tagged
    tagged, _ = a.imap_cmd("m", "NOTIFY SET (personal (MessageNew))")
    assert tagged.startswith(b"m BAD"), tagged
    # One RENAME of a parent with many children: more events than one
    # wake-up may carry (256).
    b = imap_raw_login(server, NC)
    n = 257
    b.send(b"".join(f"c{i} CREATE P/c{i}\r\n".encode() for i in range(n)))
    tagged, others = b.imap_until_tagged(f"c{n - 1}")
    assert tagged.startswith(f"c{n - 1} OK".encode()), (tagged, others[-3:])
    ok(a, "n", "NOTIFY SET (personal (MailboxName))")
    ok(b, "r", "RENAME P Q")
    assert line(a).startswith(b"* OK [NOTIFICATIONOVERFLOW]")
    ok(b, "c", "CREATE After")
    assert ok(a, "x", "NOOP") == []
    b.close()
    a.close()
