"""JMAP Email methods (RFC 8621 4, 5) over raw HTTP against the real
binary: Email/get, changes, query, queryChanges, set, import, copy,
parse, SearchSnippet/get, and their error cases; IMAP and JMAP see each
other's changes."""

import base64
import imaplib
import json
import time
import urllib.error
import urllib.request

import pytest

from conftest import unique

USERS = ("alice@example.test", "bob@example.test")
CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"


def _auth(server, user):
    token = base64.b64encode(f"{user}:{server.passwords[user]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def base(server):
    return f"http://127.0.0.1:{server.ports['http']}"


def session(server, user):
    req = urllib.request.Request(base(server) + "/jmap/session", headers=_auth(server, user))
    with urllib.request.urlopen(req, timeout=20) as r:
        return json.load(r)


def account(server, user):
    return session(server, user)["primaryAccounts"][MAIL]


def api(server, user, calls, using=(CORE, MAIL)):
    body = json.dumps({"using": list(using), "methodCalls": calls}).encode()
    req = urllib.request.Request(base(server) + "/jmap/api", data=body, method="POST",
                                 headers={**_auth(server, user), "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)["methodResponses"]


def call(server, user, name, args):
    """One method call; returns its (name, arguments)."""
    args = {"accountId": account(server, user), **args}
    r = api(server, user, [[name, args, "c"]])
    assert len(r) >= 1
    return r[0][0], r[0][1]


def ok(server, user, name, args):
    n, a = call(server, user, name, args)
    assert n == name, f"{name} answered {n}: {a}"
    return a


def err(server, user, name, args):
    n, a = call(server, user, name, args)
    assert n == "error", f"{name} succeeded: {a}"
    return a["type"]


def upload(server, user, data: bytes, ctype="message/rfc822"):
    acc = account(server, user)
    req = urllib.request.Request(base(server) + f"/jmap/upload/{acc}", data=data, method="POST",
                                 headers={**_auth(server, user), "Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=20) as r:
        return json.load(r)


def mailboxes(server, user):
    a = ok(server, user, "Mailbox/get", {"ids": None})
    return {m["role"] or m["name"]: m["id"] for m in a["list"]}


def append(server, user, msg: bytes, mailbox="INBOX", flags=""):
    m = server.imap(user)
    try:
        typ, data = m.append(mailbox, flags, None, msg)
        assert typ == "OK", data
    finally:
        m.logout()


def message(subject, body="Hello there.", frm="Carol <carol@remote.example>", to="alice@example.test",
            extra=""):
    return (f"From: {frm}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{unique('m')}@remote.example>\r\n"
            f"{extra}\r\n{body}\r\n").encode()


def find(server, user, subject):
    ids = ok(server, user, "Email/query", {"filter": {"subject": subject}})["ids"]
    assert len(ids) == 1, f"{subject}: {ids}"
    return ids[0]


MULTIPART = (b"From: Dave <dave@remote.example>\r\nTo: alice@example.test\r\n"
             b"Subject: with attachment\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n"
             b"--zz\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee the file\r\n"
             b"--zz\r\nContent-Type: application/octet-stream\r\n"
             b"Content-Disposition: attachment; filename=data.bin\r\n"
             b"Content-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n--zz--\r\n")


# -- Email/get -------------------------------------------------------------


def test_email_get_renders_imap_appended_message(server):
    a = "alice@example.test"
    subj = unique("get")
    append(server, a, message(subj, extra="X-Tag: one\r\nX-Tag: two\r\n"), flags="(\\Seen $Custom)")
    eid = find(server, a, subj)
    got = ok(server, a, "Email/get", {"ids": [eid], "properties": None,
                                      "fetchTextBodyValues": True})
    e = got["list"][0]
    assert e["id"] == eid and got["notFound"] == []
    assert e["subject"] == subj
    assert e["from"] == [{"name": "Carol", "email": "carol@remote.example"}]
    assert e["keywords"] == {"$seen": True, "$custom": True}
    assert list(e["mailboxIds"].values()) == [True]
    assert e["mailboxIds"] == {mailboxes(server, a)["inbox"]: True}
    assert e["sentAt"] == "2026-12-01T10:00:00Z"
    assert e["receivedAt"].endswith("Z")
    assert e["hasAttachment"] is False
    assert e["preview"].startswith("Hello there")
    assert e["textBody"][0]["partId"] == "1"
    assert e["bodyValues"]["1"]["value"].startswith("Hello there.")
    assert e["threadId"].startswith("T") and e["blobId"].startswith("G")
    # The same id IMAP shows as EMAILID (RFC 8474).
    m = server.imap(a)
    try:
        m.select("INBOX", readonly=True)
        typ, data = m.uid("SEARCH", None, "SUBJECT", f'"{subj}"')
        uid = data[0].split()[-1].decode()
        typ, data = m.uid("FETCH", uid, "(EMAILID)")
        assert eid.encode() in data[0]
    finally:
        m.logout()
    # Header forms.
    h = ok(server, a, "Email/get", {"ids": [eid], "properties": [
        "header:X-Tag:all", "header:X-Tag:asText", "header:Subject:asRaw", "header:From:asGroupedAddresses"]})
    e = h["list"][0]
    assert e["header:X-Tag:all"] == [" one", " two"]
    assert e["header:X-Tag:asText"] == "two"
    assert e["header:Subject:asRaw"] == " " + subj
    assert e["header:From:asGroupedAddresses"][0]["addresses"][0]["email"] == "carol@remote.example"


def test_email_get_body_structure_and_truncation(server):
    a = "alice@example.test"
    append(server, a, MULTIPART)
    eid = find(server, a, "with attachment")
    e = ok(server, a, "Email/get", {"ids": [eid], "properties": [
        "bodyStructure", "attachments", "hasAttachment", "bodyValues", "textBody"],
        "fetchAllBodyValues": True, "maxBodyValueBytes": 3,
        "bodyProperties": ["partId", "type", "name", "size"]})["list"][0]
    assert e["hasAttachment"] is True
    assert e["bodyStructure"]["type"] == "multipart/mixed"
    assert [p["partId"] for p in e["bodyStructure"]["subParts"]] == ["1", "2"]
    assert e["attachments"] == [{"partId": "2", "type": "application/octet-stream", "name": "data.bin", "size": 4}]
    assert e["bodyValues"]["1"] == {"value": "see", "isEncodingProblem": False, "isTruncated": True}


def test_email_get_errors(server):
    a = "alice@example.test"
    assert err(server, a, "Email/get", {"ids": [], "properties": ["nope"]}) == "invalidArguments"
    assert err(server, a, "Email/get", {"ids": [], "properties": ["header:Subject:asDate"]}) == "invalidArguments"
    assert err(server, a, "Email/get", {"ids": [], "bodyProperties": ["x"]}) == "invalidArguments"
    got = ok(server, a, "Email/get", {"ids": ["Mffffffffffffff00", "junk"]})
    assert got["list"] == [] and got["notFound"] == ["Mffffffffffffff00", "junk"]
    n, body = call(server, a, "Email/get", {"ids": []})
    # Another account's id: accountNotFound.
    r = api(server, a, [["Email/get", {"accountId": account(server, "bob@example.test"), "ids": []}, "x"]])
    assert r[0][0] == "error" and r[0][1]["type"] == "accountNotFound"


def test_other_users_email_is_not_found(server):
    a, b = "alice@example.test", "bob@example.test"
    subj = unique("private")
    append(server, b, message(subj, to=b))
    bid = find(server, b, subj)
    got = ok(server, a, "Email/get", {"ids": [bid], "properties": ["subject"]})
    assert got["list"] == [] and got["notFound"] == [bid]


# -- Email/query -----------------------------------------------------------


def test_email_query_filters_sorts_and_paging(server):
    a = "alice@example.test"
    tag = unique("q")
    for i, (flags, size) in enumerate([("(\\Flagged)", 10), ("", 2000), ("(\\Seen)", 100)]):
        append(server, a, message(f"{tag} n{i}", body="x" * size, frm=f"P{i} <p{i}@remote.example>"), flags=flags)
    q = lambda f, **kw: ok(server, a, "Email/query", {"filter": f, **kw})
    three = q({"subject": tag}, sort=[{"property": "subject"}])["ids"]
    assert len(three) == 3
    assert q({"operator": "AND", "conditions": [{"subject": tag}, {"hasKeyword": "$flagged"}]})["ids"] == [three[0]]
    assert q({"operator": "AND", "conditions": [{"subject": tag}, {"minSize": 1500}]})["ids"] == [three[1]]
    assert q({"operator": "AND", "conditions": [{"subject": tag},
                                                {"operator": "NOT", "conditions": [{"hasKeyword": "$seen"}]}]}
             )["ids"] == three[:2]
    assert q({"operator": "AND", "conditions": [{"text": tag}, {"from": "p2@remote"}]})["ids"] == [three[2]]
    assert q({"subject": tag}, sort=[{"property": "size", "isAscending": False}])["ids"] == [three[1], three[2], three[0]]
    inbox = mailboxes(server, a)["inbox"]
    r = q({"operator": "AND", "conditions": [{"subject": tag}, {"inMailbox": inbox}]},
          sort=[{"property": "subject"}], position=1, limit=1, calculateTotal=True)
    assert r["ids"] == [three[1]] and r["total"] == 3 and r["position"] == 1
    r = q({"subject": tag}, sort=[{"property": "subject"}], anchor=three[2], anchorOffset=-1)
    assert r["ids"] == three[1:] and r["position"] == 1
    assert isinstance(r["queryState"], str) and r["canCalculateChanges"] is True
    # Errors.
    assert err(server, a, "Email/query", {"filter": {"nope": 1}}) == "unsupportedFilter"
    assert err(server, a, "Email/query", {"sort": [{"property": "nope"}]}) == "unsupportedSort"
    assert err(server, a, "Email/query", {"anchor": "Mffffffffffffff00"}) == "anchorNotFound"
    assert err(server, a, "Email/query", {"limit": -1}) == "invalidArguments"


def test_email_query_collapse_threads_and_thread_keywords(server):
    a = "alice@example.test"
    tag = unique("thr")
    root = f"<{tag}-root@remote.example>"
    append(server, a, (f"From: x@remote.example\r\nSubject: {tag}\r\nMessage-ID: {root}\r\n\r\nroot\r\n").encode(),
           flags="(\\Seen)")
    append(server, a, (f"From: y@remote.example\r\nSubject: Re: {tag}\r\nMessage-ID: <{tag}-r@remote.example>\r\n"
                       f"In-Reply-To: {root}\r\nReferences: {root}\r\n\r\nreply\r\n").encode())
    both = ok(server, a, "Email/query", {"filter": {"subject": tag}})["ids"]
    assert len(both) == 2
    one = ok(server, a, "Email/query", {"filter": {"subject": tag}, "collapseThreads": True})
    assert len(one["ids"]) == 1 and one["canCalculateChanges"] is False
    some = ok(server, a, "Email/query", {"filter": {"operator": "AND", "conditions": [
        {"subject": tag}, {"someInThreadHaveKeyword": "$seen"}]}})["ids"]
    assert sorted(some) == sorted(both)
    assert ok(server, a, "Email/query", {"filter": {"operator": "AND", "conditions": [
        {"subject": tag}, {"allInThreadHaveKeyword": "$seen"}]}})["ids"] == []


# -- changes ---------------------------------------------------------------


def test_email_changes_see_imap_changes(server):
    a = "alice@example.test"
    state = ok(server, a, "Email/get", {"ids": []})["state"]
    subj = unique("chg")
    append(server, a, message(subj))
    eid = find(server, a, subj)
    c = ok(server, a, "Email/changes", {"sinceState": state})
    assert eid in c["created"] and c["oldState"] == state and c["newState"] != state
    state2 = c["newState"]
    m = server.imap(a)
    try:
        m.select("INBOX")
        typ, data = m.uid("SEARCH", None, "SUBJECT", f'"{subj}"')
        m.uid("STORE", data[0].split()[-1].decode(), "+FLAGS", "(\\Flagged)")
    finally:
        m.logout()
    c = ok(server, a, "Email/changes", {"sinceState": state2})
    assert c["updated"] == [eid]
    assert err(server, a, "Email/changes", {"sinceState": "bogus"}) == "cannotCalculateChanges"
    assert err(server, a, "Email/changes", {}) == "invalidArguments"


def test_email_query_changes(server):
    a = "alice@example.test"
    tag = unique("qc")
    append(server, a, message(f"{tag} one"))
    args = {"filter": {"subject": tag}, "sort": [{"property": "subject"}]}
    r = ok(server, a, "Email/query", args)
    old = r["queryState"]
    append(server, a, message(f"{tag} two"))
    c = ok(server, a, "Email/queryChanges", {**args, "sinceQueryState": old, "calculateTotal": True})
    assert c["oldQueryState"] == old and c["total"] == 2
    two = find(server, a, f"{tag} two")
    assert c["added"] == [{"id": two, "index": 1}]
    assert err(server, a, "Email/queryChanges", {**args, "sinceQueryState": "x"}) == "cannotCalculateChanges"
    assert err(server, a, "Email/queryChanges", {**args, "collapseThreads": True,
                                                 "sinceQueryState": old}) == "cannotCalculateChanges"
