"""The rest of the Sun schema, read from a real slapd and honoured by the
real binary through SMTP, LMTP and IMAP (docs/directory.md).

The entries are the `sch-*` users, groups and `schema*.test` domains of
tests/ldap/base.ldif (passwords "alice-secret"). Two all-in-one nodes
share the slapd: `store1.test` (the default `provision.deleted_mail =
"refuse"`) and `store2.test` (`deleted_mail = "keep"`).
"""

from __future__ import annotations

import imaplib
import smtplib

import pytest

from conftest import CLIENT_HELO, build_message, unique
from tiers import PASSWORDS, Ldap, Node, fetch_all, rcpt_replies, running, wait_for_ids

PASSWORD = "alice-secret"  # every sch-* user's password
REMOTE = "stranger@remote.example"
# fetch_all / wait_for_ids log in with tiers.PASSWORDS.
for _u in ("sch-target", "sch-routed", "sch-msgq"):
    PASSWORDS.setdefault(f"{_u}@example.test", PASSWORD)

STORE1 = """
[store]
host = "store1.test"
min_free_disk = 1048576
"""

STORE2_KEEP = """
[store]
host = "store2.test"
min_free_disk = 1048576

[provision]
deleted_mail = "keep"
"""


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    root = tmp_path_factory.mktemp("schema")
    ldap = Ldap(root / "ldap")
    one = Node(root / "one", "all-in-one", "store1.test", ldap, STORE1)
    keep = Node(root / "keep", "all-in-one", "store2.test", ldap, STORE2_KEEP)
    with running(ldap, one, keep):
        yield one, keep


def imap_login(node: Node, user: str) -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", node.ports["imap"], timeout=20)
    m.login(user, PASSWORD)
    return m


def imap_login_refused(node: Node, user: str) -> str:
    m = imaplib.IMAP4("127.0.0.1", node.ports["imap"], timeout=20)
    try:
        with pytest.raises(imaplib.IMAP4.error) as e:
            m.login(user, PASSWORD)
        return str(e.value)
    finally:
        m.shutdown()


def lmtp_send(node: Node, rcpt: str, data: bytes) -> tuple[int, str]:
    """One LMTP transaction to one recipient: (code, text) of its reply
    (of the RCPT when refused there, else of the data)."""
    with smtplib.LMTP("127.0.0.1", node.ports["lmtp"], local_hostname=CLIENT_HELO, timeout=20) as s:
        s.ehlo(CLIENT_HELO)
        s.mail(REMOTE)
        code, msg = s.rcpt(rcpt)
        if code != 250:
            return code, msg.decode()
        s.putcmd("data")
        code, msg = s.getreply()
        assert code == 354, (code, msg)
        s.send(data.replace(b"\r\n.", b"\r\n..") + b"\r\n.\r\n")
        code, msg = s.getreply()
        return code, msg.decode()


def test_rcpt_statuses_of_users_groups_and_domains(nodes):
    one, _ = nodes
    r = rcpt_replies(one, REMOTE, [
        "sch-deleted@example.test",      # inetUserStatus deleted, policy refuse
        "dave@example.test",             # inactive: as before
        "sch-closed@example.test",       # inetMailGroupStatus inactive
        "sch-removed@example.test",      # inetMailGroupStatus deleted
        "sch-paused@schemapaused.test",  # inetDomainStatus inactive
        "sch-gone@schemagone.test",      # mailDomainStatus deleted: not ours
        "sch-target@example.test",       # an ordinary user
    ])
    got = {a: (c, t.split(" ", 1)[0]) for a, (c, t) in r.items()}
    assert got == {
        "sch-deleted@example.test": (550, "5.1.1"),
        "dave@example.test": (550, "5.2.1"),
        "sch-closed@example.test": (450, "4.2.1"),
        "sch-removed@example.test": (550, "5.1.1"),
        "sch-paused@schemapaused.test": (450, "4.2.1"),
        "sch-gone@schemagone.test": (550, "5.7.1"),
        "sch-target@example.test": (250, "2.1.5"),
    }, r


