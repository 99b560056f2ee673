"""IMAP framing against the real binary (the one framer of src/imap/framer.rs):
long command lines (RFC 7162 section 4, RFC 2971 ID), over-long lines refused
without dropping the connection, literals ({n}, {n+}, ~{n}) in commands and
responses, refused literals skipped so the stream resynchronises, and the one
case that does close: a literal on its way whose length is not a number64."""

import imaplib
import re

from conftest import DOMAIN, LineClient, build_message, imap_ok, imap_raw_login

FRAMING = f"imap-framing@{DOMAIN}"
USERS = [FRAMING]

# The IMAP minimum line length (imap::framer::MIN_LINE).
MIN_LINE = 64 * 1024

# imaplib has no ID command of its own (RFC 2971).
imaplib.Commands.setdefault("ID", ("NONAUTH", "AUTH", "SELECTED"))


def id_args(fields: int = 30, value_len: int = 1024) -> str:
    pairs = " ".join(f'"field-{i:02}" "{"v" * value_len}"' for i in range(fields))
    return f"({pairs})"


def greeted(server) -> LineClient:
    c = LineClient(server.ports["imap"])
    assert c.imap_response().startswith(b"* OK")
    return c


def test_rfc2971_id_with_30_fields_of_1024_octets_imaplib(server):
    m = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    try:
        args = id_args()
        assert len(args) > 30_000
        # Before login (what a client sends first) and after.
        typ, data = m._simple_command("ID", args)
        assert typ == "OK", data
        m.login(FRAMING, server.passwords[FRAMING])
        typ, data = m._simple_command("ID", args)
        assert typ == "OK", data
        imap_ok(m.noop(), "NOOP after ID")
    finally:
        m.logout()


def test_rfc7162_4_long_line_accepted_overlong_line_gets_bad_and_next_command_works(server):
    c = greeted(server)
    try:
        tagged, _ = c.imap_cmd("A1", "ID " + id_args())
        assert tagged.startswith(b"A1 OK"), tagged
        # A line of 8,192 octets and more is a valid command.
        tagged, _ = c.imap_cmd("A2", "ID (\"name\" \"" + "n" * 9000 + "\")")
        assert tagged.startswith(b"A2 OK"), tagged
        # Past the documented limit: BAD, and the same connection goes on.
        tagged, _ = c.imap_cmd("A3", "NOOP " + "x" * (MIN_LINE + 10))
        assert tagged == b"A3 BAD Command line too long\r\n", tagged
        tagged, _ = c.imap_cmd("A4", "NOOP")
        assert tagged.startswith(b"A4 OK"), tagged
    finally:
        c.close()


def test_rfc7888_overlong_line_announcing_literal_plus_skips_the_literal(server):
    """The LITERAL+ bytes are on their way: they are dropped, never run as
    commands (here they hold a LOGOUT)."""
    c = greeted(server)
    try:
        smuggled = b"S1 LOGOUT\r\n"
        c.send(b"A1 ID (\"x\" \"" + b"y" * (MIN_LINE + 10) + b"\" {%d+}\r\n" % len(smuggled) + smuggled
               + b")\r\nA2 NOOP\r\n")
        assert c.imap_response() == b"A1 BAD Command line too long\r\n"
        resp = c.imap_response()
        assert resp.startswith(b"A2 OK"), resp
    finally:
        c.close()


def test_rfc7888_too_big_literals_are_refused_and_the_stream_resyncs(server):
    c = imap_raw_login(server, FRAMING)
    try:
        # Synchronizing: refused at once, no "+", nothing sent.
        c.send(b"A1 APPEND INBOX {9999999999}\r\n")
        resp = c.imap_response()
        assert resp.startswith(b"A1 NO [TOOBIG]"), resp
        tagged, _ = c.imap_cmd("A2", "NOOP")
        assert tagged.startswith(b"A2 OK"), tagged
    finally:
        c.close()
    # Non-synchronizing: on its way, so read, dropped and refused; the
    # connection is kept. Before login literals are capped at 64 KiB.
    c = greeted(server)
    try:
        big = 300 * 1024
        c.send(b"A3 LOGIN {%d+}\r\n" % big + b"z" * big + b" x\r\nA4 NOOP\r\n")
        resp = c.imap_response()
        assert resp.startswith(b"A3 NO [TOOBIG]"), resp
        resp = c.imap_response()
        assert resp.startswith(b"A4 OK"), resp
    finally:
        c.close()


def test_rfc9051_literal_length_beyond_number64_on_its_way_closes(server):
    c = imap_raw_login(server, FRAMING)
    try:
        # A synchronizing one is only refused.
        c.send(b"A1 APPEND INBOX {99999999999999999999}\r\nA2 NOOP\r\n")
        assert c.imap_response().startswith(b"A1 NO [TOOBIG]")
        assert c.imap_response().startswith(b"A2 OK")
        # One on its way cannot be skipped: BYE and close.
        c.send(b"A3 APPEND INBOX {99999999999999999999+}\r\nabc\r\n")
        assert c.imap_response().startswith(b"* BYE")
        assert c.imap_response() == b""
    finally:
        c.close()


def test_rfc3516_literal8_append_and_response_literals(server):
    c = imap_raw_login(server, FRAMING)
    try:
        msg = build_message(FRAMING, "framing literal8", "binary literal\r\n")
        if isinstance(msg, str):
            msg = msg.encode()
        tagged, _ = c.imap_cmd("S", "SELECT INBOX")
        assert tagged.startswith(b"S OK"), tagged
        c.send(b"A1 APPEND INBOX ~{%d}\r\n" % len(msg))
        assert c.imap_response().startswith(b"+ ")
        c.send(msg + b"\r\n")
        tagged, _ = c.imap_until_tagged("A1")
        assert tagged.startswith(b"A1 OK"), tagged
        uid = int(re.search(rb"APPENDUID \d+ (\d+)", tagged).group(1))
        # The response's literal is framed as one response.
        tagged, untagged = c.imap_cmd("F1", f"UID FETCH {uid} (BODY.PEEK[] UID)")
        assert tagged.startswith(b"F1 OK"), tagged
        fetches = [u for u in untagged if b" FETCH " in u]
        assert len(fetches) == 1 and msg in fetches[0], fetches
    finally:
        c.close()


def test_commands_fed_byte_by_byte_are_framed_the_same(server):
    c = greeted(server)
    try:
        password = server.passwords[FRAMING].encode()
        user = FRAMING.encode()
        script = (b"B1 LOGIN {%d+}\r\n%s {%d+}\r\n%s\r\nB2 NOOP\r\nB3 ID (\"a\" {3+}\r\nxyz)\r\n"
                  % (len(user), user, len(password), password))
        for i in range(len(script)):
            c.send(script[i:i + 1])
        assert c.imap_until_tagged("B1")[0].startswith(b"B1 OK")
        assert c.imap_until_tagged("B2")[0].startswith(b"B2 OK")
        assert c.imap_until_tagged("B3")[0].startswith(b"B3 OK")
    finally:
        c.close()
