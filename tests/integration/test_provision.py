"""Issue 15: the provisioning CLI over the embedded directory
(docs/admin.md): users, groups and domains with --json, a domain
administrator (--as) kept to its domain and its limits, delivery and
login seeing each change, the deletion and the later purge, and bulk
CSV import of 10,000 users with export round trip."""

from __future__ import annotations

import csv
import io
import json
import smtplib
import time

import pytest

from conftest import DOMAIN, REMOTE_SENDER, build_message

OTHER = "other.test"
PM = f"postmaster@{DOMAIN}"
PROVISION = """
[provision]
purge_after = 0

[auth]
# Cheap hashes: 10,000 users are imported below (the parameters are
# recorded in each hash, so logins still check them).
argon2_m_cost = 64
argon2_t_cost = 1
argon2_p_cost = 1
"""


def run(inst, *args, input=None, ok=True):
    res = inst.cli(*args, input=input, timeout=600)
    if ok:
        assert res.returncode == 0, f"msgd {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    return res


def js(inst, *args, input=None):
    return json.loads(run(inst, *args, "--json", input=input).stdout)


def refused(inst, *args, input=None, word=""):
    res = run(inst, *args, input=input, ok=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0, f"msgd {' '.join(args)} was not refused:\n{out}"
    assert word in out, f"msgd {' '.join(args)}: {word!r} not in:\n{out}"
    return out


def login_ok(inst, address, password) -> bool:
    m = inst.imap()
    try:
        m.login(address, password)
        m.logout()
        return True
    except m.error:
        m.shutdown()
        return False


def eventually(what, f, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        if f():
            return
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.3)


def rcpt_code(inst, listener, rcpt) -> int:
    if listener == "lmtp":
        s = smtplib.LMTP("127.0.0.1", inst.ports["lmtp"], timeout=20)
        s.ehlo("client.test")
    else:
        s = inst.smtp(listener)
        s.ehlo()
    try:
        s.mail(REMOTE_SENDER)
        code, _ = s.rcpt(rcpt)
        return code
    finally:
        try:
            s.quit()
        except smtplib.SMTPException:
            pass


@pytest.fixture
def server(msgd_factory):
    inst = msgd_factory(start=False)
    inst.config_path.write_text(inst.config_text() + PROVISION)
    run(inst, "domain", "add", DOMAIN)
    inst.start()
    return inst


def test_users_groups_domains_with_json(server):
    alice, bob = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
    u = js(server, "user", "add", alice, "--quota", "5000", "--name", "Alice A", input="alice-Pw-1\n")
    assert u["address"] == alice and u["quota"] == 5000 and u["status"] == "active"
    server.passwords[alice] = "alice-Pw-1"
    js(server, "user", "add", bob, input="bob-Pw-1\n")
    server.passwords[bob] = "bob-Pw-1"
    eventually("a new user logs in", lambda: login_ok(server, alice, "alice-Pw-1"))

    # An alias delivers to its user, over SMTP and LMTP.
    u = js(server, "user", "modify", alice, "--add-alias", f"a.a@{DOMAIN}", "--quota", "9000")
    assert u["aliases"] == [f"a.a@{DOMAIN}"] and u["quota"] == 9000
    eventually("the alias is known", lambda: rcpt_code(server, "smtp", f"a.a@{DOMAIN}") == 250)
    server.send(f"a.a@{DOMAIN}", build_message(f"a.a@{DOMAIN}", "via alias", "hi\r\n"))
    server.wait_count(alice, 1)
    assert rcpt_code(server, "lmtp", f"a.a@{DOMAIN}") == 250

    # One address, one owner.
    refused(server, "group", "add", f"a.a@{DOMAIN}", "--member", bob, word="exists")
    refused(server, "user", "add", alice, input="x\n", word="exists")
    # A user or group in a domain that is not local: add the domain first.
    refused(server, "group", "add", f"list@{OTHER}", "--member", bob, word="add the domain first")

    # A group delivers to its members.
    g = js(server, "group", "add", f"team@{DOMAIN}", "--member", alice, "--member", bob, "--name", "Team")
    assert g["members"] == [alice, bob] and g["name"] == "Team"
    g = js(server, "group", "modify", f"team@{DOMAIN}", "--remove-member", alice)
    assert g["members"] == [bob]
    assert js(server, "group", "show", f"team@{DOMAIN}")["members"] == [bob]
    assert [x["address"] for x in js(server, "group", "list")["items"]] == [f"team@{DOMAIN}"]
    eventually("the group is known", lambda: rcpt_code(server, "smtp", f"team@{DOMAIN}") == 250)
    server.send(f"team@{DOMAIN}", build_message(f"team@{DOMAIN}", "to the team", "hi\r\n"))
    server.wait_count(bob, 1)

    # Show and list.
    assert js(server, "user", "show", alice)["name"] == "Alice A"
    page = js(server, "user", "list", "--domain", DOMAIN)
    # (postmaster: made by the first start.)
    assert [x["address"] for x in page["items"]] == [alice, bob, PM] and page["total"] == 3
    assert js(server, "user", "list", "--text", "BOB")["total"] == 1
    text = run(server, "user", "list").stdout
    assert alice in text and bob in text

    # A new password: the old one is refused.
    run(server, "user", "modify", bob, "--password-stdin", input="bob-Pw-2\n")
    eventually("the new password works", lambda: login_ok(server, bob, "bob-Pw-2"))
    assert not login_ok(server, bob, "bob-Pw-1")
    server.passwords[bob] = "bob-Pw-2"

    # Inactive: mail and login refused; active again: back.
    js(server, "user", "modify", bob, "--status", "inactive")
    eventually("an inactive user is refused mail", lambda: rcpt_code(server, "smtp", bob) >= 500)
    assert not login_ok(server, bob, "bob-Pw-2")
    js(server, "user", "modify", bob, "--status", "active")
    eventually("an active user gets mail again", lambda: rcpt_code(server, "smtp", bob) == 250)

    # Domains.
    d = js(server, "domain", "add", OTHER, "--default-quota", "1234", "--max-users", "5")
    assert d["name"] == OTHER and d["default_quota"] == 1234 and d["max_users"] == 5
    u = js(server, "user", "add", f"c@{OTHER}", input="c-Pw\n")
    assert u["quota"] == 1234, "the domain's default quota"
    refused(server, "domain", "delete", OTHER, word="still has")
    names = [x["name"] for x in js(server, "domain", "list")["items"]]
    assert names == sorted([DOMAIN, OTHER])

    # The change log names who did what, never a password.
    log = (server.data_dir / "provision-audit.log").read_text()
    lines = [json.loads(x) for x in log.splitlines()]
    assert any(x["action"] == "user.add" and x["target"] == alice for x in lines)
    assert all(x["who"].startswith("cli:") for x in lines)
    assert "bob-Pw-2" not in log and "alice-Pw-1" not in log


def test_domain_admin_is_kept_to_its_domain_and_limits(server):
    boss = f"boss@{DOMAIN}"
    run(server, "user", "add", boss, "--quota", "100", input="boss-Pw\n")
    run(server, "domain", "modify", DOMAIN, "--add-admin", boss, "--max-users", "4", "--max-quota", "1000")
    run(server, "domain", "add", OTHER)
    as_boss = ("--as", boss)

    u = js(server, "user", "add", *as_boss, f"u1@{DOMAIN}", "--quota", "400", input="u1-Pw\n")
    assert u["address"] == f"u1@{DOMAIN}"
    # Another domain: refused, for users, groups, domains and listings.
    refused(server, "user", "add", *as_boss, f"x@{OTHER}", input="pw\n", word="not allowed")
    refused(server, "group", "add", *as_boss, f"g@{OTHER}", "--member", boss, word="not allowed")
    refused(server, "user", "list", *as_boss, "--domain", OTHER, word="not allowed")
    refused(server, "domain", "show", *as_boss, OTHER, word="not allowed")
    refused(server, "domain", "add", *as_boss, "third.test", word="site administrator")
    refused(server, "domain", "delete", *as_boss, OTHER, word="site administrator")
    # Its own domain's limits and administrators are the site's.
    refused(server, "domain", "modify", *as_boss, DOMAIN, "--max-users", "100", word="not allowed")
    refused(server, "domain", "modify", *as_boss, DOMAIN, "--add-admin", f"u1@{DOMAIN}", word="not allowed")
    refused(server, "user", "modify", *as_boss, f"u1@{DOMAIN}", "--mail-host", "elsewhere", word="not allowed")
    # Over the quota limit (100 + 400 given; 600 more is too much).
    refused(server, "user", "add", *as_boss, f"u2@{DOMAIN}", "--quota", "600", input="pw\n", word="limit reached")
    refused(server, "user", "modify", *as_boss, f"u1@{DOMAIN}", "--quota", "1000", word="limit reached")
    # An unlimited user in a domain with a quota limit.
    refused(server, "user", "add", *as_boss, f"u2@{DOMAIN}", input="pw\n", word="needs a quota")
    run(server, "user", "add", *as_boss, f"u2@{DOMAIN}", "--quota", "500", input="u2-Pw\n")
    # Over the user limit (4, with the postmaster made by the first start).
    refused(server, "user", "add", *as_boss, f"u3@{DOMAIN}", "--quota", "1", input="pw\n", word="at most 4 users")
    # A deleted user frees its place.
    run(server, "user", "delete", *as_boss, f"u2@{DOMAIN}")
    run(server, "user", "add", *as_boss, f"u3@{DOMAIN}", "--quota", "1", input="u3-Pw\n")
    # Its listing is its domain.
    page = js(server, "user", "list", *as_boss)
    assert {x["address"] for x in page["items"]} == {PM, boss, f"u1@{DOMAIN}", f"u2@{DOMAIN}", f"u3@{DOMAIN}"}
    assert [d["name"] for d in js(server, "domain", "list", *as_boss)["items"]] == [DOMAIN]
    # A user who administers nothing is refused.
    refused(server, "user", "list", "--as", f"u1@{DOMAIN}", word="not an administrator")
    # The log names the administrator.
    log = [json.loads(x) for x in (server.data_dir / "provision-audit.log").read_text().splitlines()]
    assert any(x["who"] == boss and x["target"] == f"u3@{DOMAIN}" for x in log)
    # A new user of the domain logs in.
    server.passwords[f"u3@{DOMAIN}"] = "u3-Pw"
    eventually("a user made by a domain administrator logs in", lambda: login_ok(server, f"u3@{DOMAIN}", "u3-Pw"))


def test_delete_then_purge(server):
    gone = f"gone@{DOMAIN}"
    run(server, "user", "add", gone, input="gone-Pw\n")
    server.passwords[gone] = "gone-Pw"
    eventually("the user logs in", lambda: login_ok(server, gone, "gone-Pw"))
    m = server.imap(gone)
    m.create("Archive")
    m.logout()
    server.send(gone, build_message(gone, "before", "kept until the purge\r\n"))
    server.wait_count(gone, 1)

    u = js(server, "user", "delete", gone)
    assert u["status"] == "deleted" and u["deleted_at"]
    # Mail refused, login refused; the entry and the mail stay.
    eventually("mail for a deleted user is refused", lambda: rcpt_code(server, "smtp", gone) >= 500)
    eventually("a deleted user cannot log in", lambda: not login_ok(server, gone, "gone-Pw"), timeout=30)
    assert js(server, "user", "show", gone)["status"] == "deleted"

    # The purge (purge_after = 0), a later step.
    res = js(server, "user", "purge")
    assert res["purged"] == [gone], res
    refused(server, "user", "show", gone, word="no such entry")
    # The store holds no mail for the user: re-created, the address
    # starts empty.
    run(server, "user", "add", gone, input="new-Pw\n")
    server.passwords[gone] = "new-Pw"
    eventually("the new user logs in", lambda: login_ok(server, gone, "new-Pw"))
    m = server.imap(gone)
    typ, data = m.select("INBOX", readonly=True)
    assert typ == "OK" and int(data[0]) == 0, f"INBOX after purge: {data}"
    typ, boxes = m.list()
    assert not any(b"Archive" in b for b in boxes), boxes
    m.logout()
    log = [json.loads(x) for x in (server.data_dir / "provision-audit.log").read_text().splitlines()]
    assert any(x["action"] == "user.purge" and x["who"] == "msgd:purge" for x in log)


def test_bulk_import_10000_and_export_round_trip(server, tmp_path):
    n = 10_000
    path = tmp_path / "users.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["address", "password", "name", "quota", "aliases"])
        for i in range(n):
            w.writerow([f"bulk{i:05d}@{DOMAIN}", f"pw-{i}", f"Bulk, {i}", 1000 + i, f"alias{i:05d}@{DOMAIN}"])
        # Three bad lines: a bad name, a duplicate, a non-number.
        w.writerow([f"bad/name@{DOMAIN}", "pw", "", "", ""])
        w.writerow([f"bulk00001@{DOMAIN}", "pw", "", "", ""])
        w.writerow([f"x@{DOMAIN}", "pw", "", "lots", ""])
    t0 = time.monotonic()
    res = run(server, "user", "import", str(path), "--json", ok=False)
    took = time.monotonic() - t0
    print(f"\nimport of {n} users: {took:.1f} s")
    assert res.returncode == 1, f"bad lines must fail the run:\n{res.stdout}\n{res.stderr}"
    out = json.loads(res.stdout)
    assert out["added"] == n, out
    assert [f["line"] for f in out["failed"]] == [n + 2, n + 3, n + 4], out["failed"]
    assert "not a valid name" in out["failed"][0]["error"]
    assert "exists" in out["failed"][1]["error"]
    assert "not a number" in out["failed"][2]["error"]

    # Spot checks: login, delivery through the alias.
    for i in (0, 4321, n - 1):
        a = f"bulk{i:05d}@{DOMAIN}"
        server.passwords[a] = f"pw-{i}"
        eventually(f"{a} logs in", lambda a=a, i=i: login_ok(server, a, f"pw-{i}"))
        u = js(server, "user", "show", a)
        assert u["quota"] == 1000 + i and u["aliases"] == [f"alias{i:05d}@{DOMAIN}"] and u["name"] == f"Bulk, {i}"
    server.send(f"alias04321@{DOMAIN}", build_message(f"alias04321@{DOMAIN}", "bulk", "hi\r\n"))
    server.wait_count(f"bulk04321@{DOMAIN}", 1)

    # Export, then import into a fresh directory: the same users.
    exported = run(server, "user", "export").stdout
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert len(rows) == n + 1  # and the postmaster
    assert all(r["password"] == "" for r in rows), "the export writes no passwords"
    fresh = tmp_path / "fresh"
    from conftest import Msgd
    other = Msgd(fresh)
    other.config_path.write_text(other.config_text() + PROVISION)
    small = tmp_path / "export.csv"
    small.write_text("\n".join(exported.splitlines()[:201]) + "\n")
    run(other, "user", "import", str(small))
    again = run(other, "user", "export").stdout
    assert again.splitlines() == exported.splitlines()[:201]
