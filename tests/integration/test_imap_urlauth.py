"""IMAP URLs (RFC 5092), CATENATE (RFC 4469) and URLAUTH (RFC 4467)
against the real msgd binary, over raw IMAP (imaplib knows none of them).
docs/imap.md maps each to its tests."""

import re
from urllib.parse import quote

from conftest import DOMAIN, LineClient, build_message, imap_raw_login

CA = f"x-cat@{DOMAIN}"
UA = f"x-urla@{DOMAIN}"
UB = f"x-urlb@{DOMAIN}"
USERS = [CA, UA, UB]


def ok(c: LineClient, tag: str, command) -> list[bytes]:
    tagged, others = c.imap_cmd(tag, command)
    assert tagged.startswith(tag.encode() + b" OK"), f"{command!r}: {tagged!r} {others!r}"
    return others


def send_with_literals(c: LineClient, tag: str, parts: list) -> tuple[bytes, list[bytes]]:
    """Sends a command made of text and (bytes) synchronizing literals."""
    c.send(tag.encode() + b" ")
    for p in parts:
        if isinstance(p, bytes):
            c.send(f"{{{len(p)}}}\r\n".encode())
            cont = c.imap_response()
            assert cont.startswith(b"+"), f"continuation {cont!r}"
            c.send(p)
        else:
            c.send(p.encode())
    c.send(b"\r\n")
    return c.imap_until_tagged(tag)


def append(c: LineClient, mailbox: str, data: bytes) -> int:
    tagged, others = send_with_literals(c, "AP", [f"APPEND {mailbox} ", data])
    assert tagged.startswith(b"AP OK [APPENDUID "), f"{tagged!r} {others!r}"
    return int(tagged.split()[4].rstrip(b"]"))


def uidvalidity(c: LineClient, mailbox: str) -> int:
    (line,) = ok(c, "S", f"STATUS {mailbox} (UIDVALIDITY)")
    return int(re.search(rb"UIDVALIDITY (\d+)", line).group(1))


def fetch_body(c: LineClient, mailbox: str, uid: int) -> bytes:
    ok(c, "SE", f"EXAMINE {mailbox}")
    others = ok(c, "F", f"UID FETCH {uid} BODY.PEEK[]")
    line = others[0]
    m = re.search(rb"\{(\d+)\}\r\n", line)
    return line[m.end():m.end() + int(m.group(1))]


def test_rfc4469_5_catenate_text_and_url_parts_and_badurl(server):
    c = imap_raw_login(server, CA)
    caps = b" ".join(ok(c, "C", "CAPABILITY")).split()
    assert b"CATENATE" in caps and b"URLAUTH" in caps
    msg = build_message(CA, "source", "the body line\r\n")
    append(c, "INBOX", msg)
    v = uidvalidity(c, "INBOX")
    head = b"From: me@example.com\r\nSubject: cat\r\n\r\n"
    tagged, others = send_with_literals(c, "A", [
        "APPEND Drafts (\\Draft) CATENATE (TEXT ", head,
        f' URL "/INBOX;UIDVALIDITY={v}/;UID=1/;SECTION=TEXT" URL /INBOX/;UID=1/;SECTION=TEXT/;PARTIAL=0.3 TEXT ',
        b"--end--\r\n", ")",
    ])
    assert tagged.startswith(b"A OK [APPENDUID "), f"{tagged!r} {others!r}"
    body = msg.split(b"\r\n\r\n", 1)[1]
    got = fetch_body(c, "Drafts", int(tagged.split()[4].rstrip(b"]")))
    assert got == head + body + body[:3] + b"--end--\r\n", got
    # A URL that names nothing: NO [BADURL], nothing appended.
    ok(c, "U", "UNSELECT")
    tagged, _ = send_with_literals(c, "B", ["APPEND Drafts CATENATE (TEXT ", b"x", " URL /INBOX/;UID=99)"])
    assert tagged == b"B NO [BADURL /INBOX/;UID=99] CATENATE URL gives no data\r\n", tagged
    (st,) = ok(c, "S2", "STATUS Drafts (MESSAGES)")
    assert b"(MESSAGES 1)" in st, st
    c.close()


def test_rfc4467_7_genurlauth_urlfetch_resetkey_expire(server):
    a = imap_raw_login(server, UA)
    append(a, "INBOX", build_message(UA, "for b", "secret words\r\n"))
    base = f"imap://{quote(UA, safe='')}@{DOMAIN}/INBOX/;UID=1/;SECTION=TEXT"
    rump = f"{base};URLAUTH=user+{quote(UB, safe='')}"
    others = ok(a, "G", f'GENURLAUTH "{rump}" INTERNAL')
    m = re.match(rb'\* GENURLAUTH "([^"]+)"', others[0])
    assert m, others
    url = m.group(1).decode()
    assert re.fullmatch(re.escape(rump) + r":INTERNAL:[0-9a-f]{40}", url), url
    # UB may fetch it; UA is not UB.
    b = imap_raw_login(server, UB)
    (line,) = ok(b, "F", f'URLFETCH "{url}"')
    assert line.startswith(f'* URLFETCH "{url}" {{'.encode()) and b"secret words" in line, line
    (line,) = ok(a, "F", f'URLFETCH "{url}"')
    assert line.rstrip() == f'* URLFETCH "{url}" NIL'.encode(), line
    # UB puts it into its own message with CATENATE.
    tagged, others = send_with_literals(b, "C", [
        "APPEND INBOX CATENATE (TEXT ", b"Subject: fwd\r\n\r\n", f' URL "{url}")'])
    assert tagged.startswith(b"C OK [APPENDUID "), f"{tagged!r} {others!r}"
    assert fetch_body(b, "INBOX", 1).endswith(b"secret words\r\n")
    # RESETKEY: the URL gives nothing any more.
    ok(a, "R", "RESETKEY INBOX INTERNAL")
    (line,) = ok(b, "F2", f'URLFETCH "{url}"')
    assert line.rstrip().endswith(b" NIL"), line
    # EXPIRE in the past.
    old = f"{base};EXPIRE=2001-01-01T00:00:00Z;URLAUTH=anonymous"
    url2 = re.match(rb'\* GENURLAUTH "([^"]+)"', ok(a, "G2", f'GENURLAUTH "{old}" INTERNAL')[0]).group(1).decode()
    (line,) = ok(b, "F3", f'URLFETCH "{url2}"')
    assert line.rstrip().endswith(b" NIL"), line
    # Another user's URL cannot be signed.
    tagged, others = a.imap_cmd("G3", f'GENURLAUTH "imap://{quote(UB, safe="")}@{DOMAIN}/INBOX/;UID=1;URLAUTH=anonymous" INTERNAL')
    assert tagged.startswith(b"G3 NO") and not others, (tagged, others)
    a.close()
    b.close()
