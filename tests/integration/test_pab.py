"""The personal address book (docs/pab.md) through JMAP for Contacts
(RFC 9610) and the compose completion source, on both directory back ends:

- LDAP: a real slapd (tests/ldap, its ACL lets the service account write
  only under ou=pab), msgd all-in-one with `directory.ldap.pab_base`; the
  contacts are read back with ldapsearch as entries under the user's
  subtree.
- the embedded directory: the per-user book file beside directory.json.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import urllib.error
import urllib.request

import pytest

from conftest import DOMAIN
from tiers import Ldap, Node

USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:contacts"]
PAB_BASE = "ou=pab,dc=example,dc=test"


def account(user: str) -> str:
    return "a" + base64.urlsafe_b64encode(user.encode()).decode().rstrip("=")


def api(port: int, user: str, password: str, calls: list) -> list:
    body = json.dumps({"using": USING, "methodCalls": calls}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/jmap/api", data=body, method="POST",
        headers={"Content-Type": "application/json",
                 "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return json.loads(r.read())["methodResponses"]
    except urllib.error.HTTPError as e:
        raise AssertionError(f"HTTP {e.code}: {e.read()[:500]!r}")


def one(responses: list, name: str) -> dict:
    got = [r for r in responses if r[0] == name]
    assert got, f"no {name} in {responses}"
    return got[0][1]


def exercise_book(call, alice: str, other: str, call_other) -> dict:
    """The same JMAP conversation on either back end; returns the created ids."""
    acc = account(alice)
    r = call([["AddressBook/get", {"accountId": acc}, "0"],
              ["ContactCard/get", {"accountId": acc}, "1"]])
    books = one(r, "AddressBook/get")["list"]
    assert [b["id"] for b in books] == ["default"] and books[0]["isDefault"] is True
    state0 = one(r, "ContactCard/get")["state"]
    assert one(r, "ContactCard/get")["list"] == []
    r = call([["ContactCard/set", {"accountId": acc, "create": {
        "z": {"@type": "Card", "addressBookIds": {"default": True},
              "name": {"full": "Zoe Zimmer"}, "emails": {"e1": {"address": "zoe@outside.example"}}},
        "p": {"@type": "Card", "addressBookIds": {"default": True},
              "name": {"full": "Paul (work) *", "components": [{"kind": "given", "value": "Paul"},
                                                              {"kind": "surname", "value": "Jones"}]},
              "emails": {"e1": {"address": "paul@outside.example"}},
              "phones": {"p1": {"number": "+1 555 0100"}},
              "organizations": {"o1": {"name": "Jones & Co, Ltd"}},
              "notes": {"n1": {"note": "met at (the) conference"}}},
        "bad": {"emails": {"e1": {"address": "not an address"}}},
    }}, "0"]])
    s = one(r, "ContactCard/set")
    assert set(s["created"]) == {"z", "p"}, s
    assert s["notCreated"]["bad"]["type"] == "invalidProperties"
    zid, pid = s["created"]["z"]["id"], s["created"]["p"]["id"]
    r = call([["ContactCard/get", {"accountId": acc, "ids": [pid, "cnope"]}, "0"],
              ["ContactCard/query", {"accountId": acc, "filter": {"text": "jones"}}, "1"],
              ["ContactCard/query", {"accountId": acc, "sort": [{"property": "name", "isAscending": True}]}, "2"],
              ["ContactCard/query", {"accountId": acc, "filter": {"email": "zoe@"}}, "3"]])
    g = one(r, "ContactCard/get")
    card = g["list"][0]
    assert card["name"]["full"] == "Paul (work) *"
    assert card["emails"]["e1"]["address"] == "paul@outside.example"
    assert card["phones"]["p1"]["number"] == "+1 555 0100"
    assert card["organizations"]["o1"]["name"] == "Jones & Co, Ltd"
    assert card["notes"]["n1"]["note"] == "met at (the) conference"
    assert g["notFound"] == ["cnope"]
    queries = [x[1] for x in r if x[0] == "ContactCard/query"]
    assert queries[0]["ids"] == [pid]
    assert queries[1]["ids"] == [pid, zid], "sorted by name"
    assert queries[2]["ids"] == [zid]
    # Update by patch, then destroy.
    r = call([["ContactCard/set", {"accountId": acc, "ifInState": g["state"],
                                   "update": {zid: {"name/full": "Zoe Z.", "phones/p1": {"number": "123"}}}}, "0"]])
    assert zid in one(r, "ContactCard/set")["updated"]
    r = call([["ContactCard/set", {"accountId": acc, "ifInState": g["state"], "destroy": [zid]}, "0"]])
    assert r[0][0] == "error" and r[0][1]["type"] == "stateMismatch"
    r = call([["ContactCard/get", {"accountId": acc, "ids": [zid]}, "0"]])
    assert one(r, "ContactCard/get")["list"][0]["name"]["full"] == "Zoe Z."
    # Another user sees none of it and cannot touch it.
    r = call_other([["ContactCard/get", {"accountId": account(other), "ids": [pid]}, "0"],
                    ["ContactCard/set", {"accountId": account(other), "destroy": [pid],
                                         "update": {zid: {"name/full": "x"}}}, "1"]])
    assert one(r, "ContactCard/get")["notFound"] == [pid]
    s = one(r, "ContactCard/set")
    assert s["notDestroyed"][pid]["type"] == "notFound" and s["notUpdated"][zid]["type"] == "notFound"
    r = call([["ContactCard/set", {"accountId": acc, "destroy": [zid]}, "0"],
              ["ContactCard/get", {"accountId": acc}, "1"]])
    assert one(r, "ContactCard/set")["destroyed"] == [zid]
    assert [c["id"] for c in one(r, "ContactCard/get")["list"]] == [pid]
    return {"state0": state0, "pid": pid}


# --------------------------------------------------------------------------
# LDAP


@pytest.fixture(scope="module")
def ldap_node(tmp_path_factory):
    root = tmp_path_factory.mktemp("pab_ldap")
    ldap = Ldap(root / "ldap").start()
    node = Node(root / "store1", "all-in-one", "store1.test", ldap,
                listeners=("smtp", "lmtp", "imap", "pop3", "http"))
    text = node.config_path.read_text()
    text = text.replace("[directory.ldap]\n", f'[directory.ldap]\npab_base = "{PAB_BASE}"\n', 1)
    # Not needed here, and its fixed quickstart port may be taken.
    node.config_path.write_text(text + "\n[listener.https]\nenabled = false\n")
    node.start()
    yield node, ldap
    node.stop()
    node.cleanup()
    ldap.stop()


def ldapsearch(ldap: Ldap, base: str, filt: str = "(objectClass=*)") -> str:
    tool = shutil.which("ldapsearch")
    if tool is None:
        pytest.fail("ldapsearch not found: apt-get install -y ldap-utils (scripts/install-test-deps.sh)", pytrace=False)
    import slapd as slapd_mod
    out = subprocess.run([tool, "-x", "-LLL", "-H", ldap.url, "-D", slapd_mod.BIND_DN, "-w",
                          slapd_mod.BIND_PASSWORD, "-b", base, filt], capture_output=True, text=True)
    assert out.returncode in (0, 32), out.stderr
    return out.stdout


def test_pab_in_ldap_through_jmap_contacts(ldap_node):
    node, ldap = ldap_node
    port = node.ports["http"]
    alice, carol = f"alice@{DOMAIN}", f"carol@{DOMAIN}"
    ids = exercise_book(lambda c: api(port, alice, "alice-secret", c), alice, carol,
                        lambda c: api(port, carol, "carol-secret", c))
    # One inetOrgPerson + msgdContact entry per contact, under alice's subtree.
    out = ldapsearch(ldap, f"ou={alice},{PAB_BASE}", "(objectClass=msgdContact)")
    assert f"uid={ids['pid']}" in out and "mail: paul@outside.example" in out, out
    assert "cn: Paul (work) *" in out and "sn: Jones" in out
    assert ldapsearch(ldap, f"ou={carol},{PAB_BASE}") == ""
    # A contact's address never turns into a recipient or a second entry
    # for a user: carol (a user) stays deliverable, nobody@ stays unknown.
    r = api(node.ports["http"], alice, "alice-secret", [["ContactCard/set", {"accountId": account(alice), "create": {
        "c": {"name": {"full": "Carol"}, "emails": {"e": {"address": carol}}},
        "n": {"name": {"full": "Nobody"}, "emails": {"e": {"address": f"nobody@{DOMAIN}"}}}}}, "0"]])
    assert set(one(r, "ContactCard/set")["created"]) == {"c", "n"}
    with node.smtp() as s:
        s.ehlo()
        assert s.docmd("MAIL FROM:<x@outside.example>")[0] == 250
        assert s.docmd(f"RCPT TO:<{carol}>")[0] == 250
        assert s.docmd(f"RCPT TO:<nobody@{DOMAIN}>")[0] >= 500


def test_directory_completion_over_ldap(ldap_node):
    node, _ = ldap_node
    port = node.ports["http"]
    alice = f"alice@{DOMAIN}"
    r = api(port, alice, "alice-secret", [
        ["msgd:Directory/query", {"accountId": account(alice), "text": "car"}, "0"],
        ["msgd:Directory/query", {"accountId": account(alice), "text": "white"}, "1"],
        ["msgd:Directory/query", {"accountId": account(alice), "text": "*"}, "2"],
        ["msgd:Directory/query", {"accountId": account(alice), "text": "dave"}, "3"],
        ["msgd:Directory/query", {"accountId": account(alice), "text": "paul"}, "4"]])
    lists = [x[1]["list"] for x in r]
    assert lists[0] == [{"name": "Carol White", "email": f"carol@{DOMAIN}"}]
    assert lists[1] == lists[0], "by surname too"
    assert lists[2] == [], "a filter metacharacter is a literal"
    assert lists[3] == [], "inactive users are not offered"
    assert lists[4] == [], "contacts are not directory users"
    for hit in lists[0]:
        assert set(hit) == {"name", "email"}


# --------------------------------------------------------------------------
# embedded directory


def test_pab_in_the_embedded_directory(msgd_factory):
    alice, bob = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
    inst = msgd_factory(users=(alice, bob), start=False)
    with open(inst.config_path, "a") as f:
        # Not needed here, and its fixed quickstart port may be taken.
        f.write("\n[listener.https]\nenabled = false\n")
    inst.start()
    port = inst.ports["http"]
    exercise_book(lambda c: api(port, alice, inst.passwords[alice], c), alice, bob,
                  lambda c: api(port, bob, inst.passwords[bob], c))
    book = inst.data_dir / "pab" / f"{alice}.json"
    assert book.is_file(), list((inst.data_dir).iterdir())
    assert oct(book.stat().st_mode & 0o777) == "0o600"
    assert "paul@outside.example" in book.read_text()
    # Changes since the empty book: the one contact left is created.
    r = api(port, alice, inst.passwords[alice], [["ContactCard/changes", {"accountId": account(alice), "sinceState": "0"}, "0"]])
    ch = one(r, "ContactCard/changes")
    assert len(ch["created"]) == 1 and ch["destroyed"] == [], ch
    # Completion from the embedded directory: addresses by prefix.
    r = api(port, alice, inst.passwords[alice], [["msgd:Directory/query", {"accountId": account(alice), "text": "bo"}, "0"]])
    assert one(r, "msgd:Directory/query")["list"] == [{"name": "", "email": bob}]
    # The book survives a restart.
    inst.stop()
    inst.start()
    r = api(port, alice, inst.passwords[alice], [["ContactCard/get", {"accountId": account(alice)}, "0"]])
    assert len(one(r, "ContactCard/get")["list"]) == 1
