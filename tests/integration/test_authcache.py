"""Issue 12, the login-cost half, against the real binary: the
verified-credential cache (src/authcache.rs) never lets an old or wrong
password in, hashes imported from other servers log in (src/directory/
password.rs), and the `[auth]` keys are checked and used.

That a cached login skips the hash is counted in the unit tests
(authcache::tests::directory); here only what a client can see is checked.
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import DOMAIN, LineClient, MsgdFactory

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"

# Failures answer at once and never lock the test client out.
LIMITS = """
[limits]
login_failure_delay_ms = 0
max_auth_failures = 10
max_login_failures_per_client = 1000
"""

# The embedded directory re-reads its file at most every 0.5 s
# (src/directory/embedded.rs RECHECK): wait that long after an edit.
RELOAD = 1.0

# For "correct horse", made by Dovecot's and OpenLDAP's tools (the same
# vectors as directory::password::tests).
MIGRATED = {
    "ssha": "{SSHA}lgyI4CSMUwYdbHZvgcryilRYQBeAPeeY",  # doveadm pw -s SSHA
    "slapd": "{SSHA}qh/NrAc+/7o/Jyvqban6etTIwVlka1x5",  # slappasswd -h {SSHA}
    "ssha512": "{SSHA512}tMNORKkZn0WvZJjsqO5cMxFz7JMmNKT1gVqp4yqgBwsLDloOuzp23df5TCOOMMN6LYnT6drOJnBhtLkKhedijImMo7c=",
    "blf": "{BLF-CRYPT}$2y$05$EDyf.WrqUqLoN3Fg7FLPYe76MlMQPdlcutAnfEklEngSCZ2U3c0Ri",
    "sha512crypt": "{SHA512-CRYPT}$6$UNlgKY2FCUvKj01l$g2S9QkLMkaOGnDIX4kgnEEDjFCj5pJLbgLgDcMuyj5RaAleJByzCCT1q5yAYs2CSKx8HWJa651ViF1//aoSvA/",
    "crypt6": "{CRYPT}$6$zObdlvwgV5weJhir$6VvsTB8ZMdryDt4UpZYC6uMLBcb/QQwZvq0NTBvmt/8z8P7eHbssoHzO7oaCBI39DqHT.G0KWD1swhQK6/GWi1",
    "argon2id": "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$BiLlxXa14Vw4JahltRITHA$9Bh9FyBDrCpmoJrTTyg0OhV7GuVsszjUB2YIIudG5Zg",
}
MIGRATED_PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    factory = MsgdFactory(tmp_path_factory, "authcache")
    inst = factory(users=[ALICE, BOB], start=False)
    inst.config_path.write_text(inst.config_text() + LIMITS)
    for name in MIGRATED:
        inst.add_user(f"{name}@{DOMAIN}", "placeholder")
    # Put the other servers' hashes in place before msgd reads the file.
    path = inst.data_dir / "directory.json"
    data = json.loads(path.read_text())
    for name, stored in MIGRATED.items():
        data["users"][f"{name}@{DOMAIN}"]["password"] = stored
        inst.passwords[f"{name}@{DOMAIN}"] = MIGRATED_PASSWORD
    path.write_text(json.dumps(data, indent=2) + "\n")
    inst.start()
    yield inst
    factory.cleanup()


def imap_login(srv, user: str, password: str) -> bytes:
    """LOGIN on a new connection; the tagged answer (after SELECT INBOX
    when it succeeded)."""
    with LineClient(srv.ports["imap"]) as c:
        assert c.imap_response().startswith(b"* OK")
        tagged, _ = c.imap_cmd("a", f'LOGIN "{user}" "{password}"')
        if tagged.startswith(b"a OK"):
            sel, _ = c.imap_cmd("b", "SELECT INBOX")
            assert sel.startswith(b"b OK"), sel
        c.imap_cmd("z", "LOGOUT")
        return tagged


def ok(tagged: bytes) -> bool:
    return tagged.startswith(b"a OK")


FAILED = b"a NO [AUTHENTICATIONFAILED] Authentication failed\r\n"


def test_password_change_between_two_logins_refuses_the_old_password_at_once(srv):
    old = srv.passwords[ALICE]
    assert ok(imap_login(srv, ALICE, old))
    assert ok(imap_login(srv, ALICE, old)), "second login (from the cache)"
    res = srv.cli("user", "modify", ALICE, "--password-stdin", input="alice-new-password\n")
    assert res.returncode == 0, res.stderr
    srv.passwords[ALICE] = "alice-new-password"
    time.sleep(RELOAD)
    # The new hash is part of what the cache remembered: the old password
    # gets the full check, and fails.
    assert imap_login(srv, ALICE, old) == FAILED
    assert ok(imap_login(srv, ALICE, "alice-new-password"))
    assert ok(imap_login(srv, ALICE, "alice-new-password"))
    assert imap_login(srv, ALICE, old) == FAILED


def test_wrong_password_after_a_cached_login_is_refused_every_time(srv):
    pw = srv.passwords[BOB]
    assert ok(imap_login(srv, BOB, pw))
    assert ok(imap_login(srv, BOB, pw))
    for wrong in [pw + "x", pw.upper(), pw[:-1], ""]:
        assert imap_login(srv, BOB, wrong) == FAILED, wrong
    assert ok(imap_login(srv, BOB, pw))


def test_hashes_from_dovecot_and_openldap_log_in_over_imap_and_pop3(srv):
    for name in MIGRATED:
        user = f"{name}@{DOMAIN}"
        assert ok(imap_login(srv, user, MIGRATED_PASSWORD)), user
        assert imap_login(srv, user, "correct horsE") == FAILED, user
        # POP3 runs the same login sequence.
        with LineClient(srv.ports["pop3"]) as c:
            assert c.readline().startswith(b"+OK")
            c.send(f"USER {user}\r\n".encode())
            assert c.readline().startswith(b"+OK")
            c.send(f"PASS {MIGRATED_PASSWORD}\r\n".encode())
            assert c.readline().startswith(b"+OK"), user
            c.send(b"QUIT\r\n")


def test_auth_keys_are_checked_and_new_hashes_use_the_argon2_parameters(tmp_path_factory):
    factory = MsgdFactory(tmp_path_factory, "authkeys")
    try:
        _auth_keys(factory)
    finally:
        # The server this test starts must not outlive it.
        factory.cleanup()


def _auth_keys(factory):
    inst = factory(start=False)
    base = inst.config_text()
    inst.config_path.write_text(base + "\n[auth]\ncache_tll = 5\n")
    res = inst.cli("check-config")
    assert res.returncode == 2 and "cache_tll" in res.stdout + res.stderr, res
    inst.config_path.write_text(base + "\n[auth]\nargon2_m_cost = 1\n")
    res = inst.cli("check-config")
    assert res.returncode == 2 and "auth.argon2" in res.stdout + res.stderr, res
    inst.config_path.write_text(
        base + "\n[auth]\ncache_ttl = 0\nhash_threads = 1\nargon2_m_cost = 1024\nargon2_t_cost = 1\n"
    )
    res = inst.cli("check-config")
    assert res.returncode == 0, res
    inst.add_user(ALICE, "pw-one")
    stored = json.loads((inst.data_dir / "directory.json").read_text())["users"][ALICE]["password"]
    assert stored.startswith("$argon2id$v=19$m=1024,t=1,p=1$"), stored
    inst.start()
    # With the cache off, every login is a full check and still works.
    for _ in range(2):
        assert ok(imap_login(inst, ALICE, "pw-one"))
    assert imap_login(inst, ALICE, "pw-two") == FAILED


def test_overlong_password_literal_is_refused_without_a_hash(srv):
    """A password over password::MAX_PASSWORD_LEN (4,096 bytes) never
    matches, even the right one: it is not hashed at all. The session goes
    on, and a normal password still works on it afterwards."""
    user = f"long@{DOMAIN}"
    long = "x" * 5000
    srv.add_user(user, long)
    time.sleep(RELOAD)
    with LineClient(srv.ports["imap"]) as c:
        assert c.imap_response().startswith(b"* OK")
        c.send(f'a LOGIN "{user}" {{{len(long)}}}\r\n'.encode())
        assert c.readline().startswith(b"+")
        c.send(long.encode() + b"\r\n")
        tagged = c.imap_response()
        assert tagged == FAILED, tagged
        tagged, _ = c.imap_cmd("b", f'LOGIN "{BOB}" "{srv.passwords[BOB]}"')
        assert tagged.startswith(b"b OK"), tagged
