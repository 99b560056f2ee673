"""POP3 (RFC 1939, 2449, 2595, 5034) with poplib."""

import base64
import poplib
import ssl
import time

import pytest

from conftest import (
    DOMAIN,
    REMOTE_SENDER,
    assert_delivered_copy,
    build_message,
    imap_literals,
    imap_ok,
    unique,
)

BASIC = f"pop-basic@{DOMAIN}"
TOP = f"pop-top@{DOMAIN}"
DELE = f"pop-dele@{DOMAIN}"
DROP = f"pop-drop@{DOMAIN}"
TLS = f"pop-tls@{DOMAIN}"
AUTH = f"pop-auth@{DOMAIN}"
USERS = [BASIC, TOP, DELE, DROP, TLS, AUTH]


def deliver(server, address, n) -> list[bytes]:
    msgs = []
    for i in range(n):
        data = build_message(address, f"pop {i} {unique()}", f"pop message {i}\r\n" + "line\r\n" * (i * 10))
        server.send(address, data)
        msgs.append(data)
    server.wait_count_pop3(address, n)
    return msgs


def retr_bytes(p: poplib.POP3, which: int) -> bytes:
    resp, lines, _ = p.retr(which)
    assert resp.startswith(b"+OK"), resp
    return b"\r\n".join(lines) + b"\r\n"


