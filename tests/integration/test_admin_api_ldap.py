"""The provisioning HTTP API (docs/admin.md, "HTTP API") over the LDAP
back end: a private slapd (tests/ldap) and an all-in-one msgd serving the
console listener, bound for writes as the provisioning account. A site
administrator creates a domain with an administrator, users in it and
changes them; msgd's own lookups (delivery) see each change within the
cache TTL; the domain administrator is kept to their domain (403).

Needs the LDAP back end (branch provldap: src/provision/ldap.rs and the
provisioning account in tests/ldap/base.ldif).
"""

from __future__ import annotations

import textwrap
import time

import pytest
import requests

from conftest import free_ports, unique
from tiers import Ldap, Node, rcpt_replies

ADMIN_DN = "cn=provisioning,ou=services,dc=example,dc=test"
ADMIN_PASSWORD = "provisioning-secret"  # tests/ldap/base.ldif
SITE = "bob@example.test"
SITE_PASSWORD = "bob-secret"
DOMAIN_ADMIN = "alice@example.test"
DOMAIN_ADMIN_PASSWORD = "alice-secret"
TIMEOUT = 20


def eventually(what, f, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not f():
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("admin_ldap")
    ldap = Ldap(root / "ldap", "")
    pw = root / "admin-password"
    pw.write_text(ADMIN_PASSWORD + "\n")
    pw.chmod(0o600)
    port = free_ports(1)[0]
    # Appended right after [directory.ldap]: the first lines belong to it.
    extra = textwrap.dedent(f"""\
        admin_dn = "{ADMIN_DN}"
        admin_password_file = "{pw}"

        [store]
        host = "store1.test"

        [provision]
        site_admins = ["{SITE}"]

        [provision.ldap]
        domain_base = "ou=domains,dc=example,dc=test"

        [listener.console]
        bind = ["127.0.0.1:{port}"]
        """)
    node = Node(root / "aio", "all-in-one", "aio.example.test", ldap, extra)
    node.ports["console"] = port
    ldap.start()
    try:
        node.start()
        yield node
    finally:
        node.cleanup()
        if ldap.running:
            ldap.stop()


def api(node: Node) -> str:
    return f"http://127.0.0.1:{node.ports['console']}/admin/api"


def session(node: Node, login: str, password: str) -> tuple[requests.Session, dict]:
    s = requests.Session()
    r = s.post(f"{api(node)}/login", json={"login": login, "password": password}, timeout=TIMEOUT)
    assert r.status_code == 200, f"{login}: {r.status_code} {r.text}\n{node.log()}"
    s.headers["X-CSRF-Token"] = r.json()["csrfToken"]
    return s, r.json()["actor"]


def rcpt(node: Node, address: str) -> int:
    return rcpt_replies(node, "sender@remote.example", [address])[address][0]


def test_api_on_ldap_with_a_domain_administrator(env):
    site, actor = session(env, SITE, SITE_PASSWORD)
    assert actor["role"] == "site"
    dom = f"{unique('api')}.test"
    r = site.post(f"{api(env)}/domains", json={"name": dom, "max_users": 5, "admins": [DOMAIN_ADMIN]},
                  timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    assert r.json()["admins"], r.json()
    user = f"first@{dom}"
    r = site.post(f"{api(env)}/users", json={"address": user, "password": "First-Pw-1", "quota": 4096},
                  timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    eventually("the new user takes mail", lambda: rcpt(env, user) == 250)

    alice, actor = session(env, DOMAIN_ADMIN, DOMAIN_ADMIN_PASSWORD)
    assert actor == {"role": "domain", "id": actor["id"], "domains": [dom]}, actor
    r = alice.patch(f"{api(env)}/users/{user}", json={"quota": 8192}, timeout=TIMEOUT)
    assert r.status_code == 200 and r.json()["quota"] == 8192, r.text
    # another domain: refused, nothing changed
    r = alice.patch(f"{api(env)}/users/{SITE}", json={"quota": 1}, timeout=TIMEOUT)
    assert r.status_code == 403 and r.json()["error"] == "denied", r.text
    r = alice.post(f"{api(env)}/users", json={"address": f"x@{unique()}.example.test", "password": "Pw-123456"},
                   timeout=TIMEOUT)
    assert r.status_code == 403, r.text
    r = alice.get(f"{api(env)}/users", params={"domain": "example.test"}, timeout=TIMEOUT)
    assert r.status_code == 403, r.text
    r = alice.delete(f"{api(env)}/domains/{dom}", timeout=TIMEOUT)
    assert r.status_code == 403, r.text
    assert site.get(f"{api(env)}/users/{SITE}", timeout=TIMEOUT).json()["quota"] != 1

    # deleted: msgd's own delivery refuses the address within the TTL
    r = alice.delete(f"{api(env)}/users/{user}", timeout=TIMEOUT)
    assert r.status_code == 200 and r.json()["status"] == "deleted", r.text
    eventually("a deleted user takes no mail", lambda: rcpt(env, user) >= 500)
