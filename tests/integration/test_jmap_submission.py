"""JMAP submission, identities and the vacation response (RFC 8621 6-8)
against the real binary (all-in-one: the in-process queue).

Real components: msgd, IMAP (imaplib) to place drafts and read what
arrived, SMTP (smtplib) for incoming mail, and a small SMTP server written
here as the smarthost (`[mta] relay`) that receives what goes outside.
JMAP is spoken as raw HTTP/JSON with Basic authentication from loopback.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import DOMAIN, _imap_logout, free_ports, unique, wait_until

ALICE = f"alice@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
CAROL = f"carol@{DOMAIN}"
OUTSIDE = "friend@outside.example"
USING = [
    "urn:ietf:params:jmap:core",
    "urn:ietf:params:jmap:mail",
    "urn:ietf:params:jmap:submission",
    "urn:ietf:params:jmap:vacationresponse",
]


class Sink:
    """A minimal SMTP server: accepts everything, records each message
    (envelope and data)."""

    def __init__(self):
        self.port = free_ports(1)[0]
        self.messages: list[dict] = []
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket):
        f = conn.makefile("rwb")

        def reply(line: str):
            f.write(line.encode() + b"\r\n")
            f.flush()

        reply("220 sink ESMTP")
        sender, rcpts = None, []
        try:
            while True:
                line = f.readline()
                if not line:
                    return
                cmd = line.decode(errors="replace").strip()
                up = cmd.upper()
                if up.startswith("EHLO") or up.startswith("HELO"):
                    reply("250-sink")
                    reply("250 8BITMIME")
                elif up.startswith("MAIL FROM:"):
                    sender = re.search(r"<([^>]*)>", cmd).group(1)
                    rcpts = []
                    reply("250 ok")
                elif up.startswith("RCPT TO:"):
                    rcpts.append(re.search(r"<([^>]*)>", cmd).group(1).lower())
                    reply("250 ok")
                elif up == "DATA":
                    reply("354 go")
                    data = b""
                    while True:
                        l = f.readline()
                        if l in (b".\r\n", b""):
                            break
                        data += l[1:] if l.startswith(b"..") else l
                    with self.lock:
                        self.messages.append({"sender": sender, "rcpts": rcpts, "data": data})
                    reply("250 queued")
                elif up == "QUIT":
                    reply("221 bye")
                    return
                else:
                    reply("250 ok")
        finally:
            conn.close()

    def for_rcpt(self, rcpt: str) -> list[dict]:
        with self.lock:
            return [m for m in self.messages if rcpt.lower() in m["rcpts"]]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from conftest import MsgdFactory

    sink = Sink()
    factory = MsgdFactory(tmp_path_factory, "jmap_submission")
    inst = factory(users=(ALICE, BOB, CAROL), start=False)
    inst.ports["https"] = free_ports(1)[0]
    with open(inst.config_path, "a") as f:
        f.write(f'\n[mta]\nrelay = "127.0.0.1:{sink.port}"\nrelay_tls = "none"\n')
        # HTTPS on a free port (jmapc speaks only https).
        f.write(f'\n[listener.https]\nbind = ["127.0.0.1:{inst.ports["https"]}"]\nenabled = true\n')
    inst.start()
    yield inst, sink
    factory.cleanup()
    sink.stop()


def jmap(inst, user: str, calls: list, using=USING) -> list:
    body = json.dumps({"using": using, "methodCalls": calls}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{inst.ports['http']}/jmap/api", data=body, method="POST",
        headers={"Content-Type": "application/json",
                 "Authorization": "Basic " + base64.b64encode(
                     f"{user}:{inst.passwords[user]}".encode()).decode()})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            assert r.status == 200
            return json.loads(r.read())["methodResponses"]
    except urllib.error.HTTPError as e:
        raise AssertionError(f"HTTP {e.code}: {e.read()[:500]!r}\n{inst.log(4000)}")


def account(user: str) -> str:
    return "a" + base64.urlsafe_b64encode(user.encode()).decode().rstrip("=")


def one(responses: list, name: str) -> dict:
    got = [r for r in responses if r[0] == name]
    assert got, f"no {name} in {responses}"
    return got[0][1]


def draft(inst, user: str, message: bytes) -> str:
    """APPENDs a draft over IMAP and returns its JMAP email id (EMAILID)."""
    m = inst.imap(user)
    try:
        m.create("Drafts")
        typ, data = m.append("Drafts", r"(\Draft \Seen)", None, message)
        assert typ == "OK", data
        uid = re.search(rb"APPENDUID \d+ (\d+)", data[0]).group(1).decode()
        m.select("Drafts")
        typ, data = m.uid("FETCH", uid, "(EMAILID)")
        assert typ == "OK", data
        return re.search(rb"EMAILID \(([^)]+)\)", data[0]).group(1).decode()
    finally:
        _imap_logout(m)


def fetch_inbox(inst, user: str) -> list[bytes]:
    m = inst.imap(user)
    try:
        m.select("INBOX", readonly=True)
        typ, data = m.fetch("1:*", "(BODY.PEEK[])")
        return [d[1] for d in data if isinstance(d, tuple)]
    finally:
        _imap_logout(m)


def identity_of(inst, user: str, email: str) -> str:
    r = jmap(inst, user, [["Identity/get", {"accountId": account(user)}, "0"]])
    ids = [i["id"] for i in one(r, "Identity/get")["list"] if i["email"] == email]
    assert ids, r
    return ids[0]


def submit(inst, user: str, email_id: str, envelope=None) -> dict:
    create = {"identityId": identity_of(inst, user, user), "emailId": email_id}
    if envelope is not None:
        create["envelope"] = envelope
    r = jmap(inst, user, [["EmailSubmission/set", {"accountId": account(user), "create": {"k1": create}}, "0"]])
    return one(r, "EmailSubmission/set")


def test_rfc8621_7_submission_reaches_a_local_user_and_the_outside_without_bcc(world):
    inst, sink = world
    tag = unique("sub")
    msg = (f"From: Alice <{ALICE}>\r\nTo: <{BOB}>, <{OUTSIDE}>\r\nBcc: <{CAROL}>\r\n"
           f"Subject: {tag}\r\nMessage-ID: <{tag}@example.test>\r\n\r\nhello from JMAP\r\n").encode()
    eid = draft(inst, ALICE, msg)
    res = submit(inst, ALICE, eid)
    assert "k1" in (res.get("created") or {}), res
    assert res["created"]["k1"]["undoStatus"] == "final"
    # Bob reads it over IMAP; Carol (Bcc) got it too, without the Bcc field.
    inst.wait_count(BOB, 1)
    inst.wait_count(CAROL, 1)
    for who in (BOB, CAROL):
        got = [m for m in fetch_inbox(inst, who) if tag.encode() in m]
        assert got, f"{who} has no copy"
        assert not re.search(rb"(?im)^bcc:", got[0]), got[0][:400]
        assert re.search(rb"(?im)^received: by .* with HTTP \(JMAP\)", got[0]), got[0][:400]
    # The outside copy went to the smarthost with alice as envelope sender.
    assert wait_until(lambda: sink.for_rcpt(OUTSIDE), 20), f"nothing at the relay\n{inst.log(4000)}"
    out = [m for m in sink.for_rcpt(OUTSIDE) if tag.encode() in m["data"]]
    assert out and out[0]["sender"] == ALICE, sink.messages
    assert not re.search(rb"(?im)^bcc:", out[0]["data"])
    # /get and /query show the submission.
    sid = res["created"]["k1"]["id"]
    r = jmap(inst, ALICE, [["EmailSubmission/get", {"accountId": account(ALICE), "ids": [sid]}, "0"],
                           ["EmailSubmission/query", {"accountId": account(ALICE),
                                                      "filter": {"emailIds": [eid]}}, "1"]])
    got = one(r, "EmailSubmission/get")["list"][0]
    assert got["emailId"] == eid and got["envelope"]["mailFrom"]["email"] == ALICE
    assert sorted(x["email"] for x in got["envelope"]["rcptTo"]) == sorted([BOB, OUTSIDE, CAROL])
    assert one(r, "EmailSubmission/query")["ids"] == [sid]


def test_rfc8621_7_5_forbidden_from_and_given_envelope(world):
    inst, sink = world
    tag = unique("forged")
    eid = draft(inst, ALICE, (f"From: <boss@{DOMAIN}>\r\nTo: <{BOB}>\r\nSubject: {tag}\r\n\r\nx\r\n").encode())
    res = submit(inst, ALICE, eid)
    assert res["notCreated"]["k1"]["type"] == "forbiddenFrom", res
    # An envelope sender that is not alice's: refused too.
    ok_draft = draft(inst, ALICE, (f"From: <{ALICE}>\r\nTo: <{BOB}>\r\nSubject: {tag}\r\n\r\nx\r\n").encode())
    res = submit(inst, ALICE, ok_draft, {"mailFrom": {"email": BOB}, "rcptTo": [{"email": BOB}]})
    assert res["notCreated"]["k1"]["type"] == "forbiddenFrom", res
    # Another user's email id: not found (never their data).
    res = submit(inst, BOB, ok_draft)
    assert res["notCreated"]["k1"]["type"] == "emailNotFound", res
    # Nothing of this reached bob.
    time.sleep(1)
    assert not [m for m in fetch_inbox(inst, BOB) if tag.encode() in m]
    # The given envelope decides the recipients: only the outside address.
    tag2 = unique("env")
    eid = draft(inst, ALICE, (f"From: <{ALICE}>\r\nTo: <{BOB}>\r\nSubject: {tag2}\r\n\r\nx\r\n").encode())
    res = submit(inst, ALICE, eid, {"mailFrom": {"email": ALICE}, "rcptTo": [{"email": "only@outside.example"}]})
    assert "k1" in (res.get("created") or {}), res
    assert wait_until(lambda: [m for m in sink.for_rcpt("only@outside.example") if tag2.encode() in m["data"]], 20)


def test_rfc8621_6_identities_are_the_users_addresses_only(world):
    inst, _ = world
    acc = account(ALICE)
    r = jmap(inst, ALICE, [["Identity/get", {"accountId": acc}, "0"]])
    got = one(r, "Identity/get")
    assert [i["email"] for i in got["list"]] == [ALICE]
    assert got["list"][0]["mayDelete"] is False
    iid = got["list"][0]["id"]
    r = jmap(inst, ALICE, [["Identity/set", {
        "accountId": acc,
        "create": {"x": {"email": f"boss@{DOMAIN}", "name": "Boss"},
                   "y": {"email": ALICE, "name": "Alice (work)", "textSignature": "-- A"}},
        "update": {iid: {"name": "Alice Smith", "replyTo": [{"name": None, "email": ALICE}]}},
        "destroy": [iid]}, "0"]])
    s = one(r, "Identity/set")
    assert s["notCreated"]["x"]["type"] == "forbiddenFrom", s
    assert s["created"]["y"]["mayDelete"] is True
    assert s["notDestroyed"][iid]["type"] == "forbidden"
    assert iid in s["updated"]
    r = jmap(inst, ALICE, [["Identity/get", {"accountId": acc}, "0"]])
    names = {i["id"]: i["name"] for i in one(r, "Identity/get")["list"]}
    assert names[iid] == "Alice Smith" and names[s["created"]["y"]["id"]] == "Alice (work)"
    state = one(r, "Identity/get")["state"]
    r = jmap(inst, ALICE, [["Identity/changes", {"accountId": acc, "sinceState": state}, "0"],
                           ["Identity/changes", {"accountId": acc, "sinceState": "old"}, "1"]])
    assert r[0][1]["newState"] == state and r[0][1]["created"] == []
    assert r[1][0] == "error" and r[1][1]["type"] == "cannotCalculateChanges"
    # Bob sees none of alice's identities.
    r = jmap(inst, BOB, [["Identity/get", {"accountId": account(BOB), "ids": [s["created"]["y"]["id"]]}, "0"]])
    assert one(r, "Identity/get")["notFound"] == [s["created"]["y"]["id"]]


def test_rfc8621_8_vacation_reply_once_and_not_to_lists_or_null_sender(world):
    inst, sink = world
    acc = account(CAROL)
    r = jmap(inst, CAROL, [["VacationResponse/set", {"accountId": acc, "update": {"singleton": {
        "isEnabled": True, "fromDate": "2020-01-01T00:00:00Z", "subject": "Away",
        "textBody": "Back on Monday."}}}, "0"],
        ["VacationResponse/get", {"accountId": acc}, "1"]])
    assert "singleton" in one(r, "VacationResponse/set")["updated"]
    v = one(r, "VacationResponse/get")["list"][0]
    assert v["isEnabled"] is True and v["subject"] == "Away"
    r = jmap(inst, CAROL, [["VacationResponse/set", {"accountId": acc, "create": {"n": {}}, "destroy": ["singleton"]}, "0"]])
    s = one(r, "VacationResponse/set")
    assert s["notCreated"]["n"]["type"] == "singleton" and s["notDestroyed"]["singleton"]["type"] == "singleton"

    def incoming(sender: str, extra: str = "", to: str = CAROL) -> str:
        tag = unique("vac")
        data = (f"From: <{sender or 'daemon@outside.example'}>\r\nTo: <{to}>\r\n{extra}"
                f"Subject: {tag}\r\nMessage-ID: <{tag}@outside.example>\r\n\r\nhi\r\n").encode()
        inst.send([CAROL], data, sender=sender)
        return tag

    def replies_to(addr: str) -> list[dict]:
        return [m for m in sink.for_rcpt(addr) if b"auto-replied" in m["data"].lower()]

    first = incoming("pal@outside.example")
    assert wait_until(lambda: replies_to("pal@outside.example"), 20), f"no vacation reply\n{inst.log(4000)}"
    reply = replies_to("pal@outside.example")[0]
    assert reply["sender"] == "", "the reply goes out with the null envelope sender"
    assert re.search(rb"(?m)^Auto-Submitted: auto-replied\r$", reply["data"])
    assert re.search(rb"(?m)^Subject: Away\r$", reply["data"])
    assert f"In-Reply-To: <{first}@outside.example>".encode() in reply["data"]
    # Not again to the same sender; never to lists, bulk, auto-submitted,
    # the null sender, or mail not addressed to carol.
    incoming("pal@outside.example")
    incoming("list@outside.example", "List-Id: <news.outside.example>\r\n")
    incoming("bulk@outside.example", "Precedence: bulk\r\n")
    incoming("robot@outside.example", "Auto-Submitted: auto-generated\r\n")
    incoming("")
    incoming("bccd@outside.example", to="someone@outside.example")
    # A marker sender sent last: once its reply is there, the others had time.
    incoming("marker@outside.example")
    assert wait_until(lambda: replies_to("marker@outside.example"), 20)
    inst.wait_count(CAROL, 8)
    time.sleep(1.5)
    assert len(replies_to("pal@outside.example")) == 1
    for who in ("list@", "bulk@", "robot@", "daemon@", "bccd@"):
        assert not replies_to(f"{who}outside.example"), who
    assert not [m for m in sink.messages if m["rcpts"] == [""]]


def test_submission_with_the_jmapc_client(world):
    """A JMAP client we did not write (jmapc from PyPI, over HTTPS): Identity/get
    and EmailSubmission/set, the message read by bob over IMAP."""
    try:
        import jmapc
        import requests
    except ImportError:
        pytest.fail("jmapc is not installed: pip install jmapc (scripts/install-test-deps.sh)", pytrace=False)
    from jmapc.methods import EmailSubmissionSet, IdentityGet
    from jmapc.models import EmailSubmission

    inst, _ = world
    ctx = inst.ssl_context()

    class Adapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *a, **kw):
            kw["ssl_context"] = ctx
            return super().init_poolmanager(*a, **kw)

    client = jmapc.Client.create_with_password(
        host=f"127.0.0.1:{inst.ports['https']}", user=ALICE, password=inst.passwords[ALICE])
    client.requests_session.mount("https://", Adapter())
    ident = client.request(IdentityGet(ids=None))
    identity = [i for i in ident.data if i.email == ALICE][0]
    tag = unique("jmapc")
    eid = draft(inst, ALICE, (f"From: <{ALICE}>\r\nTo: <{BOB}>\r\nSubject: {tag}\r\n\r\nvia jmapc\r\n").encode())
    res = client.request(EmailSubmissionSet(create={"s": EmailSubmission(identity_id=identity.id, email_id=eid)}))
    assert res.created and "s" in res.created, res
    assert wait_until(lambda: [m for m in fetch_inbox(inst, BOB) if tag.encode() in m], 20), inst.log(4000)


def test_rfc8621_7_5_on_success_update_email_follows_as_an_implicit_email_set(world):
    inst, _ = world
    tag = unique("onsuccess")
    eid = draft(inst, ALICE, (f"From: <{ALICE}>\r\nTo: <{BOB}>\r\nSubject: {tag}\r\n\r\nx\r\n").encode())
    r = jmap(inst, ALICE, [["EmailSubmission/set", {
        "accountId": account(ALICE),
        "create": {"k1": {"identityId": identity_of(inst, ALICE, ALICE), "emailId": eid}},
        "onSuccessUpdateEmail": {"#k1": {"keywords/$draft": None}},
        "onSuccessDestroyEmail": ["#nope"]}, "c1"]])
    assert r[0][0] == "EmailSubmission/set" and "k1" in r[0][1]["created"], r
    # The implicit Email/set answers right after, under the same call id
    # (its outcome is the Email methods' business).
    assert len(r) == 2 and r[1][0] in ("Email/set", "error") and r[1][2] == "c1", r
    inst.wait_count(BOB, 1)


def test_store_role_without_queue_submits_through_the_relay(tmp_path_factory):
    """A `store` alone has no queue: JMAP submission goes by SMTP to
    `[mta] relay` (the mta-out), every recipient relayed, answered after
    the relay's 250. Real slapd for the directory."""
    from tiers import Ldap, Node

    root = tmp_path_factory.mktemp("jmap_store_role")
    sink = Sink()
    ldap = Ldap(root / "ldap").start()
    node = Node(root / "store1", "store", "store1.test", ldap,
                listeners=("lmtp", "imap", "pop3", "http"),
                extra=f'[mta]\nrelay = "127.0.0.1:{sink.port}"\nrelay_tls = "none"\n'
                      '[listener.https]\nenabled = false\n')
    try:
        node.start()
        alice, bob = f"alice@{DOMAIN}", f"bob@{DOMAIN}"

        class Inst:  # what draft() and jmap() need
            ports = node.ports
            passwords = {alice: "alice-secret"}

            def imap(self, user):
                return node.imap(user, "alice-secret")

            def log(self, n=4000):
                return node.log(n)

        inst = Inst()
        tag = unique("storerole")
        eid = draft(inst, alice, (f"From: <{alice}>\r\nTo: <{bob}>, <{OUTSIDE}>\r\nSubject: {tag}\r\n\r\nx\r\n").encode())
        res = submit(inst, alice, eid)
        assert "k1" in (res.get("created") or {}), f"{res}\n{node.log()}"
        got = [m for m in sink.messages if tag.encode() in m["data"]]
        assert got, "answered only after the relay took it"
        assert sorted(got[0]["rcpts"]) == sorted([bob, OUTSIDE]) and got[0]["sender"] == alice
        # forbiddenFrom holds here too.
        eid = draft(inst, alice, (f"From: <{bob}>\r\nTo: <{bob}>\r\nSubject: {tag}\r\n\r\nx\r\n").encode())
        assert submit(inst, alice, eid)["notCreated"]["k1"]["type"] == "forbiddenFrom"
    finally:
        node.stop()
        node.cleanup()
        ldap.stop()
        sink.stop()
