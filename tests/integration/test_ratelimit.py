"""Rate limits and per-user sending limits (issue 16, `[hygiene.rate]`).

Real components: the msgd binary (all-in-one) with small limits. Clients
are Python's smtplib from distinct loopback addresses (127.0.0.1,
127.0.0.2, 127.0.0.3: Linux routes all of 127/8 to lo), so "another
client" is another address, as msgd sees it. Submission uses AUTH over
implicit TLS (465).
"""

from __future__ import annotations

import smtplib
import ssl

import pytest

from conftest import CLIENT_HELO, DOMAIN, REMOTE_SENDER, MsgdFactory, unique

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
CAROL = f"carol@{DOMAIN}"


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    factory = MsgdFactory(tmp_path_factory, "ratelimit")
    m = factory(users=(ALICE, BOB, CAROL), start=False)
    m.config_path.write_text(
        m.config_text()
        + "\n[hygiene.rate]\nenabled = true\n"
        + "messages_per_minute = 3\n"
        + "connections_per_minute = 4\n"
        + "user_messages_per_hour = 2\n"
        + f'\n[hygiene.rate.user."{CAROL}"]\nmessages_per_hour = 4\n'
    )
    m.start()
    yield m
    factory.cleanup()


def smtp_from(inst, source: str) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", inst.ports["smtp"], local_hostname=CLIENT_HELO, timeout=20,
                        source_address=(source, 0))


def message(to: str, subject: str, sender: str = REMOTE_SENDER) -> bytes:
    return (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{unique('m')}@test>\r\n\r\nHello.\r\n").encode()


def client_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_messages_per_minute_from_one_client_get_451_naming_the_limit(inst):
    with smtp_from(inst, "127.0.0.1") as s:
        s.ehlo()
        for i in range(3):
            refused = s.sendmail(REMOTE_SENDER, [ALICE], message(ALICE, f"rate {i}"))
            assert refused == {}, refused
        code, msg = s.mail(REMOTE_SENDER)
        assert code == 451, (code, msg)
        assert b"4.7.1" in msg and b"messages_per_minute" in msg, msg
        # The transaction did not open: RCPT is out of sequence.
        assert s.rcpt(ALICE)[0] == 503
    inst.wait_count(ALICE, 3)

    # Another client is not affected.
    with smtp_from(inst, "127.0.0.2") as s:
        s.ehlo()
        assert s.sendmail(REMOTE_SENDER, [ALICE], message(ALICE, "other client")) == {}
    inst.wait_count(ALICE, 4)


def test_connections_per_minute_get_421_at_connect(inst):
    for _ in range(4):
        with smtp_from(inst, "127.0.0.3") as s:
            assert s.noop()[0] == 250
    s = smtplib.SMTP(timeout=20, local_hostname=CLIENT_HELO, source_address=("127.0.0.3", 0))
    code, msg = s.connect("127.0.0.1", inst.ports["smtp"])
    assert code == 421, (code, msg)
    assert b"4.7.0" in msg and b"connections_per_minute" in msg, msg
    # Only QUIT is served after the refusal.
    code, msg = s.ehlo()
    assert code >= 400, (code, msg)
    s.close()
    # Another address still connects.
    with smtp_from(inst, "127.0.0.5") as s:
        assert s.noop()[0] == 250


def submit_session(inst, login: str) -> smtplib.SMTP_SSL:
    s = smtplib.SMTP_SSL("127.0.0.1", inst.ports["submissions"], context=client_ctx(), timeout=30,
                         source_address=("127.0.0.4", 0))
    s.ehlo("laptop.example")
    s.login(login, inst.passwords[login])
    return s


def test_submission_per_user_limit_with_auth(inst):
    before = inst.wait_count(BOB, 0)
    with submit_session(inst, ALICE) as s:
        for i in range(2):
            assert s.sendmail(ALICE, [BOB], message(BOB, f"sub {i}", sender=ALICE)) == {}
        code, msg = s.mail(ALICE)
        assert code == 451, (code, msg)
        assert b"4.7.1" in msg and b"user_messages_per_hour" in msg, msg
    inst.wait_count(BOB, before + 2)

    # The limit follows the login, not the connection: a new session is
    # refused too; another user (same address) is not.
    with submit_session(inst, ALICE) as s:
        code, msg = s.mail(ALICE)
        assert code == 451 and b"user_messages_per_hour" in msg, (code, msg)
    with submit_session(inst, BOB) as s:
        assert s.sendmail(BOB, [ALICE], message(ALICE, "from bob", sender=BOB)) == {}


def test_submission_per_user_override(inst):
    with submit_session(inst, CAROL) as s:
        for i in range(4):
            assert s.sendmail(CAROL, [BOB], message(BOB, f"carol {i}", sender=CAROL)) == {}
        code, msg = s.mail(CAROL)
        assert code == 451 and b"user_messages_per_hour" in msg, (code, msg)
