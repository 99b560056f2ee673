"""JMAP core on the store (issue 13, RFC 8620 / RFC 8621 Mailbox and Thread),
with raw HTTP (http.client) against the real all-in-one binary: the session
resource, request-level problem details and limits, method errors, result
references, Mailbox/Thread methods, blobs, push, and the authentication
rules (Basic only over TLS or loopback, bearer tokens only from
http.token_networks). IMAP and JMAP see each other's changes."""
from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import re
import socket
import ssl
import time

import pytest

from conftest import build_message, free_ports, imap_ok, imap_list_names, unique

ALICE = "alice@example.test"
BOB = "bob@example.test"
CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
USING = [CORE, MAIL]


def external_ip() -> str | None:
    """A local address that is not loopback (the test network's)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))
        ip = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if ip.startswith("127.") else ip


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """All-in-one with the standard loopback listeners plus an HTTPS
    listener and a plaintext HTTP one on a non-loopback address."""
    from conftest import MsgdFactory
    factory = MsgdFactory(tmp_path_factory, "jmap_core")
    inst = factory(users=(ALICE, BOB), start=False)
    ext = external_ip()
    assert ext, "the test needs a non-loopback local IPv4 address"
    https_port, ext_port, exts_port = free_ports(3)
    inst.ext_ip = ext
    inst.ports["https"] = https_port
    inst.ports["http-ext"] = ext_port
    inst.ports["https-ext"] = exts_port
    text = inst.config_text() + "\n".join([
        "",
        "[listener.https]", f'bind = ["127.0.0.1:{https_port}"]', "enabled = true", "",
        "[listener.http-ext]", 'protocol = "http"', f'bind = ["{ext}:{ext_port}"]', "enabled = true", "",
        "[listener.https-ext]", 'protocol = "https"', f'bind = ["{ext}:{exts_port}"]', "enabled = true", "",
        "[http]", "upload_quota = 1000000", "",
    ])
    inst.config_path.write_text(text)
    inst.start()
    yield inst
    factory.cleanup()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def conn(srv, listener="http", host="127.0.0.1"):
    port = srv.ports[listener]
    if listener.startswith("https"):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return http.client.HTTPSConnection(host, port, timeout=20, context=ctx)
    return http.client.HTTPConnection(host, port, timeout=20)


def request(srv, method, path, body=None, user=ALICE, headers=None, listener="http", host="127.0.0.1",
            auth=True):
    c = conn(srv, listener, host)
    h = dict(headers or {})
    if auth and "Authorization" not in h:
        h["Authorization"] = basic(user, srv.passwords[user])
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r, data


def api(srv, calls, user=ALICE, using=USING, created_ids=None):
    body = {"using": using, "methodCalls": calls}
    if created_ids is not None:
        body["createdIds"] = created_ids
    r, data = request(srv, "POST", "/jmap/api", body, user=user)
    assert r.status == 200, (r.status, data)
    assert r.getheader("Content-Type") == "application/json"
    return json.loads(data)


def session(srv, user=ALICE):
    r, data = request(srv, "GET", "/jmap/session", user=user)
    assert r.status == 200, (r.status, data)
    return json.loads(data)


def account(srv, user=ALICE):
    return session(srv, user)["primaryAccounts"][MAIL]


def problem(r, data, status, kind):
    assert r.status == status, (r.status, data)
    assert r.getheader("Content-Type") == "application/problem+json", r.getheaders()
    p = json.loads(data)
    assert p["type"] == kind, p
    assert p["status"] == status
    return p


def mailboxes(srv, user=ALICE):
    res = api(srv, [["Mailbox/get", {"accountId": account(srv, user)}, "0"]], user=user)
    return res["methodResponses"][0][1]


# ---------------------------------------------------------------- session, auth


def test_session_resource_advertises_capabilities_limits_and_urls(srv):
    s = session(srv)
    core = s["capabilities"][CORE]
    assert core["maxSizeUpload"] == 50_000_000
    assert core["maxConcurrentUpload"] == 4
    assert core["maxSizeRequest"] == 10_000_000
    assert core["maxConcurrentRequests"] == 4
    assert core["maxCallsInRequest"] == 16
    assert core["maxObjectsInGet"] == 500
    assert core["maxObjectsInSet"] == 500
    assert core["collationAlgorithms"] == ["i;ascii-casemap", "i;unicode-casemap"]
    for cap in (MAIL, "urn:ietf:params:jmap:submission", "urn:ietf:params:jmap:vacationresponse",
                "urn:ietf:params:jmap:contacts"):
        assert cap in s["capabilities"], cap
        assert s["primaryAccounts"][cap] == s["primaryAccounts"][MAIL]
    acc = s["primaryAccounts"][MAIL]
    assert s["accounts"][acc]["name"] == ALICE and s["accounts"][acc]["isPersonal"] is True
    assert s["username"] == ALICE
    base = f"http://127.0.0.1:{srv.ports['http']}"
    assert s["apiUrl"] == base + "/jmap/api"
    assert s["uploadUrl"] == base + "/jmap/upload/{accountId}"
    assert s["downloadUrl"].startswith(base + "/jmap/download/{accountId}/{blobId}/{name}")
    assert s["eventSourceUrl"].startswith(base + "/jmap/eventsource?types={types}")
    assert s["state"]
    # over HTTPS the URLs say https
    r, data = request(srv, "GET", "/jmap/session", listener="https")
    assert r.status == 200
    assert json.loads(data)["apiUrl"] == f"https://127.0.0.1:{srv.ports['https']}/jmap/api"


def test_well_known_redirects_to_the_session(srv):
    r, _ = request(srv, "GET", "/.well-known/jmap", auth=False)
    assert r.status in (301, 302, 307, 308)
    assert r.getheader("Location") == "/jmap/session"


def test_missing_or_wrong_credentials_get_401_with_a_basic_challenge(srv):
    r, data = request(srv, "GET", "/jmap/session", auth=False)
    problem(r, data, 401, "about:blank")
    assert r.getheader("WWW-Authenticate", "").startswith("Basic realm=")
    r, data = request(srv, "GET", "/jmap/session", headers={"Authorization": basic(ALICE, "wrong")})
    problem(r, data, 401, "about:blank")
    assert r.getheader("WWW-Authenticate", "").startswith("Basic realm=")
    r, data = request(srv, "POST", "/jmap/api", {"using": [], "methodCalls": []}, auth=False)
    assert r.status == 401


def test_basic_refused_over_plaintext_from_a_non_loopback_address(srv):
    r, data = request(srv, "GET", "/jmap/session", listener="http-ext", host=srv.ext_ip)
    p = problem(r, data, 403, "about:blank")
    assert "TLS" in p["detail"]
    # the same credentials over TLS from that address are fine
    r, data = request(srv, "GET", "/jmap/session", listener="https-ext", host=srv.ext_ip)
    assert r.status == 200, data
    assert json.loads(data)["apiUrl"].startswith("https://")


def token(srv, user, ttl=300, key=None):
    key = key or bytes.fromhex((srv.data_dir / "http-token.key").read_text().strip())
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    body = f"msgd1.{b64(user.encode())}.{int(time.time()) + ttl}"
    mac = hmac.new(key, body.encode(), hashlib.sha256).digest()
    return f"{body}.{b64(mac)}"


def test_bearer_tokens_only_valid_ones_and_only_from_token_networks(srv):
    # the key file is created when HTTP is first served
    session(srv)
    good = {"Authorization": "Bearer " + token(srv, BOB)}
    r, data = request(srv, "GET", "/jmap/session", headers=good)
    assert r.status == 200, data
    assert json.loads(data)["username"] == BOB
    for bad in (token(srv, BOB, ttl=-10), token(srv, BOB, key=b"x" * 32), "garbage"):
        r, data = request(srv, "GET", "/jmap/session", headers={"Authorization": "Bearer " + bad})
        problem(r, data, 401, "about:blank")
    # not from a mem (token_networks default: loopback only)
    r, data = request(srv, "GET", "/jmap/session", headers=good, listener="https-ext", host=srv.ext_ip)
    problem(r, data, 403, "about:blank")


# ---------------------------------------------------------------- request level


def raw_api(srv, body: bytes, headers=None):
    h = {"Authorization": basic(ALICE, srv.passwords[ALICE]), "Content-Type": "application/json"}
    h.update(headers or {})
    return request(srv, "POST", "/jmap/api", body, headers=h)


def test_request_level_errors_are_problem_details(srv):
    r, data = raw_api(srv, b"{not json")
    problem(r, data, 400, "urn:ietf:params:jmap:error:notJSON")
    r, data = raw_api(srv, b'{"methodCalls": []}')
    problem(r, data, 400, "urn:ietf:params:jmap:error:notRequest")
    r, data = raw_api(srv, json.dumps({"using": [CORE], "methodCalls": [["Core/echo", [], "a"]]}).encode())
    problem(r, data, 400, "urn:ietf:params:jmap:error:notRequest")
    r, data = raw_api(srv, json.dumps({"using": [CORE, "urn:example:nope"], "methodCalls": []}).encode())
    problem(r, data, 400, "urn:ietf:params:jmap:error:unknownCapability")
    calls = [["Core/echo", {}, str(i)] for i in range(17)]
    r, data = raw_api(srv, json.dumps({"using": [CORE], "methodCalls": calls}).encode())
    p = problem(r, data, 400, "urn:ietf:params:jmap:error:limit")
    assert p["limit"] == "maxCallsInRequest"


def test_request_larger_than_max_size_request_is_refused_before_reading(srv):
    # Claims 20 MB and sends nothing: answered at once from the header.
    s = socket.create_connection(("127.0.0.1", srv.ports["http"]), timeout=20)
    auth = basic(ALICE, srv.passwords[ALICE])
    s.sendall((f"POST /jmap/api HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
               "Content-Type: application/json\r\nContent-Length: 20000000\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head = data.split(b"\r\n", 1)[0]
    assert b" 413 " in head, data[:300]
    assert b"maxSizeRequest" in data or b"application/problem+json" in data
    # A real 10 MB + 1 body, sent chunked (no length to check first)
    c = conn(srv)
    big = b'{"using": [], "methodCalls": [], "x": "' + b"a" * 10_000_001 + b'"}'
    c.putrequest("POST", "/jmap/api")
    c.putheader("Authorization", auth)
    c.putheader("Transfer-Encoding", "chunked")
    c.endheaders()
    try:
        for i in range(0, len(big), 1 << 20):
            part = big[i:i + (1 << 20)]
            c.send(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        c.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    r = c.getresponse()
    p = problem(r, r.read(), 413, "urn:ietf:params:jmap:error:limit")
    assert p["limit"] == "maxSizeRequest"
    c.close()


# ---------------------------------------------------------------- methods


def test_core_echo_method_errors_references_and_created_ids(srv):
    acc = account(srv)
    res = api(srv, [
        ["Core/echo", {"hello": [1, {"x": "y"}]}, "e1"],
        ["Core/echo", {"#v": {"resultOf": "e1", "name": "Core/echo", "path": "/hello/1/x"}}, "e2"],
        ["Core/echo", {"#v": {"resultOf": "nope", "name": "Core/echo", "path": "/hello"}}, "e3"],
        ["Foo/bar", {}, "e4"],
        ["Mailbox/get", {"accountId": "a" + "x" * 10}, "e5"],
        ["Mailbox/get", {"accountId": acc, "ids": ["F" + "0" * 15 + "1"] * 501}, "e6"],
        ["Mailbox/get", {"accountId": acc, "properties": ["nope"]}, "e7"],
    ], created_ids={"k": "v"})
    r = res["methodResponses"]
    assert r[0] == ["Core/echo", {"hello": [1, {"x": "y"}]}, "e1"]
    assert r[1] == ["Core/echo", {"v": "y"}, "e2"]
    assert r[2][0] == "error" and r[2][1]["type"] == "invalidResultReference" and r[2][2] == "e3"
    assert r[3] == ["error", {"type": "unknownMethod"}, "e4"]
    assert r[4] == ["error", {"type": "accountNotFound"}, "e5"]
    assert r[5] == ["error", {"type": "requestTooLarge"}, "e6"]
    assert r[6][1]["type"] == "invalidArguments"
    assert res["createdIds"] == {"k": "v"}
    assert res["sessionState"] == session(srv)["state"]
    # a method of a capability not in `using`
    res = api(srv, [["Mailbox/get", {"accountId": acc}, "m"]], using=[CORE])
    assert res["methodResponses"][0] == ["error", {"type": "unknownMethod"}, "m"]


def test_mailbox_get_roles_counts_rights_and_hierarchy(srv):
    got = mailboxes(srv)
    by_name = {m["name"]: m for m in got["list"]}
    assert {"INBOX", "Sent", "Drafts", "Trash", "Junk"} <= set(by_name)
    assert by_name["INBOX"]["role"] == "inbox"
    assert by_name["Sent"]["role"] == "sent" and by_name["Trash"]["role"] == "trash"
    assert by_name["Junk"]["role"] == "junk" and by_name["Drafts"]["role"] == "drafts"
    assert by_name["INBOX"]["myRights"]["mayDelete"] is False
    assert by_name["Sent"]["myRights"]["mayDelete"] is True
    assert by_name["INBOX"]["isSubscribed"] is True
    for m in got["list"]:
        assert re.fullmatch(r"F[0-9a-f]{16}", m["id"])
        assert m["parentId"] is None
        for k in ("totalEmails", "unreadEmails", "totalThreads", "unreadThreads", "sortOrder"):
            assert isinstance(m[k], int), (k, m)
    # IMAP's MAILBOXID is the JMAP id
    m = srv.imap(ALICE)
    try:
        typ, data = m.status("Sent", "(MAILBOXID)")
        imap_ok((typ, data), "STATUS MAILBOXID")
        assert by_name["Sent"]["id"] in data[0].decode()
    finally:
        m.logout()
    got = api(srv, [["Mailbox/get", {"accountId": account(srv), "ids": [by_name["Sent"]["id"], "Fzz"],
                                      "properties": ["name"]}, "0"]])["methodResponses"][0][1]
    assert got["list"] == [{"id": by_name["Sent"]["id"], "name": "Sent"}]
    assert got["notFound"] == ["Fzz"]


def test_imap_append_and_store_show_in_mailbox_changes_and_thread_get(srv):
    acc = account(srv)
    before = mailboxes(srv)
    inbox = next(m for m in before["list"] if m["role"] == "inbox")
    subject = unique("s")
    msg = build_message(ALICE, subject, "hello\r\n")
    m = srv.imap(ALICE)
    try:
        imap_ok(m.append("INBOX", None, None, msg), "APPEND")
        m.select("INBOX")
        typ, data = m.uid("SEARCH", None, "SUBJECT", subject)
        uid = data[0].split()[-1].decode()
        typ, data = m.uid("FETCH", uid, "(EMAILID THREADID)")
        text = data[0].decode() if isinstance(data[0], bytes) else data[0][0].decode()
        email_id = re.search(r"EMAILID \((M[0-9a-f]+)\)", text).group(1)
        thread_id = re.search(r"THREADID \((T[0-9a-f]+)\)", text).group(1)
    finally:
        m.logout()
    res = api(srv, [
        ["Mailbox/changes", {"accountId": acc, "sinceState": before["state"]}, "c"],
        ["Mailbox/get", {"accountId": acc, "ids": [inbox["id"]]}, "g"],
        ["Thread/get", {"accountId": acc, "ids": [thread_id, "T" + "f" * 16]}, "t"],
    ])
    ch, got, th = (x[1] for x in res["methodResponses"])
    assert ch["oldState"] == before["state"] and ch["newState"] != before["state"]
    assert inbox["id"] in ch["updated"], ch
    assert ch["updatedProperties"] == ["totalEmails", "unreadEmails", "totalThreads", "unreadThreads"]
    assert ch["hasMoreChanges"] is False
    assert got["state"] == ch["newState"]
    assert got["list"][0]["totalEmails"] == inbox["totalEmails"] + 1
    assert got["list"][0]["unreadEmails"] == inbox["unreadEmails"] + 1
    assert got["list"][0]["unreadThreads"] == inbox["unreadThreads"] + 1
    assert th["list"] == [{"id": thread_id, "emailIds": [email_id]}]
    assert th["notFound"] == ["T" + "f" * 16]
    # IMAP STORE \Seen: the counts change, the state moves
    state = got["state"]
    m = srv.imap(ALICE)
    try:
        m.select("INBOX")
        imap_ok(m.uid("STORE", uid, "+FLAGS", "(\\Seen)"), "STORE")
    finally:
        m.logout()
    res = api(srv, [["Mailbox/changes", {"accountId": acc, "sinceState": state}, "c"]])
    assert res["methodResponses"][0][1]["updated"] == [inbox["id"]]
    # Thread/changes from the beginning of the journal
    res = api(srv, [["Thread/changes", {"accountId": acc, "sinceState": "0"}, "c"],
                    ["Thread/changes", {"accountId": acc, "sinceState": "bogus"}, "d"]])
    assert thread_id in res["methodResponses"][0][1]["created"]
    assert res["methodResponses"][1][1] == {"type": "cannotCalculateChanges"}


def test_mailbox_set_create_rename_destroy_seen_by_imap_list(srv):
    acc = account(srv)
    state = mailboxes(srv)["state"]
    top, child = unique("Top"), unique("Kid")
    res = api(srv, [
        ["Mailbox/set", {"accountId": acc, "ifInState": state, "create": {
            "t": {"name": top, "isSubscribed": True},
            "c": {"name": child, "parentId": "#t"},
            "bad": {"name": "a/b"},
        }}, "s"],
        # `*` maps over arrays only (RFC 8620 3.7): `created` is an object
        ["Mailbox/get", {"accountId": acc, "#ids": {"resultOf": "s", "name": "Mailbox/set",
                                                      "path": "/created/*/id"}}, "g"],
    ])
    assert res["methodResponses"][1][1]["type"] == "invalidResultReference"
    s = res["methodResponses"][0][1]
    assert s["oldState"] == state and s["newState"] != state
    assert set(s["created"]) == {"t", "c"}
    assert s["notCreated"]["bad"]["type"] == "invalidProperties"
    tid, cid = s["created"]["t"]["id"], s["created"]["c"]["id"]
    res = api(srv, [["Mailbox/get", {"accountId": acc, "ids": [tid, cid]}, "g"]])
    got = {m["id"]: m for m in res["methodResponses"][0][1]["list"]}
    assert got[cid]["parentId"] == tid and got[cid]["name"] == child
    assert got[tid]["isSubscribed"] is True
    m = srv.imap(ALICE)
    try:
        names = imap_list_names(m)
        assert top in names and f"{top}/{child}" in names, names
    finally:
        m.logout()
    # stale state
    res = api(srv, [["Mailbox/set", {"accountId": acc, "ifInState": state, "destroy": [cid]}, "x"]])
    assert res["methodResponses"][0][1] == {"type": "stateMismatch"}
    # rename + move to top level
    new = unique("Moved")
    res = api(srv, [["Mailbox/set", {"accountId": acc, "update": {cid: {"name": new, "parentId": None}}}, "u"]])
    assert cid in res["methodResponses"][0][1]["updated"], res
    m = srv.imap(ALICE)
    try:
        imap_ok(m.append(new, None, None, build_message(ALICE, "x", "y\r\n")), "APPEND")
        names = imap_list_names(m)
        assert new in names and f"{top}/{child}" not in names
    finally:
        m.logout()
    res = api(srv, [["Mailbox/set", {"accountId": acc, "destroy": [cid, tid]}, "d"]])
    d = res["methodResponses"][0][1]
    assert d["notDestroyed"][cid]["type"] == "mailboxHasEmail"
    assert d["destroyed"] == [tid]
    res = api(srv, [["Mailbox/set", {"accountId": acc, "destroy": [cid], "onDestroyRemoveEmails": True}, "d"]])
    assert res["methodResponses"][0][1]["destroyed"] == [cid]
    inbox = next(m for m in mailboxes(srv)["list"] if m["role"] == "inbox")
    res = api(srv, [["Mailbox/set", {"accountId": acc, "destroy": [inbox["id"]]}, "d"]])
    assert res["methodResponses"][0][1]["notDestroyed"][inbox["id"]]["type"] == "forbidden"
    m = srv.imap(ALICE)
    try:
        names = imap_list_names(m)
        assert new not in names and top not in names
    finally:
        m.logout()
    res = api(srv, [["Mailbox/changes", {"accountId": acc, "sinceState": state}, "c"]])
    ch = res["methodResponses"][0][1]
    # created and destroyed since `state`: reported as neither
    assert cid not in ch["created"] + ch["updated"] and tid not in ch["created"] + ch["updated"]


def test_mailbox_query_filters_and_sorts(srv):
    acc = account(srv)
    res = api(srv, [
        ["Mailbox/query", {"accountId": acc, "filter": {"role": "trash"}}, "q1"],
        ["Mailbox/query", {"accountId": acc, "filter": {"hasAnyRole": True},
                           "sort": [{"property": "name"}], "calculateTotal": True}, "q2"],
        ["Mailbox/query", {"accountId": acc, "filter": {"nope": 1}}, "q3"],
        ["Mailbox/get", {"accountId": acc, "#ids": {"resultOf": "q2", "name": "Mailbox/query",
                                                      "path": "/ids"}, "properties": ["name"]}, "g"],
    ])
    q1, q2, q3, g = (x[1] for x in res["methodResponses"])
    assert len(q1["ids"]) == 1
    assert q2["total"] == 5 and len(q2["ids"]) == 5
    assert [m["name"] for m in g["list"]] == sorted([m["name"] for m in g["list"]], key=str.lower)
    assert q3["type"] == "unsupportedFilter"


def test_another_users_ids_are_not_found(srv):
    bob_boxes = mailboxes(srv, BOB)
    bob_inbox = next(m for m in bob_boxes["list"] if m["role"] == "inbox")["id"]
    acc = account(srv)
    res = api(srv, [
        ["Mailbox/get", {"accountId": acc, "ids": [bob_inbox]}, "g"],
        ["Mailbox/set", {"accountId": acc, "update": {bob_inbox: {"name": "pwned"}}, "destroy": [bob_inbox]}, "s"],
        ["Mailbox/get", {"accountId": account(srv, BOB)}, "other"],
    ])
    g, s, o = (x[1] for x in res["methodResponses"])
    # Mailbox ids are global numbers: Bob's is not Alice's
    assert bob_inbox in g["notFound"] or all(m["id"] != bob_inbox for m in g["list"])
    assert s["notUpdated"][bob_inbox]["type"] == "notFound"
    assert s["notDestroyed"][bob_inbox]["type"] == "notFound"
    assert o == {"type": "accountNotFound"}
    assert "pwned" not in [m["name"] for m in mailboxes(srv, BOB)["list"]]


# ---------------------------------------------------------------- blobs


def test_upload_then_download_and_message_blobs(srv):
    acc = account(srv)
    payload = bytes(range(256)) * 100
    r, data = request(srv, "POST", f"/jmap/upload/{acc}", payload,
                      headers={"Content-Type": "application/x-test"})
    assert r.status == 201, data
    up = json.loads(data)
    assert up["accountId"] == acc and up["size"] == len(payload) and up["type"] == "application/x-test"
    assert re.fullmatch(r"U[0-9a-f]{32}", up["blobId"])
    r, data = request(srv, "GET", f"/jmap/download/{acc}/{up['blobId']}/report%22.html?accept=text/html")
    assert r.status == 200
    assert data == payload
    assert r.getheader("Content-Disposition").startswith("attachment;")
    assert '"report_.html"' in r.getheader("Content-Disposition")
    assert r.getheader("X-Content-Type-Options") == "nosniff"
    assert "sandbox" in r.getheader("Content-Security-Policy")
    # Bob cannot read Alice's upload, neither with his account nor hers
    r, _ = request(srv, "GET", f"/jmap/download/{account(srv, BOB)}/{up['blobId']}/x", user=BOB)
    assert r.status == 404
    r, _ = request(srv, "GET", f"/jmap/download/{acc}/{up['blobId']}/x", user=BOB)
    assert r.status == 404
    r, _ = request(srv, "POST", f"/jmap/upload/{acc}", b"x", user=BOB)
    assert r.status == 404
    # a message's blob: the EMAILID's G-id; one part of it decoded
    subject = unique("blob")
    body = ("--b\r\nContent-Type: text/plain\r\n\r\nhello part\r\n--b\r\n"
            "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.b64encode(b"\x00\x01binary").decode() + "\r\n--b--\r\n")
    msg = build_message(ALICE, subject, body, content_type="multipart/mixed; boundary=b", cte="")
    m = srv.imap(ALICE)
    try:
        imap_ok(m.append("INBOX", None, None, msg), "APPEND")
        m.select("INBOX")
        typ, data = m.uid("SEARCH", None, "SUBJECT", subject)
        uid = data[0].split()[-1].decode()
        typ, data = m.uid("FETCH", uid, "(EMAILID)")
        text = data[0].decode() if isinstance(data[0], bytes) else data[0][0].decode()
        email_id = re.search(r"EMAILID \((M[0-9a-f]+)\)", text).group(1)
    finally:
        m.logout()
    blob = "G" + email_id[1:]
    r, data = request(srv, "GET", f"/jmap/download/{acc}/{blob}/m.eml?accept=message/rfc822")
    assert r.status == 200 and data.replace(b"\r\n", b"\n") == msg.replace(b"\r\n", b"\n")
    assert r.getheader("Content-Type") == "message/rfc822"
    r, data = request(srv, "GET", f"/jmap/download/{acc}/{blob}_2/a.bin")
    assert r.status == 200 and data == b"\x00\x01binary"
    r, _ = request(srv, "GET", f"/jmap/download/{account(srv, BOB)}/{blob}/m.eml", user=BOB)
    assert r.status == 404
    for bad in ("G" + "0" * 15 + "f", "nope", "../../etc/passwd"):
        r, _ = request(srv, "GET", f"/jmap/download/{acc}/{bad}/x")
        assert r.status == 404, bad


def test_upload_over_max_size_upload_is_refused(srv):
    acc = account(srv)
    s = socket.create_connection(("127.0.0.1", srv.ports["http"]), timeout=20)
    auth = basic(ALICE, srv.passwords[ALICE])
    s.sendall((f"POST /jmap/upload/{acc} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
               "Content-Length: 60000000\r\n\r\n").encode())
    data = s.recv(65536)
    s.close()
    assert b" 413 " in data.split(b"\r\n", 1)[0], data[:300]
    assert b"maxSizeUpload" in data


# ---------------------------------------------------------------- push


def read_events(resp, want: int, timeout: float = 20):
    """Reads `want` server-sent events from an http.client response."""
    events = []
    cur = {}
    deadline = time.monotonic() + timeout
    while len(events) < want and time.monotonic() < deadline:
        line = resp.readline()
        if not line:
            break
        line = line.decode().rstrip("\r\n")
        if not line:
            if cur:
                events.append(cur)
                cur = {}
            continue
        k, _, v = line.partition(": ")
        cur[k] = v
    return events


def test_eventsource_sends_state_changes_from_imap(srv):
    acc = account(srv)
    c = conn(srv)
    c.request("GET", "/jmap/eventsource?types=Mailbox,Email&closeafter=no&ping=1",
              headers={"Authorization": basic(ALICE, srv.passwords[ALICE]), "Accept": "text/event-stream"})
    r = c.getresponse()
    assert r.status == 200
    assert r.getheader("Content-Type") == "text/event-stream"
    first = read_events(r, 1)
    assert first and first[0]["event"] == "state"
    initial = json.loads(first[0]["data"])
    assert initial["@type"] == "StateChange"
    assert set(initial["changed"][acc]) == {"Mailbox", "Email"}
    # long polling: closeafter=state sends the first change and ends
    lp = conn(srv)
    lp.request("GET", "/jmap/eventsource?types=Email&closeafter=state&ping=0",
               headers={"Authorization": basic(ALICE, srv.passwords[ALICE])})
    lr = lp.getresponse()
    assert lr.status == 200
    m = srv.imap(ALICE)
    try:
        imap_ok(m.append("INBOX", None, None, build_message(ALICE, unique("push"), "x\r\n")), "APPEND")
    finally:
        m.logout()
    nxt = read_events(r, 1)
    assert nxt and nxt[0]["event"] == "state", nxt
    changed = json.loads(nxt[0]["data"])["changed"][acc]
    assert changed["Email"] != initial["changed"][acc]["Email"]
    assert changed["Mailbox"] != initial["changed"][acc]["Mailbox"]
    # ping=1 is clamped to 30 s: no ping came between the two events
    c.close()
    ev = read_events(lr, 1)
    assert ev and ev[0]["event"] == "state"
    assert json.loads(ev[0]["data"])["changed"][acc] == {"Email": changed["Email"]}
    assert lr.readline() == b""
    lp.close()
    r, data = request(srv, "GET", "/jmap/eventsource?closeafter=maybe")
    assert r.status == 400


def test_upload_space_per_user_is_bounded(srv):
    acc = account(srv, BOB)
    r, data = request(srv, "POST", f"/jmap/upload/{acc}", b"a" * 600_000, user=BOB)
    assert r.status == 201, data
    r, data = request(srv, "POST", f"/jmap/upload/{acc}", b"b" * 600_000, user=BOB)
    problem(r, data, 413, "urn:ietf:params:jmap:error:limit")
    # the refused upload left nothing behind: a small one still fits
    r, data = request(srv, "POST", f"/jmap/upload/{acc}", b"c" * 1000, user=BOB)
    assert r.status == 201, data


def test_event_streams_per_user_are_limited(srv):
    opened = []
    try:
        for _ in range(4):
            c = conn(srv)
            c.request("GET", "/jmap/eventsource?types=*&closeafter=no&ping=0",
                      headers={"Authorization": basic(BOB, srv.passwords[BOB])})
            r = c.getresponse()
            assert r.status == 200
            assert read_events(r, 1)
            opened.append(c)
        r, data = request(srv, "GET", "/jmap/eventsource?types=*&closeafter=no&ping=0", user=BOB)
        p = problem(r, data, 429, "urn:ietf:params:jmap:error:limit")
        assert p["limit"] == "maxConcurrentRequests"
        # Alice is not affected
        c = conn(srv)
        c.request("GET", "/jmap/eventsource?types=Email&closeafter=no&ping=0",
                  headers={"Authorization": basic(ALICE, srv.passwords[ALICE])})
        r = c.getresponse()
        assert r.status == 200
        c.close()
    finally:
        for c in opened:
            c.close()
    # closed streams give their slots back
    def reopened():
        c = conn(srv)
        c.request("GET", "/jmap/eventsource?types=*&closeafter=no&ping=0",
                  headers={"Authorization": basic(BOB, srv.passwords[BOB])})
        r = c.getresponse()
        c.close()
        return r.status == 200
    from conftest import wait_until
    assert wait_until(reopened, 10), "a closed stream kept its slot"


def test_jmap_subscription_changes_show_in_imap_lsub(srv):
    acc = account(srv)
    junk = next(m for m in mailboxes(srv)["list"] if m["role"] == "junk")
    res = api(srv, [["Mailbox/set", {"accountId": acc, "update": {junk["id"]: {"isSubscribed": False}}}, "u"]])
    assert junk["id"] in res["methodResponses"][0][1]["updated"]
    m = srv.imap(ALICE)
    try:
        typ, data = m.lsub()
        assert typ == "OK"
        assert not any(b'"Junk"' in d or d.endswith(b" Junk") for d in data if d), data
        imap_ok(m.subscribe("Junk"), "SUBSCRIBE")
    finally:
        m.logout()
    got = api(srv, [["Mailbox/get", {"accountId": acc, "ids": [junk["id"]]}, "g"]])
    assert got["methodResponses"][0][1]["list"][0]["isSubscribed"] is True
