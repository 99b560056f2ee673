"""The mmp and the store behind it, issue 10's leftovers:

- UNAUTHENTICATE (RFC 8437) through a real mmp: the client's login lives on
  the mmp, so the mmp never relays UNAUTHENTICATE to the store and never
  advertises it, even when the store behind it would offer it.
- POP3 AUTHORIZATION: the store and the mmp run one core
  (`src/pop3/auth.rs`), so the same dialogue gets the same answers.

Layout (loopback, free ports): a private slapd, one `msgd --role store`
(store1.test) and one `msgd --role mmp` in `credentials` mode with
`backend_id = false` and plaintext to the store: the store then sees a plain
LOGIN from loopback and offers UNAUTHENTICATE itself, which is the case the
mmp has to hide.
"""

from __future__ import annotations

import base64
import imaplib
import os
import shutil
import textwrap

import pytest

from conftest import build_message
from test_mmp import ALICE, CLIENT_IP, Pki, Raw, SrcIMAP4, backends_toml, logout, store_toml
from tiers import EXTRA_LDIF, PASSWORDS, Ldap, Node, short_tmpdir


@pytest.fixture(scope="module")
def nodes():
    root = short_tmpdir("msgd-mmpu-")
    pki = Pki(root / "pki")
    ldap = Ldap(root / "ldap", extra_ldif=EXTRA_LDIF)
    store = Node(root / "store1", "store", "store1.test", ldap, store_toml("store1.test", pki),
                 listeners=("lmtp", "imap", "pop3"))
    cert, key = pki.server("mmp.test")
    mmp_toml = textwrap.dedent(f"""
        [tls]
        cert = "{cert}"
        key = "{key}"

        [mmp]
        login_mode = "credentials"
        backend_tls = "none"
        backend_id = false
        """) + backends_toml("", [store], "imap", "pop3")
    mmp = Node(root / "mmp", "mmp", "mmp.test", ldap, mmp_toml, cache_ttl=0, listeners=("imap", "pop3"))
    started = []
    try:
        ldap.start()
        for n in (store, mmp):
            n.start()
            started.append(n)
        yield store, mmp
        for n in started:
            n.stop()
    finally:
        for n in (store, mmp):
            n.cleanup()
        if ldap.running:
            ldap.stop()
        if not os.environ.get("MSGD_TEST_KEEP"):
            shutil.rmtree(root, ignore_errors=True)


def login(c: Raw, pipelined: bytes = b"") -> bytes:
    greeting = c.readline()
    assert greeting.startswith(b"* OK"), greeting
    c.send(f'a LOGIN "{ALICE}" "{PASSWORDS[ALICE]}"\r\n'.encode() + pipelined)
    tagged, _ = c.imap_until_tagged("a")
    assert tagged.startswith(b"a OK"), tagged
    return tagged


def test_rfc8437_store_offers_unauthenticate_to_a_direct_client(nodes):
    """The store behind this mmp does offer UNAUTHENTICATE (so the mmp
    tests below hide something real)."""
    store, _ = nodes
    with Raw(store.ports["imap"], source="127.0.0.1") as c:
        tagged = login(c)
        _, untagged = c.imap_cmd("c", "CAPABILITY")
        caps = b"".join(untagged) + tagged
        assert b"UNAUTHENTICATE" in caps, caps
        c.imap_cmd("z", "LOGOUT")


def test_rfc8437_mmp_hides_and_refuses_unauthenticate(nodes):
    _, mmp = nodes
    with Raw(mmp.ports["imap"]) as c:
        tagged = login(c)
        assert b"CAPABILITY" in tagged and b"UNAUTHENTICATE" not in tagged.upper(), tagged
        tagged, untagged = c.imap_cmd("c", "CAPABILITY")
        assert tagged.startswith(b"c OK"), tagged
        caps = b"".join(untagged).split()
        assert b"IMAP4rev2" in caps and b"UNAUTHENTICATE" not in caps, caps
        # The mmp answers; the session at the store stays logged in.
        tagged, _ = c.imap_cmd("u", "UNAUTHENTICATE")
        assert tagged == b"u BAD UNAUTHENTICATE is not available here\r\n", tagged
        tagged, _ = c.imap_cmd("s", "SELECT INBOX")
        assert tagged.startswith(b"s OK"), tagged
        # Lowercase, and pipelined behind another command.
        c.send(b"n NOOP\r\nv unauthenticate\r\nw NOOP\r\n")
        answers = {}
        for _ in range(3):
            line = c.imap_response()
            while line.startswith(b"*"):
                line = c.imap_response()
            answers[line.split(b" ")[0]] = line
        assert answers[b"v"] == b"v BAD UNAUTHENTICATE is not available here\r\n", answers
        assert answers[b"n"].startswith(b"n OK") and answers[b"w"].startswith(b"w OK"), answers
        tagged, _ = c.imap_cmd("z", "LOGOUT")
        assert tagged.startswith(b"z OK"), tagged


