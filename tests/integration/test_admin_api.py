"""The provisioning HTTP API (docs/admin.md, "HTTP API") on the console
listener of an all-in-one msgd with the embedded directory: an
administrator's login and session, CRUD of users, groups and domains, a
domain administrator refused on another domain (403), CSRF, Basic for
tools, and the webmail listener not serving the API.

Real HTTP with requests against the real binary; the site administrator
is named in `[provision] site_admins`, the domain administrator is made
one through the API itself.
"""

from __future__ import annotations

import base64
import time

import pytest
import requests

from conftest import DOMAIN, Msgd, free_ports, unique, wait_until

ADMIN = f"admin@{DOMAIN}"
ALICE = f"alice@{DOMAIN}"
OTHER = "other.test"
BOSS = f"boss@{OTHER}"
TIMEOUT = 20


def console_server(root) -> Msgd:
    """An all-in-one msgd with a console listener on a free port and
    ADMIN as site administrator."""
    inst = Msgd(root)
    port = free_ports(1)[0]
    inst.ports["console"] = port
    with open(inst.config_path, "a") as f:
        f.write(
            f'\n[listener.console]\nbind = ["127.0.0.1:{port}"]\nenabled = true\n'
            f'\n[provision]\nsite_admins = ["{ADMIN}"]\n'
        )
    return inst


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    inst = console_server(tmp_path_factory.mktemp("admin_api"))
    for a in (ADMIN, ALICE, BOSS):
        inst.add_user(a)
    inst.start()
    wait_until(lambda: _accepts(inst.ports["console"]), 10)
    yield inst
    inst.stop()


