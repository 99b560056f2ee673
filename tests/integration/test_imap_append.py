"""MULTIAPPEND (RFC 3502), REPLACE (RFC 8508) and UNAUTHENTICATE (RFC
8437) against the real msgd binary: one test per behaviour, named after
the RFC section it checks. Raw sockets where the wire form matters
(imaplib knows none of the three), imaplib where a stock client is the
point."""

import imaplib
import re

from conftest import DOMAIN, LineClient, imap_raw_login

MA = f"x-multiappend@{DOMAIN}"
RP = f"x-replace@{DOMAIN}"
UA = f"x-unauth@{DOMAIN}"
UB = f"x-unauth-b@{DOMAIN}"
USERS = [MA, RP, UA, UB]


def msg(subject: str) -> bytes:
    return (f"From: Bob <bob@example.net>\r\nTo: {MA}\r\nSubject: {subject}\r\n"
            f"Date: Tue, 14 Nov 2023 10:00:00 +0000\r\n\r\nbody of {subject}\r\n").encode()


def lit(data: bytes) -> bytes:
    """A LITERAL+ literal."""
    return b"{" + str(len(data)).encode() + b"+}\r\n" + data


def count(c: LineClient, mailbox: str) -> int:
    tagged, others = c.imap_cmd("ST", f"STATUS {mailbox} (MESSAGES)")
    assert tagged.startswith(b"ST OK"), f"{tagged!r} {others!r}"
    return int(re.search(rb"MESSAGES (\d+)", b"".join(others)).group(1))


def test_rfc3502_6_3_11_multiappend_all_or_nothing_with_appenduid_set(server):
    c = imap_raw_login(server, MA)
    tagged, others = c.imap_cmd("C", "CAPABILITY")
    assert b" MULTIAPPEND " in b"".join(others), others
    # Three messages, synchronizing literals: a `+` for each.
    msgs = [msg("one"), msg("two"), msg("three")]
    c.send(b"A1 APPEND INBOX (\\Seen) {" + str(len(msgs[0])).encode() + b"}\r\n")
    assert c.imap_response().startswith(b"+")
    c.send(msgs[0] + b' "01-Jan-2001 02:00:00 +0200" {' + str(len(msgs[1])).encode() + b"}\r\n")
    assert c.imap_response().startswith(b"+")
    c.send(msgs[1] + b" {" + str(len(msgs[2])).encode() + b"}\r\n")
    assert c.imap_response().startswith(b"+")
    c.send(msgs[2] + b"\r\n")
    tagged, others = c.imap_until_tagged("A1")
    mo = re.match(rb"A1 OK \[APPENDUID (\d+) (\d+):(\d+)\]", tagged)
    assert mo, tagged
    assert int(mo.group(3)) - int(mo.group(2)) == 2, tagged
    assert count(c, "INBOX") == 3
    # One empty message among them: none is stored.
    tagged, _ = c.imap_cmd("A2", b"APPEND INBOX " + lit(msg("four")) + b" " + lit(b""))
    assert tagged.startswith(b"A2 NO"), tagged
    assert count(c, "INBOX") == 3
    # No such mailbox.
    tagged, _ = c.imap_cmd("A3", b"APPEND Nowhere " + lit(msg("a")) + b" " + lit(msg("b")))
    assert tagged.startswith(b"A3 NO [TRYCREATE]"), tagged
    # The stored messages are whole and in order, with their own flags.
    tagged, others = c.imap_cmd("S", "SELECT INBOX")
    tagged, others = c.imap_cmd("F", "FETCH 1:3 (FLAGS INTERNALDATE BODY.PEEK[])")
    assert tagged.startswith(b"F OK"), tagged
    joined = b"".join(others)
    for m in msgs:
        assert m in joined
    assert b"\\Seen" in others[0] and b"\\Seen" not in others[1], others
    assert b"01-Jan-2001 02:00:00 +0200" in others[1], others
    c.close()