def test_deleted_user_mail_is_kept_when_the_policy_says_keep(nodes):
    _, keep = nodes
    r = rcpt_replies(keep, REMOTE, ["sch-deleted@example.test", "dave@example.test"])
    assert r["sch-deleted@example.test"][0] == 250, r
    assert r["dave@example.test"][0] == 550, r


def test_allowed_broadcasters_by_address_url_dn_ldap_url_and_domain(nodes):
    one, _ = nodes
    list_ = "sch-moderated@example.test"
    for sender, want in [
        (REMOTE, 550),
        ("bob@example.test", 550),
        ("", 550),  # the null sender to a restricted list
        ("poster@outside.test", 250),       # an address
        ("carol@example.test", 250),        # a mailto: URL
        ("alice.smith@example.test", 250),  # a DN (alice's other address)
        ("frank@example.test", 250),        # an ldap:/// URL
        ("anyone@trusted.test", 250),       # mgrpAllowedDomain
    ]:
        r = rcpt_replies(one, sender, [list_])
        code, text = r[list_]
        assert code == want, (sender, r)
        if want == 550:
            assert text.startswith("5.7.1"), (sender, text)
    # A restriction whose only DN does not exist lets nobody post.
    r = rcpt_replies(one, "alice@example.test", ["sch-nobody@example.test"])
    assert r["sch-nobody@example.test"][0] == 550, r
    # An unrestricted list still takes the null sender.
    assert rcpt_replies(one, "", ["staff@example.test"])["staff@example.test"][0] == 250


def test_routing_address_delivers_to_the_routed_user(nodes):
    one, _ = nodes
    mid = unique("route")
    data = build_message("sch-routed@example.test", "routed", "via mailRoutingAddress\r\n",
                         sender=REMOTE, msgid=mid)
    with one.smtp() as s:
        s.ehlo()
        assert s.sendmail(REMOTE, ["sch-routed@example.test"], data) == {}
    wait_for_ids(one, "sch-target@example.test", [f"<{mid}@remote.example>"], 20)
    assert not [x for x in fetch_all(one, "sch-routed@example.test") if mid.encode() in x]
    # A routing loop is refused, not delivered in circles.
    r = rcpt_replies(one, REMOTE, ["sch-loop1@example.test"])
    assert r["sch-loop1@example.test"][0] == 550, r


def test_message_quota_at_lmtp_and_append_and_in_getquota(nodes):
    one, keep = nodes
    user = "sch-msgq@example.test"  # mailMsgQuota 2
    codes = []
    for i in range(3):
        data = build_message(user, f"q{i}", "count\r\n", sender=REMOTE, msgid=unique("mq"))
        codes.append(lmtp_send(one, user, data))
    assert [c for c, _ in codes] == [250, 250, 452], codes
    assert codes[2][1].startswith("4.2.2"), codes
    m = imap_login(one, user)
    try:
        typ, data = m.getquotaroot("INBOX")
        assert typ == "OK", data
        quota = b" ".join(x for x in data[1] if isinstance(x, bytes))
        assert b"MESSAGE 2 2" in quota, data
        typ, data = m.append("INBOX", None, None, b"Subject: x\r\n\r\ny\r\n")
    except imaplib.IMAP4.error as e:
        typ, data = "NO", [str(e).encode()]
    finally:
        m.logout()
    assert typ == "NO" and b"OVERQUOTA" in data[0], (typ, data)
    # preferredMailHost (no mailHost) says store1: store2 refuses it.
    code, text = lmtp_send(keep, user, b"Subject: x\r\n\r\ny\r\n")
    assert (code, text.split(" ", 1)[0]) == (550, "5.1.6"), (code, text)


def test_logins_deleted_user_refused_inactive_domain_temporarily(nodes):
    one, _ = nodes
    text = imap_login_refused(one, "sch-deleted@example.test")
    assert "UNAVAILABLE" not in text, text
    text = imap_login_refused(one, "sch-paused@schemapaused.test")
    assert "UNAVAILABLE" in text, text
    imap_login(one, "sch-target@example.test").logout()