def test_rfc8437_unauthenticate_pipelined_with_login(nodes):
    """Sent in the same packet as LOGIN, it reaches the mmp after the login
    and is still answered by the mmp."""
    _, mmp = nodes
    with Raw(mmp.ports["imap"]) as c:
        login(c, pipelined=b"b UNAUTHENTICATE\r\n")
        tagged, _ = c.imap_until_tagged("b")
        assert tagged == b"b BAD UNAUTHENTICATE is not available here\r\n", tagged
        tagged, _ = c.imap_cmd("s", "SELECT INBOX")
        assert tagged.startswith(b"s OK"), tagged


def test_rfc7888_synchronizing_literal_append_through_mmp(nodes):
    """imaplib sends APPEND with a synchronizing literal: the mmp answers
    "+" itself and the store gets the message."""
    _, mmp = nodes
    m = SrcIMAP4(mmp.ports["imap"], source=CLIENT_IP)
    try:
        m.login(ALICE, PASSWORDS[ALICE])
        msg = build_message(ALICE, "through the mmp", "literal body\r\n", msgid="mmp-unauth-append")
        typ, data = m.append("INBOX", None, None, msg)
        assert typ == "OK", data
        m.select("INBOX")
        typ, data = m.search(None, "HEADER", "Message-ID", "mmp-unauth-append")
        assert typ == "OK" and data[0].split(), data
        typ, data = m.fetch(data[0].split()[-1], "(BODY.PEEK[TEXT])")
        assert typ == "OK" and b"literal body" in data[0][1], data
    except imaplib.IMAP4.error as e:
        pytest.fail(f"through the mmp: {e}\n{mmp.log(200)}", pytrace=False)
    finally:
        logout(m)


def pop3_dialogue(port: int, source: str) -> list[str]:
    """The same AUTHORIZATION dialogue, answers as text (multi-line ones
    joined)."""
    plain = lambda authz, authc, pw: base64.b64encode(f"{authz}\0{authc}\0{pw}".encode()).decode()
    steps = [
        ("CAPA", True),
        ("NOOP", False),
        ("PASS x", False),
        ("AUTH", True),
        ("AUTH CRAM-MD5", False),
        (f"AUTH PLAIN {plain('bob@example.test', ALICE, 'pw')}", False),
        (f"USER {ALICE}", False),
        ("PASS wrong", False),
        (f"USER {ALICE}", False),
        (f"PASS {PASSWORDS[ALICE]}", False),
        ("STAT", False),
        ("QUIT", False),
    ]
    out = []
    with Raw(port, source=source) as c:
        assert c.readline().startswith(b"+OK"), "greeting"
        for line, multi in steps:
            c.send(line.encode() + b"\r\n")
            first = c.readline().decode()
            lines = [first]
            if multi and first.startswith("+OK"):
                while lines[-1] != ".\r\n":
                    lines.append(c.readline().decode())
            out.append("".join(lines))
    return out


def test_rfc2449_rfc3206_pop3_authorization_same_on_store_and_mmp(nodes):
    store, mmp = nodes
    direct = pop3_dialogue(store.ports["pop3"], "127.0.0.1")
    proxied = pop3_dialogue(mmp.ports["pop3"], CLIENT_IP)
    # CAPA: the store adds its TRANSACTION commands and names itself.
    assert direct[0] == (
        "+OK Capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nSASL PLAIN\r\n"
        "RESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nSTLS\r\nIMPLEMENTATION msgd\r\n.\r\n"
    ), direct[0]
    assert proxied[0] == direct[0].replace("TOP\r\nUIDL\r\n", "").replace("msgd\r\n", "msgd-mmp\r\n")
    # Everything else, word for word (the mmp passes the store's +OK on).
    assert proxied[1:-1] == direct[1:-1], (proxied, direct)
    assert direct[1:8] == [
        "-ERR command not valid in this state\r\n",
        "-ERR USER first\r\n",
        "+OK\r\nPLAIN\r\n.\r\n",
        "-ERR unsupported authentication mechanism\r\n",
        "-ERR [AUTH] not authorized to act as that user\r\n",
        "+OK send PASS\r\n",
        "-ERR [AUTH] Authentication failed\r\n",
    ], direct
    assert direct[9].startswith("+OK maildrop has "), direct
    assert direct[10].startswith("+OK "), direct
    assert direct[11] == "+OK msgd POP3 server signing off\r\n"