def test_rfc8508_3_replace_and_uid_replace(server):
    c = imap_raw_login(server, RP)
    tagged, others = c.imap_cmd("C", "CAPABILITY")
    assert b" REPLACE " in b"".join(others), others
    c.imap_cmd("M", "CREATE Drafts2")
    tagged, _ = c.imap_cmd("A", b"APPEND INBOX " + lit(msg("draft 1")) + b" " + lit(msg("keep")))
    assert tagged.startswith(b"A OK"), tagged
    c.imap_cmd("S", "SELECT INBOX")
    # REPLACE in the selected mailbox: APPENDUID untagged, then the
    # EXPUNGE of the old message, then the tagged OK.
    tagged, others = c.imap_cmd("R1", b"REPLACE 1 INBOX (\\Draft) " + lit(msg("draft 2")))
    assert tagged.startswith(b"R1 OK"), (tagged, others)
    i_ok = next(i for i, l in enumerate(others) if l.startswith(b"* OK [APPENDUID "))
    i_exp = others.index(b"* 1 EXPUNGE\r\n")
    assert i_ok < i_exp, others
    assert b"* 2 EXISTS\r\n" in others, others
    # UID REPLACE into another mailbox.
    tagged, others = c.imap_cmd("U", "UID FETCH 1:* (UID)")
    uids = [int(x) for x in re.findall(rb"UID (\d+)", b"".join(others))]
    tagged, others = c.imap_cmd("R2", f"UID REPLACE {max(uids)} Drafts2 ".encode() + lit(msg("draft 3")))
    assert tagged.startswith(b"R2 OK"), (tagged, others)
    assert any(l.startswith(b"* OK [APPENDUID ") for l in others), others
    assert count(c, "Drafts2") == 1
    assert count(c, "INBOX") == 1
    # Failure (no such mailbox) leaves the old message in place.
    tagged, _ = c.imap_cmd("R3", b"REPLACE 1 Nowhere " + lit(msg("draft 4")))
    assert tagged.startswith(b"R3 NO [TRYCREATE]"), tagged
    assert count(c, "INBOX") == 1
    tagged, others = c.imap_cmd("F", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"keep" in b"".join(others), others
    c.close()


def test_rfc8437_3_unauthenticate_with_imaplib_then_another_user(server):
    imaplib.Commands.setdefault("UNAUTHENTICATE", ("AUTH", "SELECTED"))
    m = server.imap(UA)
    assert "UNAUTHENTICATE" in m.capabilities or b"UNAUTHENTICATE" in m.capability()[1][0], m.capabilities
    m.select("INBOX")
    typ, data = m._simple_command("UNAUTHENTICATE")
    assert typ == "OK", data
    m.state = "NONAUTH"
    # Not authenticated: no mailbox commands.
    typ, data = m._simple_command("NOOP")
    assert typ == "OK", data
    try:
        m.select("INBOX")
        raise AssertionError("SELECT worked after UNAUTHENTICATE")
    except imaplib.IMAP4.error:
        pass
    m.state = "NONAUTH"
    # A wrong password is refused like any login; another user logs in.
    try:
        m.login(UB, "wrong")
        raise AssertionError("wrong password accepted")
    except imaplib.IMAP4.error:
        pass
    typ, _ = m.login(UB, server.passwords[UB])
    assert typ == "OK"
    typ, data = m.select("INBOX")
    assert typ == "OK", data
    m.logout()


def test_rfc8437_3_unauthenticate_raw_state_reset(server):
    c = LineClient(server.ports["imap"])
    assert c.imap_response().startswith(b"* OK")
    tagged, others = c.imap_cmd("C0", "CAPABILITY")
    assert b"UNAUTHENTICATE" not in b"".join(others), others
    tagged, _ = c.imap_cmd("L", f'LOGIN "{UA}" "{server.passwords[UA]}"')
    assert b"UNAUTHENTICATE" in tagged, tagged
    c.imap_cmd("E", "ENABLE CONDSTORE")
    c.imap_cmd("S", "SELECT INBOX")
    tagged, _ = c.imap_cmd("U", "UNAUTHENTICATE")
    assert tagged.startswith(b"U OK"), tagged
    assert b"AUTH=PLAIN" in tagged and b"UNAUTHENTICATE" not in tagged, tagged
    tagged, _ = c.imap_cmd("F", "FETCH 1 FLAGS")
    assert tagged.startswith(b"F BAD"), tagged
    # Before login again the pre-login literal cap holds.
    c.send(b"B LOGIN {100000}\r\n")
    resp = c.imap_response()
    assert resp.startswith(b"B NO [TOOBIG]"), resp
    tagged, _ = c.imap_cmd("L2", f'LOGIN "{UA}" "{server.passwords[UA]}"')
    assert tagged.startswith(b"L2 OK"), tagged
    tagged, others = c.imap_cmd("E2", "ENABLE CONDSTORE")
    assert b"* ENABLED CONDSTORE\r\n" in others, others
    c.close()