def login_retrying(server, address, timeout=10.0) -> poplib.POP3:
    """Logs in, retrying while the maildrop is still locked by a session
    the server has not yet noticed is gone."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return server.pop3(address)
        except poplib.error_proto as e:
            if time.monotonic() >= deadline or b"IN-USE" not in str(e).encode().upper():
                raise
            time.sleep(0.3)


def imap_subjects(server, address) -> list[bytes]:
    m = server.imap(address)
    try:
        n = int(imap_ok(m.select("INBOX", readonly=True), "EXAMINE")[0])
        if n == 0:
            return []
        data = imap_ok(m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"), "FETCH")
        return [lit.strip() for lit in imap_literals(data)]
    finally:
        m.logout()


def test_pop3_capa_lists_required_capabilities(server):
    p = server.pop3()
    try:
        caps = p.capa()
    finally:
        p.quit()
    for cap in ["UIDL", "TOP", "USER", "STLS", "RESP-CODES"]:
        assert cap in caps, f"CAPA lacks {cap}: {caps}"
    assert "SASL" in caps and "PLAIN" in [m.upper() for m in caps["SASL"]], f"CAPA SASL: {caps.get('SASL')}"


def test_pop3_user_pass_stat_list_uidl_retr(server):
    sent = deliver(server, BASIC, 3)
    p = server.pop3(BASIC)
    try:
        count, total = p.stat()
        assert count == 3, f"STAT count {count}"
        _, listing, _ = p.list()
        sizes = {int(n): int(s) for n, s in (line.split() for line in listing)}
        assert sorted(sizes) == [1, 2, 3] and sum(sizes.values()) == total, f"LIST {listing} vs STAT {total}"
        _, uidl_lines, _ = p.uidl()
        uidls = {int(n): u for n, u in (line.split() for line in uidl_lines)}
        assert len(set(uidls.values())) == 3, f"UIDLs not unique: {uidls}"
        resp = p.uidl(2)
        assert resp.split()[-1] == uidls[2], f"UIDL 2 = {resp!r}, listing says {uidls[2]!r}"
        got = [retr_bytes(p, i) for i in (1, 2, 3)]
        assert [len(g) for g in got] == [sizes[1], sizes[2], sizes[3]], "LIST sizes differ from RETR lengths"
    finally:
        p.quit()
    # delivery order is not promised: match by content
    for data in sent:
        match = [g for g in got if g.endswith(data)]
        assert len(match) == 1, "a delivered message is missing from RETR output"
        assert_delivered_copy(match[0], data, REMOTE_SENDER, "POP3 RETR")
    p = server.pop3(BASIC)
    try:
        _, uidl_again, _ = p.uidl()
    finally:
        p.quit()
    assert uidl_again == uidl_lines, "UIDLs changed between sessions"


def test_pop3_top_returns_headers_and_first_body_lines(server):
    server.send(TOP, build_message(TOP, "top", "".join(f"body line {i}\r\n" for i in range(10))))
    server.wait_count_pop3(TOP, 1)
    p = server.pop3(TOP)
    try:
        full = retr_bytes(p, 1)
        head, body = full.split(b"\r\n\r\n", 1)
        _, top0, _ = p.top(1, 0)
        _, top3, _ = p.top(1, 3)
    finally:
        p.quit()
    assert b"\r\n".join(top0) + b"\r\n" == head + b"\r\n\r\n", f"TOP 1 0 = {top0!r}"
    body_lines = body.split(b"\r\n")
    want3 = head + b"\r\n\r\n" + b"\r\n".join(body_lines[:3]) + b"\r\n"
    assert body_lines[2] == b"body line 2"
    assert b"\r\n".join(top3) + b"\r\n" == want3, f"TOP 1 3 = {top3!r}"


def test_pop3_dele_then_quit_removes_message_also_from_imap(server):
    deliver(server, DELE, 2)
    p = server.pop3(DELE)
    try:
        first = retr_bytes(p, 1)
        resp = p.dele(1)
        assert resp.startswith(b"+OK"), resp
        count, _ = p.stat()
        assert count == 1, "STAT still counts the deleted message"
    finally:
        resp = p.quit()
    assert resp.startswith(b"+OK"), resp
    subject = next(line for line in first.split(b"\r\n") if line.startswith(b"Subject:"))
    subjects = imap_subjects(server, DELE)
    assert len(subjects) == 1 and subject not in subjects, f"IMAP after DELE+QUIT sees {subjects}"
    p = server.pop3(DELE)
    try:
        assert p.stat()[0] == 1
    finally:
        p.quit()


def test_pop3_dele_without_quit_keeps_message(server):
    deliver(server, DROP, 2)
    p = server.pop3(DROP)
    assert p.dele(1).startswith(b"+OK")
    p.close()  # drop the connection: no QUIT, so no UPDATE state
    p = login_retrying(server, DROP)
    try:
        count, _ = p.stat()
        assert count == 2, f"message deleted although the session never sent QUIT (STAT {count})"
    finally:
        p.quit()
    assert len(imap_subjects(server, DROP)) == 2


def test_pop3_stls_then_login(server):
    p = server.pop3()
    try:
        resp = p.stls(context=server.ssl_context())
        assert resp.startswith(b"+OK"), resp
        assert isinstance(p.sock, ssl.SSLSocket)
        p.user(TLS)
        assert p.pass_(server.passwords[TLS]).startswith(b"+OK")
        assert p.stat()[0] == 0
    finally:
        p.quit()


def test_pop3s_implicit_tls_login(server):
    p = poplib.POP3_SSL("127.0.0.1", server.ports["pop3s"], context=server.ssl_context(), timeout=20)
    try:
        p.user(TLS)
        assert p.pass_(server.passwords[TLS]).startswith(b"+OK")
        assert p.stat()[0] == 0
    finally:
        p.quit()


def test_pop3_auth_plain(server):
    token = base64.b64encode(b"\0" + AUTH.encode() + b"\0" + server.passwords[AUTH].encode()).decode()
    p = server.pop3()
    try:
        resp = p._shortcmd("AUTH PLAIN " + token)
        assert resp.startswith(b"+OK"), resp
        assert p.stat()[0] == 0
    finally:
        p.quit()


def test_pop3_auth_plain_with_wrong_password_fails(server):
    token = base64.b64encode(b"\0" + AUTH.encode() + b"\0wrong-password").decode()
    p = server.pop3(timeout=30)
    try:
        with pytest.raises(poplib.error_proto) as err:
            p._shortcmd("AUTH PLAIN " + token)
        assert str(err.value).startswith("b'-ERR"), err.value
    finally:
        p.close()


def test_pop3_wrong_password_gets_err(server):
    p = server.pop3(timeout=30)
    try:
        p.user(BASIC)
        with pytest.raises(poplib.error_proto) as err:
            p.pass_("wrong-password")
        assert str(err.value).startswith("b'-ERR"), err.value
    finally:
        p.close()
