"""ESORT and CONTEXT=SEARCH / CONTEXT=SORT (RFC 5267) and PARTIAL (RFC 9394)
against the real msgd binary: imaplib for the plain commands, raw IMAP for
the updates a context sends while another client changes the mailbox (also
during IDLE). docs/imap.md maps each to its tests."""

import imaplib

from conftest import DOMAIN, LineClient, build_message, imap_raw_login

ES = f"x-esort@{DOMAIN}"
PA = f"x-partial@{DOMAIN}"
CX = f"x-context@{DOMAIN}"
USERS = [ES, PA, CX]


def ok(c: LineClient, tag: str, command) -> list[bytes]:
    tagged, others = c.imap_cmd(tag, command)
    assert tagged.startswith(tag.encode() + b" OK"), f"{command!r}: {tagged!r} {others!r}"
    return [l.rstrip(b"\r\n") for l in others]


def append(c: LineClient, mailbox: str, data: bytes, tag: str = "AP") -> None:
    c.send(f"{tag} APPEND {mailbox} {{{len(data)}+}}\r\n".encode() + data + b"\r\n")
    tagged, others = c.imap_until_tagged(tag)
    assert tagged.startswith(tag.encode() + b" OK"), f"APPEND: {tagged!r} {others!r}"


def fill(c: LineClient, user: str, subjects) -> None:
    for s in subjects:
        append(c, "INBOX", build_message(user, s, "body\r\n"))


def imap_login(server, user: str) -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    m.login(user, server.passwords[user])
    return m


def test_rfc5267_3_esort_return_min_max_count_all(server):
    c = imap_raw_login(server, ES)
    fill(c, ES, ["b", "a", "c", "a"])
    m = imap_login(server, ES)
    typ, data = m.capability()
    caps = data[0].decode().upper().split()
    for cap in ("ESORT", "CONTEXT=SEARCH", "CONTEXT=SORT", "PARTIAL"):
        assert cap in caps, caps
    m.select("INBOX")
    typ, data = m.uid("SORT", "RETURN (MIN MAX COUNT ALL)", "(SUBJECT)", "UTF-8", "ALL")
    assert typ == "OK", data
    # imaplib files an ESEARCH response under its name.
    typ, es = m._untagged_response(typ, data, "ESEARCH")
    line = es[0].decode()
    # a: 2 4, b: 1, c: 3.
    assert line.endswith("UID MIN 2 MAX 3 COUNT 4 ALL 2,4,1,3"), line
    typ, data = m.sort("(SUBJECT)", "UTF-8", "ALL")
    assert data == [b"2 4 1 3"], data
    m.logout()


def test_rfc9394_3_1_partial_first_and_last_pages(server):
    c = imap_raw_login(server, PA)
    fill(c, PA, [f"m{i:02d}" for i in range(1, 13)])
    ok(c, "S", "SELECT INBOX")
    got = ok(c, "P1", "UID SEARCH RETURN (PARTIAL 1:5) ALL")
    assert got == [b'* ESEARCH (TAG "P1") UID PARTIAL (1:5 1:5)'], got
    got = ok(c, "P2", "UID SEARCH RETURN (PARTIAL -1:-5 COUNT) ALL")
    assert got == [b'* ESEARCH (TAG "P2") UID COUNT 12 PARTIAL (-1:-5 8:12)'], got
    got = ok(c, "P3", "SEARCH RETURN (PARTIAL 20:30) ALL")
    assert got == [b'* ESEARCH (TAG "P3") PARTIAL (20:30 NIL)'], got
    got = ok(c, "P4", "SORT RETURN (PARTIAL 1:3) (REVERSE SUBJECT) UTF-8 ALL")
    assert got == [b'* ESEARCH (TAG "P4") PARTIAL (1:3 12,11,10)'], got
    tagged, _ = c.imap_cmd("P5", "SEARCH RETURN (ALL PARTIAL 1:3) ALL")
    assert tagged.startswith(b"P5 BAD"), tagged
    # SEARCHRES: the page is what is saved.
    ok(c, "P6", "SEARCH RETURN (SAVE PARTIAL 2:3) ALL")
    got = ok(c, "P7", "SEARCH $")
    assert got == [b"* SEARCH 2 3"], got