def _accepts(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def base(server: Msgd) -> str:
    return f"http://127.0.0.1:{server.ports['console']}/admin/api"


class Api:
    """A logged-in API client: the session cookie and its CSRF token."""

    def __init__(self, server: Msgd, login: str, password: str):
        self.base = base(server)
        self.s = requests.Session()
        r = self.s.post(f"{self.base}/login", json={"login": login, "password": password}, timeout=TIMEOUT)
        assert r.status_code == 200, f"login of {login}: {r.status_code} {r.text}"
        self.actor = r.json()["actor"]
        self.csrf = r.json()["csrfToken"]
        assert self.csrf

    def call(self, method: str, path: str, csrf: bool = True, **kw) -> requests.Response:
        headers = kw.pop("headers", {})
        if csrf:
            headers["X-CSRF-Token"] = self.csrf
        return self.s.request(method, f"{self.base}{path}", headers=headers, timeout=TIMEOUT, **kw)


@pytest.fixture(scope="module")
def site(server) -> Api:
    return Api(server, ADMIN, server.passwords[ADMIN])


@pytest.fixture(scope="module")
def boss(server, site) -> Api:
    r = site.call("PATCH", f"/domains/{OTHER}", json={"add_admins": [BOSS]})
    assert r.status_code == 200, r.text
    assert BOSS in r.json()["admins"]
    return Api(server, BOSS, server.passwords[BOSS])


def imap_login_ok(server: Msgd, address: str, password: str) -> bool:
    m = server.imap()
    try:
        m.login(address, password)
        m.logout()
        return True
    except Exception:
        return False


def error_of(r: requests.Response) -> str:
    body = r.json()
    assert set(body) == {"error", "message"}, body
    assert body["message"], body
    return body["error"]


# --------------------------------------------------------------------------


def test_login_gives_a_session_with_csrf_token_and_security_headers(server, site):
    assert site.actor == {"role": "site", "id": ADMIN}
    r = site.call("GET", "/session")
    assert r.status_code == 200
    assert r.json()["actor"]["role"] == "site"
    assert r.json()["csrfToken"] == site.csrf
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"
    cookie = [c for c in site.s.cookies if c.name == "msgd_console"][0]
    assert cookie.path == "/admin"
    assert cookie.has_nonstandard_attr("HttpOnly")


def test_wrong_password_and_no_session_are_refused_without_a_basic_challenge(server):
    r = requests.post(f"{base(server)}/login", json={"login": ADMIN, "password": "wrong"}, timeout=TIMEOUT)
    assert r.status_code == 401
    assert error_of(r) == "unauthenticated"
    assert "www-authenticate" not in r.headers
    # A user who administers nothing cannot log in either.
    r = requests.post(f"{base(server)}/login", json={"login": ALICE, "password": server.passwords[ALICE]},
                      timeout=TIMEOUT)
    assert r.status_code == 401
    r = requests.get(f"{base(server)}/users", timeout=TIMEOUT)
    assert r.status_code == 401
    assert "www-authenticate" not in r.headers


def test_user_create_read_change_usage_list_and_delete(server, site):
    addr = f"{unique('api')}@{DOMAIN}"
    r = site.call("POST", "/users", json={"address": addr, "name": "API User", "password": "Secret-123",
                                          "quota": 50 * 1024 * 1024})
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["address"] == addr and made["quota"] == 50 * 1024 * 1024 and made["status"] == "active"
    assert "password" not in made
    # again: 409
    r = site.call("POST", "/users", json={"address": addr, "password": "x"})
    assert r.status_code == 409 and error_of(r) == "exists"
    # the new user receives mail and logs in with that password
    server.passwords[addr] = "Secret-123"
    server.send([addr], b"Subject: hello\r\n\r\nhi\r\n")
    assert server.wait_count(addr, 1) == 1
    r = site.call("GET", f"/users/{addr}/usage")
    assert r.status_code == 200, r.text
    assert r.json()["messages"] == 1 and r.json()["bytes"] > 0
    r = site.call("PATCH", f"/users/{addr}", json={"quota": 1024 * 1024, "msg_quota": 10, "name": "Renamed"})
    assert r.status_code == 200, r.text
    assert r.json()["quota"] == 1024 * 1024 and r.json()["msg_quota"] == 10 and r.json()["name"] == "Renamed"
    r = site.call("GET", f"/users/{addr}")
    assert r.json()["quota"] == 1024 * 1024
    r = site.call("PATCH", f"/users/{addr}", json={"password": "Other-456"})
    assert r.status_code == 200
    # the running server sees the new password once its directory reloads
    assert wait_until(lambda: imap_login_ok(server, addr, "Other-456"), 10)
    # an unknown field is refused, not ignored
    r = site.call("PATCH", f"/users/{addr}", json={"quotas": 1})
    assert r.status_code in (400, 422) and error_of(r) == "invalid"
    # the audit log names who did it, never the password
    log = (server.data_dir / "provision-audit.log").read_text()
    assert ADMIN in log and addr in log and "Other-456" not in log and "Secret-123" not in log
    # search and paging
    r = site.call("GET", "/users", params={"text": addr.split("@")[0]})
    assert r.status_code == 200
    assert [u["address"] for u in r.json()["items"]] == [addr]
    r = site.call("GET", "/users", params={"domain": DOMAIN, "limit": 1})
    assert len(r.json()["items"]) == 1 and r.json()["total"] >= 3
    # delete marks deleted
    r = site.call("DELETE", f"/users/{addr}")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "deleted" and r.json()["deleted_at"]
    r = site.call("GET", f"/users/{addr}")
    assert r.json()["status"] == "deleted"
    r = site.call("GET", f"/users/nobody-{addr}")
    assert r.status_code == 404 and error_of(r) == "not_found"


def test_mail_host_change_moves_the_user_to_the_other_store(tmp_path_factory):
    """All-in-one with the console (store "mail.example.test") and a second
    store sharing its directory file: a new mail_host starts `msgd user
    move` (202); the mail ends on the other store and mailHost switches."""
    import imaplib

    from tiers import Node

    root = tmp_path_factory.mktemp("admin_move")
    keys = root / "keys"
    keys.mkdir()
    one = console_server(root / "one")
    two = Node(root / "two", "store", "store2.test", None, f"""
[listener.https]
enabled = false

[directory]
path = "{one.data_dir}/directory.json"

[store]
host = "store2.test"
min_free_disk = 1048576

[http]
token_key_file = "{keys}/token.key"

[mem.stores]
"mail.example.test" = "127.0.0.1:{one.ports['http']}"
""", listeners=("lmtp", "imap", "http"))
    with open(one.config_path, "a") as f:
        f.write(f'\n[http]\ntoken_key_file = "{keys}/token.key"\n'
                f'\n[mem.stores]\n"store2.test" = "127.0.0.1:{two.ports["http"]}"\n')
    for a in (ADMIN, ALICE):
        one.add_user(a)
    try:
        one.start()
        # the first HTTP request makes the shared token key; then the
        # second store reads the same file
        requests.get(f"http://127.0.0.1:{one.ports['http']}/", timeout=TIMEOUT)
        assert (keys / "token.key").exists()
        two.start()
        assert wait_until(lambda: _accepts(one.ports["console"]), 10)
        one.send([ALICE], b"Subject: before the move\r\n\r\nstays with alice\r\n")
        assert one.wait_count(ALICE, 1) == 1
        auth = (ADMIN, one.passwords[ADMIN])
        api = f"http://127.0.0.1:{one.ports['console']}/admin/api"
        r = requests.patch(f"{api}/users/{ALICE}", json={"mail_host": "store2.test", "name": "Al Ice"},
                           auth=auth, timeout=TIMEOUT)
        assert r.status_code == 202, r.text
        assert r.json()["move"] == {"to": "store2.test"} and r.json()["user"]["name"] == "Al Ice"
        assert wait_until(lambda: requests.get(f"{api}/users/{ALICE}", auth=auth, timeout=TIMEOUT)
                          .json()["mail_host"] == "store2.test", 30), one.log() + two.log()
        m = imaplib.IMAP4("127.0.0.1", two.ports["imap"], timeout=20)
        m.login(ALICE, one.passwords[ALICE])
        typ, data = m.select("INBOX")
        assert typ == "OK" and int(data[0]) == 1
        m.logout()
        assert wait_until(lambda: "user.move.done" in (one.data_dir / "provision-audit.log").read_text(), 10)
        assert "user.move.start" in (one.data_dir / "provision-audit.log").read_text()
        # a move to the store it is on is no move; to nowhere: refused
        r = requests.patch(f"{api}/users/{ALICE}", json={"mail_host": "store2.test"}, auth=auth, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        r = requests.patch(f"{api}/users/{ALICE}", json={"mail_host": "mail.example.test"}, auth=auth,
                           timeout=TIMEOUT)
        assert r.status_code == 409 and "msgd user move" in r.json()["message"], r.text
    finally:
        if one.running:
            one.stop()
        if two.running:
            two.stop()
        two.cleanup()


def test_groups_crud(server, site):
    addr = f"{unique('list')}@{DOMAIN}"
    r = site.call("POST", "/groups", json={"address": addr, "members": [ALICE]})
    assert r.status_code == 201, r.text
    r = site.call("PATCH", f"/groups/{addr}", json={"add_members": [ADMIN], "name": "A list"})
    assert r.status_code == 200, r.text
    assert sorted(r.json()["members"]) == sorted([ALICE, ADMIN])
    r = site.call("GET", "/groups", params={"domain": DOMAIN})
    assert addr in [g["address"] for g in r.json()["items"]]
    r = site.call("DELETE", f"/groups/{addr}")
    assert r.status_code == 204
    assert site.call("GET", f"/groups/{addr}").status_code == 404


def test_domains_are_managed_by_the_site_only(server, site, boss):
    name = f"{unique('d')}.test"
    r = site.call("POST", "/domains", json={"name": name, "default_quota": 1000})
    assert r.status_code == 201, r.text
    assert site.call("GET", f"/domains/{name}").json()["default_quota"] == 1000
    r = boss.call("POST", "/domains", json={"name": f"x{name}"})
    assert r.status_code == 403 and error_of(r) == "denied"
    r = boss.call("GET", "/domains")
    assert [d["name"] for d in r.json()["items"]] == [OTHER]
    assert boss.call("GET", f"/domains/{DOMAIN}").status_code == 403
    assert boss.call("PATCH", f"/domains/{OTHER}", json={"max_users": 1000}).status_code == 403
    r = site.call("DELETE", f"/domains/{name}")
    assert r.status_code == 204, r.text


def test_domain_admin_manages_own_domain_and_cannot_touch_another(server, boss):
    assert boss.actor == {"role": "domain", "id": BOSS, "domains": [OTHER]}
    own = f"{unique('u')}@{OTHER}"
    r = boss.call("POST", "/users", json={"address": own, "password": "Pw-123456"})
    assert r.status_code == 201, r.text
    assert boss.call("PATCH", f"/users/{own}", json={"quota": 2048}).status_code == 200
    # another domain: every verb refused with 403
    foreign = f"{unique('u')}@{DOMAIN}"
    for method, path, body in [
        ("POST", "/users", {"address": foreign, "password": "Pw-123456"}),
        ("GET", f"/users/{ALICE}", None),
        ("PATCH", f"/users/{ALICE}", {"quota": 1}),
        ("DELETE", f"/users/{ALICE}", None),
        ("GET", f"/users/{ALICE}/usage", None),
        ("POST", "/groups", {"address": f"l-{foreign}"}),
        ("GET", "/users?domain=" + DOMAIN, None),
    ]:
        r = boss.call(method, path, json=body)
        assert r.status_code == 403, f"{method} {path}: {r.status_code} {r.text}"
        assert error_of(r) == "denied"
    # and the refused changes did not happen
    r = requests.get(f"{base(server)}/users/{ALICE}", auth=(ADMIN, server.passwords[ADMIN]), timeout=TIMEOUT)
    assert r.json()["status"] == "active" and r.json()["quota"] != 1
    # a domain administrator may not move mail between stores
    r = boss.call("PATCH", f"/users/{own}", json={"mail_host": "elsewhere"})
    assert r.status_code == 403


def test_state_changes_need_the_csrf_token(server, site):
    addr = f"{unique('c')}@{DOMAIN}"
    r = site.call("POST", "/users", csrf=False, json={"address": addr, "password": "Pw-123456"})
    assert r.status_code == 403 and error_of(r) == "csrf"
    r = site.call("POST", "/users", csrf=False, headers={"X-CSRF-Token": "wrong"},
                  json={"address": addr, "password": "Pw-123456"})
    assert r.status_code == 403
    assert site.call("DELETE", f"/users/{ALICE}", csrf=False).status_code == 403
    assert site.call("GET", f"/users/{addr}").status_code == 404
    # a login from another site's page is refused
    r = requests.post(f"{base(server)}/login", json={"login": ADMIN, "password": server.passwords[ADMIN]},
                      headers={"Origin": "https://evil.example"}, timeout=TIMEOUT)
    assert r.status_code == 403
    # a form post (no JSON) is not accepted as a body
    r = site.call("POST", "/users", data={"address": addr, "password": "x"})
    assert r.status_code == 415


def test_basic_for_tools_on_loopback_needs_no_csrf(server):
    auth = (ADMIN, server.passwords[ADMIN])
    addr = f"{unique('b')}@{DOMAIN}"
    r = requests.post(f"{base(server)}/users", json={"address": addr, "password": "Pw-123456"}, auth=auth,
                      timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    r = requests.get(f"{base(server)}/users/{addr}", auth=(ADMIN, "wrong"), timeout=TIMEOUT)
    assert r.status_code == 401
    bad = base64.b64encode(b"no colon").decode()
    r = requests.get(f"{base(server)}/users", headers={"Authorization": f"Basic {bad}"}, timeout=TIMEOUT)
    assert r.status_code == 401


def test_logout_ends_the_session(server):
    api = Api(server, ADMIN, server.passwords[ADMIN])
    cookie = api.s.cookies.get("msgd_console")
    assert api.call("POST", "/logout").status_code == 204
    r = requests.get(f"{base(server)}/users", cookies={"msgd_console": cookie}, timeout=TIMEOUT)
    assert r.status_code == 401


def test_bodies_are_bounded_and_the_webmail_listener_has_no_api(server, site):
    r = site.call("POST", "/users", data=b"{" + b" " * (200 * 1024) + b"}",
                  headers={"Content-Type": "application/json", "X-CSRF-Token": site.csrf})
    assert r.status_code == 413
    r = requests.get(f"http://127.0.0.1:{server.ports['http']}/admin/api/users",
                     auth=(ADMIN, server.passwords[ADMIN]), timeout=TIMEOUT)
    assert r.status_code == 404
    r = requests.get(f"http://127.0.0.1:{server.ports['console']}/jmap/session",
                     auth=(ADMIN, server.passwords[ADMIN]), timeout=TIMEOUT)
    assert r.status_code == 404


def test_usage_on_a_mem_alone_comes_from_the_users_store(tmp_path_factory):
    """Two processes sharing one embedded directory file: a store, and a
    mem serving the console; the mem asks the store for the usage."""
    import imaplib
    import subprocess

    from conftest import msgd_bin, msgd_env
    from tiers import Node

    root = tmp_path_factory.mktemp("admin_tiers")
    keys = root / "keys"
    keys.mkdir()
    store = Node(root / "store", "store", "store1.test", None, f"""
[listener.https]
enabled = false

[store]
host = "store1.test"
min_free_disk = 1048576

[http]
token_key_file = "{keys}/token.key"
""", listeners=("lmtp", "imap", "http"))
    console_port = free_ports(1)[0]
    mem = Node(root / "mem", "mem", "mem1.test", None, f"""
[listener.https]
enabled = false

[listener.console]
bind = ["127.0.0.1:{console_port}"]

[directory]
path = "{store.data_dir}/directory.json"

[provision]
site_admins = ["{ADMIN}"]

[http]
token_key_file = "{keys}/token.key"

[mem]
session_key_file = "{keys}/session.key"
default_store = "store1.test"
connect_timeout = 2
store_timeout = 3

[mem.stores]
"store1.test" = "127.0.0.1:{store.ports['http']}"
""", listeners=("http",))
    passwords = {ADMIN: "Admin-Pw-1", ALICE: "Alice-Pw-1"}
    for addr, pw in passwords.items():
        res = subprocess.run([msgd_bin(), "--config", str(store.config_path), "user", "add", addr],
                             input=pw + "\n", capture_output=True, text=True, timeout=60, env=msgd_env())
        assert res.returncode == 0, res.stderr
    try:
        store.start()
        mem.start()
        assert wait_until(lambda: _accepts(console_port), 10)
        m = imaplib.IMAP4("127.0.0.1", store.ports["imap"], timeout=20)
        m.login(ALICE, passwords[ALICE])
        m.append("INBOX", None, None, b"Subject: usage\r\n\r\n" + b"x" * 5000 + b"\r\n")
        m.logout()
        url = f"http://127.0.0.1:{console_port}/admin/api/users/{ALICE}/usage"
        r = requests.get(url, auth=(ADMIN, passwords[ADMIN]), timeout=TIMEOUT)
        assert r.status_code == 200, f"{r.status_code} {r.text}\n{mem.log()}\n{store.log()}"
        assert r.json()["messages"] == 1 and r.json()["bytes"] > 5000
        # a mail host change cannot start the move from a mem without the store
        r = requests.patch(f"http://127.0.0.1:{console_port}/admin/api/users/{ALICE}",
                           json={"mail_host": "store9.test"}, auth=(ADMIN, passwords[ADMIN]), timeout=TIMEOUT)
        assert r.status_code == 409 and "msgd user move" in r.json()["message"], r.text
        # the store answers only with a mem's token
        r = requests.get(f"http://127.0.0.1:{store.ports['http']}/msgd/usage", timeout=TIMEOUT)
        assert r.status_code == 401
    finally:
        for n in (mem, store):
            if n.running:
                n.stop()
            n.cleanup()


def test_console_listener_over_tls(tmp_path_factory):
    """`tls = "implicit"` on the console listener: HTTPS with msgd's
    certificate, and the session cookie is `Secure`."""
    import http.client
    import json

    inst = Msgd(tmp_path_factory.mktemp("admin_tls"))
    port = free_ports(1)[0]
    with open(inst.config_path, "a") as f:
        f.write(f'\n[listener.console]\nbind = ["127.0.0.1:{port}"]\ntls = "implicit"\n'
                f'\n[provision]\nsite_admins = ["{ADMIN}"]\n')
    inst.add_user(ADMIN)
    try:
        inst.start()
        assert wait_until(lambda: _accepts(port), 10)
        c = http.client.HTTPSConnection("127.0.0.1", port, context=inst.ssl_context(), timeout=TIMEOUT)
        body = json.dumps({"login": ADMIN, "password": inst.passwords[ADMIN]})
        c.request("POST", "/admin/api/login", body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        assert r.status == 200, r.read()
        cookie = r.getheader("Set-Cookie")
        assert cookie.startswith("msgd_console=") and "; Secure" in cookie and "Path=/admin" in cookie
        csrf = json.loads(r.read())["csrfToken"]
        c.request("GET", "/admin/api/users", headers={"Cookie": cookie.split(";")[0]})
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read())["total"] == 1
        assert csrf
        c.close()
        # plaintext on the TLS listener gets no answer
        with pytest.raises(requests.RequestException):
            requests.get(f"http://127.0.0.1:{port}/admin/api/users", timeout=5)
    finally:
        if inst.running:
            inst.stop()
