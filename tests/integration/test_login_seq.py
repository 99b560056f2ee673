"""The one login sequence (src/login.rs) as each protocol answers it.

IMAP, POP3 and SMTP AUTH (and the mmp, in test_mmp.py) all run the same
sequence: login_networks, proxy authorization (`proxy_users`), the password
check under the failed-login limits, the own-store check, INBOX creation.
Each outcome keeps its protocol's exact reply: RFC 5530 codes for IMAP,
RFC 3206 for POP3, RFC 4954 for SMTP.
"""

from __future__ import annotations

import base64

import pytest

from conftest import DOMAIN, LineClient, MsgdFactory

ALICE = f"alice@{DOMAIN}"
NEWBIE = f"newbie@{DOMAIN}"       # logs in for the first time: INBOX created then
OFF = f"off@{DOMAIN}"             # inactive
PROXY = f"proxy@{DOMAIN}"         # in imap/pop3 proxy_users
USERS = [ALICE, NEWBIE, PROXY]

EXTRA = f"""
[limits]
login_failure_delay_ms = 0
max_auth_failures = 10
max_login_failures_per_client = 1000

[imap]
proxy_users = ["{PROXY}"]

[pop3]
proxy_users = ["{PROXY}"]
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    factory = MsgdFactory(tmp_path_factory, "login_seq")
    inst = factory(users=USERS, inactive=[OFF], start=False)
    inst.config_path.write_text(inst.config_text() + EXTRA)
    inst.start()
    yield inst
    factory.cleanup()


def plain(authz: str, authc: str, password: str) -> str:
    return base64.b64encode(f"{authz}\0{authc}\0{password}".encode()).decode()


def imap_client(srv) -> LineClient:
    c = LineClient(srv.ports["imap"])
    assert c.imap_response().startswith(b"* OK")
    return c


def imap_auth(srv, authz: str, authc: str, password: str) -> bytes:
    with imap_client(srv) as c:
        tagged, _ = c.imap_cmd("a", f"AUTHENTICATE PLAIN {plain(authz, authc, password)}")
        if tagged.startswith(b"a OK"):
            sel, _ = c.imap_cmd("b", "SELECT INBOX")
            assert sel.startswith(b"b OK"), sel
        return tagged


def test_rfc5530_imap_login_outcomes(srv):
    with imap_client(srv) as c:
        tagged, _ = c.imap_cmd("a", f'LOGIN "{ALICE}" "wrong"')
        assert tagged == b"a NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
        tagged, _ = c.imap_cmd("b", f'LOGIN "{OFF}" "{srv.passwords[OFF]}"')
        assert tagged == b"b NO [CONTACTADMIN] Account disabled\r\n"
        # First login of an account: its INBOX is created on the way.
        tagged, _ = c.imap_cmd("c", f'LOGIN "{NEWBIE}" "{srv.passwords[NEWBIE]}"')
        assert tagged.startswith(b"c OK [CAPABILITY ") and tagged.endswith(b"] Logged in\r\n"), tagged
        tagged, _ = c.imap_cmd("d", "SELECT INBOX")
        assert tagged.startswith(b"d OK"), tagged


def test_rfc4616_imap_proxy_authorization(srv):
    pw = srv.passwords
    assert imap_auth(srv, ALICE, PROXY, pw[PROXY]).startswith(b"a OK [CAPABILITY ")
    assert (imap_auth(srv, PROXY, ALICE, pw[ALICE])
            == b"a NO [AUTHORIZATIONFAILED] Not allowed to act as another user\r\n")
    for target in (f"nobody@{DOMAIN}", OFF):
        assert (imap_auth(srv, target, PROXY, pw[PROXY])
                == b"a NO [AUTHORIZATIONFAILED] No such user to act as\r\n"), target
    # An authzid naming the login itself (in any case) is no request to act
    # as someone else (RFC 4616 section 2).
    assert imap_auth(srv, ALICE.upper(), ALICE, pw[ALICE]).startswith(b"a OK [CAPABILITY ")
    assert any("proxy login" in line and 'protocol="imap"' in line and f"user={ALICE}" in line
               for line in srv.log().splitlines()), srv.log()


def pop3_auth(srv, line: str) -> bytes:
    with LineClient(srv.ports["pop3"]) as c:
        assert c.readline().startswith(b"+OK")
        c.send(line + "\r\n")
        reply = c.readline()
        c.send("QUIT\r\n")
        return reply


def test_rfc3206_pop3_login_outcomes(srv):
    pw = srv.passwords
    assert pop3_auth(srv, f"AUTH PLAIN {plain('', ALICE, 'wrong')}") == b"-ERR [AUTH] Authentication failed\r\n"
    assert pop3_auth(srv, f"AUTH PLAIN {plain('', OFF, pw[OFF])}") == b"-ERR [AUTH] account disabled\r\n"
    assert pop3_auth(srv, f"AUTH PLAIN {plain(ALICE, PROXY, pw[PROXY])}").startswith(b"+OK maildrop has ")
    assert (pop3_auth(srv, f"AUTH PLAIN {plain(OFF, PROXY, pw[PROXY])}")
            == b"-ERR [AUTH] account disabled\r\n")
    assert (pop3_auth(srv, f"AUTH PLAIN {plain(f'nobody@{DOMAIN}', PROXY, pw[PROXY])}")
            == b"-ERR [AUTH] Authentication failed\r\n")
    assert pop3_auth(srv, f"AUTH PLAIN {plain('', ALICE, pw[ALICE])}").startswith(b"+OK maildrop has ")


def test_rfc4954_smtp_auth_outcomes(srv):
    pw = srv.passwords
    with LineClient(srv.ports["submission"]) as c:
        assert c.smtp_reply()[0] == 220
        assert c.smtp_cmd("EHLO client.example")[0] == 250
        code, text = c.smtp_cmd(f"AUTH PLAIN {plain('', ALICE, 'wrong')}")
        assert code == 535 and "5.7.8" in text, text
        code, text = c.smtp_cmd(f"AUTH PLAIN {plain('', OFF, pw[OFF])}")
        assert code == 535 and "5.7.8" in text, text
        code, text = c.smtp_cmd(f"AUTH PLAIN {plain('', ALICE, pw[ALICE])}")
        assert code == 235, text


def test_login_networks_refuse_before_the_password_check(tmp_path_factory):
    factory = MsgdFactory(tmp_path_factory, "login_seq_nets")
    try:
        inst = factory(users=[ALICE], start=False)
        inst.config_path.write_text(inst.config_text() + """
[imap]
login_networks = ["10.0.0.0/8"]

[pop3]
login_networks = ["10.0.0.0/8"]
""")
        inst.start()
        with imap_client(inst) as c:
            tagged, _ = c.imap_cmd("a", f'LOGIN "{ALICE}" "{inst.passwords[ALICE]}"')
            assert tagged == b"a NO [UNAVAILABLE] Log in through the mail proxy\r\n"
        reply = pop3_auth(inst, f"AUTH PLAIN {plain('', ALICE, inst.passwords[ALICE])}")
        assert reply == b"-ERR [SYS/TEMP] maildrop unavailable\r\n"
        assert "not from login_networks" in inst.log()
    finally:
        factory.cleanup()