def test_rfc5267_4_context_updates_and_cancelupdate(server):
    c = imap_raw_login(server, CX)
    fill(c, CX, ["one", "two", "three"])
    other = imap_raw_login(server, CX)
    ok(c, "S", "SELECT INBOX")
    ok(other, "S", "SELECT INBOX")
    got = ok(c, "U1", "UID SEARCH RETURN (COUNT UPDATE) UNSEEN")
    assert got == [b'* ESEARCH (TAG "U1") UID COUNT 3'], got
    got = ok(c, "U2", "UID SORT RETURN (ALL UPDATE) (REVERSE SUBJECT) UTF-8 UNSEEN")
    # two, three, one.
    assert got == [b'* ESEARCH (TAG "U2") UID ALL 2:3,1'], got
    ok(other, "F1", "STORE 2 +FLAGS (\\Seen)")
    append(other, "INBOX", build_message(CX, "zzz", "body\r\n"))
    got = ok(c, "N1", "NOOP")
    assert b"* 4 EXISTS" in got, got
    assert b'* ESEARCH (TAG "U1") UID REMOVEFROM (0 2)' in got, got
    assert b'* ESEARCH (TAG "U1") UID ADDTO (0 4)' in got, got
    assert b'* ESEARCH (TAG "U2") UID REMOVEFROM (1 2)' in got, got
    assert b'* ESEARCH (TAG "U2") UID ADDTO (1 4)' in got, got
    # During IDLE the updates come as the mailbox changes.
    c.send(b"I IDLE\r\n")
    assert c.imap_response().startswith(b"+"), "IDLE continuation"
    ok(other, "F2", "STORE 1 +FLAGS (\\Seen)")
    seen = []
    while not any(b"U2" in l and b"REMOVEFROM" in l for l in seen):
        seen.append(c.imap_response().rstrip(b"\r\n"))
    assert b'* ESEARCH (TAG "U1") UID REMOVEFROM (0 1)' in seen, seen
    assert b'* ESEARCH (TAG "U2") UID REMOVEFROM (3 1)' in seen, seen
    c.send(b"DONE\r\n")
    tagged, _ = c.imap_until_tagged("I")
    assert tagged.startswith(b"I OK"), tagged
    # An expunge: REMOVEFROM comes before the EXPUNGE (RFC 5267 4.3.4).
    ok(other, "F4", "STORE 3 +FLAGS (\\Deleted)")
    ok(other, "X", "EXPUNGE")
    got = ok(c, "N3", "NOOP")
    exp = got.index(b"* 3 EXPUNGE")
    assert got.index(b'* ESEARCH (TAG "U1") UID REMOVEFROM (0 3)') < exp, got
    assert got.index(b'* ESEARCH (TAG "U2") UID REMOVEFROM (2 3)') < exp, got
    # A live context's tag cannot start another one (RFC 5267 4.3).
    tagged, _ = c.imap_cmd("U1", "SEARCH RETURN (UPDATE) ALL")
    assert tagged.startswith(b"U1 BAD"), tagged
    ok(c, "C1", 'CANCELUPDATE "U1" "U2"')
    ok(other, "F3", "UID STORE 4 +FLAGS (\\Seen)")
    got = ok(c, "N2", "NOOP")
    assert not any(b"ESEARCH" in l for l in got), got
    tagged, _ = c.imap_cmd("C2", 'CANCELUPDATE "U1"')
    assert tagged.startswith(b"C2 BAD"), tagged


def test_rfc5267_4_1_noupdate_when_refused(server):
    c = imap_raw_login(server, CX)
    ok(c, "S", "SELECT INBOX")
    for i in range(4):
        ok(c, f"K{i}", "SEARCH RETURN (COUNT UPDATE) ALL")
    tagged, others = c.imap_cmd("K9", "SEARCH RETURN (COUNT UPDATE) ALL")
    assert tagged.startswith(b"K9 OK"), tagged
    assert any(l.startswith(b'* NO [NOUPDATE "K9"]') for l in others), others
    assert any(l.startswith(b'* ESEARCH (TAG "K9") COUNT') for l in others), others
    tagged, others = c.imap_cmd("Q1", "SEARCH RETURN (UPDATE) OLDER 60")
    assert tagged.startswith(b"Q1 OK"), tagged
    assert any(l.startswith(b'* NO [NOUPDATE "Q1"]') for l in others), others
