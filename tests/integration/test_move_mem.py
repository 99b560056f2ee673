"""The mem (webmail front end) relays a store's answer for a user held by
a move (`msgd user move`, store::moving): `503` with `Retry-After: 30` and
the store's problem detail, unchanged, for the JMAP API and the session
resource; other users of the same store are served as before.

Real components: a private slapd, one `msgd --role store` (store1.test,
HTTP listener) and one `msgd --role mem` in front of it. The hold is the
store's own persisted state: the store is restarted with a
`<data_dir>/moving.json` naming the user as moving (what a store keeps
after a crash in the middle of a move), which is the cheapest way to hold a
user for as long as the test needs without a second store.
"""

from __future__ import annotations

import json
import re
import textwrap
import time

import pytest

try:
    import requests
except ImportError:
    pytest.fail("python3-requests is missing: apt-get install -y python3-requests "
                "(or scripts/install-test-deps.sh)", pytrace=False)

from tiers import PASSWORDS, Ldap, Node, running

HELD = "alice@example.test"  # store1
OTHER = "carol@example.test"  # store1
MAIL = "urn:ietf:params:jmap:mail"

NO_HTTPS = """
[listener.https]
enabled = false
"""


def store_toml(keys) -> str:
    return NO_HTTPS + textwrap.dedent(f"""
        [store]
        host = "store1.test"
        min_free_disk = 1048576

        [http]
        token_key_file = "{keys}/token.key"
        """)


def mem_toml(keys, store_port: int) -> str:
    return NO_HTTPS + textwrap.dedent(f"""
        [http]
        token_key_file = "{keys}/token.key"

        [limits]
        login_failure_delay_ms = 0

        [mem]
        session_key_file = "{keys}/session.key"
        connect_timeout = 2
        store_timeout = 5

        [mem.stores]
        "store1.test" = "127.0.0.1:{store_port}"
        """)


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    root = tmp_path_factory.mktemp("movemem")
    keys = root / "keys"
    keys.mkdir()
    ldap = Ldap(root / "ldap")
    store = Node(root / "store1", "store", "store1.test", ldap, store_toml(keys),
                 listeners=("lmtp", "imap", "http"))
    mem = Node(root / "mem", "mem", "mem.test", ldap, mem_toml(keys, store.ports["http"]),
               listeners=("http",))
    with running(ldap, store, mem):
        yield store, mem


def base(node: Node) -> str:
    return f"http://127.0.0.1:{node.ports['http']}"


def logged_in(mem: Node, user: str) -> requests.Session:
    s = requests.Session()
    r = s.get(base(mem) + "/login", timeout=20)
    assert r.status_code == 200, r.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', r.text).group(1)
    r = s.post(base(mem) + "/login", data={"user": user, "password": PASSWORDS[user], "csrf": csrf},
               allow_redirects=False, timeout=30)
    assert r.status_code == 303 and s.cookies.get("msgd_session"), (r.status_code, r.text)
    return s


def api(mem: Node, s: requests.Session, account: str) -> requests.Response:
    info = s.get(base(mem) + "/session-info", timeout=20)
    assert info.status_code == 200, info.text
    body = {"using": ["urn:ietf:params:jmap:core", MAIL],
            "methodCalls": [["Mailbox/get", {"accountId": account, "ids": None}, "0"]]}
    return s.post(base(mem) + "/jmap/api", json=body,
                  headers={"X-CSRF-Token": info.json()["csrfToken"]}, timeout=20)


def test_mem_relays_the_stores_503_and_retry_after_for_a_held_user(cl):
    store, mem = cl
    held = logged_in(mem, HELD)
    r = held.get(base(mem) + "/jmap/session", timeout=20)
    assert r.status_code == 200, (r.status_code, r.text)
    account = r.json()["primaryAccounts"][MAIL]
    assert api(mem, held, account).status_code == 200

    # The hold: the store restarts with the user recorded as moving away.
    store.stop()
    (store.data_dir / "moving.json").write_text(json.dumps(
        {HELD: {"state": "moving", "to": "store2.test", "since": int(time.time())}}))
    store.start()

    # The session made before the hold is still the mem's (its cookie is
    # sealed by the mem); every call it forwards gets the store's answer.
    r = held.get(base(mem) + "/jmap/session", timeout=20)
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.headers.get("Retry-After") == "30", r.headers
    assert r.headers["Content-Type"].startswith("application/problem+json"), r.headers
    assert "moved" in r.json()["detail"], r.text
    r = api(mem, held, account)
    assert r.status_code == 503 and r.headers.get("Retry-After") == "30", (r.status_code, r.headers, r.text)
    assert "moved" in r.text

    # Another user of the same store, through the same mem: served.
    other = logged_in(mem, OTHER)
    r = other.get(base(mem) + "/jmap/session", timeout=20)
    assert r.status_code == 200, (r.status_code, r.text)
    r = api(mem, other, r.json()["primaryAccounts"][MAIL])
    assert r.status_code == 200, r.text

    # The hold ends (an aborted move): the held user is served again.
    store.stop()
    (store.data_dir / "moving.json").write_text("{}\n")
    store.start()
    r = held.get(base(mem) + "/jmap/session", timeout=20)
    assert r.status_code == 200, (r.status_code, r.text)
    assert api(mem, held, account).status_code == 200
