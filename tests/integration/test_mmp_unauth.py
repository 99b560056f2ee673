"""UNAUTHENTICATE (RFC 8437) through a real mmp: the client's login lives on
the mmp, so the mmp never relays UNAUTHENTICATE to the store and never
advertises it, even when the store behind it would offer it.

Layout (loopback, free ports): a private slapd, one `msgd --role store`
(store1.test) and one `msgd --role mmp` in `credentials` mode with
`backend_id = false` and plaintext to the store: the store then sees a plain
LOGIN from loopback and offers UNAUTHENTICATE itself, which is the case the
mmp has to hide.
"""

from __future__ import annotations

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
                 listeners=("lmtp", "imap"))
    cert, key = pki.server("mmp.test")
    mmp_toml = textwrap.dedent(f"""
        [tls]
        cert = "{cert}"
        key = "{key}"

        [mmp]
        login_mode = "credentials"
        backend_tls = "none"
        backend_id = false
        """) + backends_toml("", [store], "imap", "imap")
    mmp = Node(root / "mmp", "mmp", "mmp.test", ldap, mmp_toml, cache_ttl=0, listeners=("imap",))
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
