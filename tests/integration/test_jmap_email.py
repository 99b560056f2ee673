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
    # Default sort is receivedAt descending: the two appends may fall in the
    # same second or not, so only the set is certain.
    assert sorted(q({"operator": "AND", "conditions": [{"subject": tag},
                                                       {"operator": "NOT", "conditions": [{"hasKeyword": "$seen"}]}]}
                    )["ids"]) == sorted(three[:2])
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


# -- Email/set -------------------------------------------------------------


def imap_flags(server, user, mailbox, subject):
    """(uid, flags) of the message with `subject` in `mailbox`, or None."""
    m = server.imap(user)
    try:
        m.select(mailbox, readonly=True)
        typ, data = m.uid("SEARCH", None, "SUBJECT", f'"{subject}"')
        uids = data[0].split()
        if not uids:
            return None
        typ, data = m.uid("FETCH", uids[-1].decode(), "(FLAGS)")
        return uids[-1].decode(), tuple(f.decode() for f in imaplib.ParseFlags(data[0]) if f != b"\\Recent")
    finally:
        m.logout()


def test_email_set_create_draft_and_imap_sees_it(server):
    a = "alice@example.test"
    mb = mailboxes(server, a)
    subj = unique("draft")
    blob = upload(server, a, b"%PDF-1.4 fake", "application/pdf")["blobId"]
    r = ok(server, a, "Email/set", {"create": {"d1": {
        "mailboxIds": {mb["drafts"]: True},
        "keywords": {"$draft": True, "$seen": True},
        "from": [{"name": "Alice", "email": a}],
        "to": [{"email": "bob@example.test"}],
        "subject": subj,
        "textBody": [{"partId": "t", "type": "text/plain"}],
        "htmlBody": [{"partId": "h", "type": "text/html"}],
        "attachments": [{"blobId": blob, "type": "application/pdf", "name": "doc.pdf"}],
        "bodyValues": {"t": {"value": "Plain draft"}, "h": {"value": "<b>HTML draft</b>"}},
    }}})
    c = r["created"]["d1"]
    assert c["id"].startswith("M") and c["size"] > 0 and r["oldState"] != r["newState"]
    e = ok(server, a, "Email/get", {"ids": [c["id"]], "properties": [
        "subject", "keywords", "mailboxIds", "attachments", "textBody", "bodyValues", "from"],
        "fetchTextBodyValues": True})["list"][0]
    assert e["subject"] == subj and e["keywords"] == {"$draft": True, "$seen": True}
    assert e["mailboxIds"] == {mb["drafts"]: True}
    assert e["attachments"][0]["name"] == "doc.pdf"
    assert list(e["bodyValues"].values())[0]["value"].startswith("Plain draft")
    uid, flags = imap_flags(server, a, "Drafts", subj)
    assert "\\Draft" in flags and "\\Seen" in flags


def test_email_set_update_keywords_move_copy_destroy(server):
    a = "alice@example.test"
    mb = mailboxes(server, a)
    subj = unique("upd")
    append(server, a, message(subj))
    eid = find(server, a, subj)
    # keywords by patch
    r = ok(server, a, "Email/set", {"update": {eid: {"keywords/$seen": True, "keywords/$flagged": True}}})
    assert r["updated"] == {eid: None}
    _, flags = imap_flags(server, a, "INBOX", subj)
    assert "\\Seen" in flags and "\\Flagged" in flags
    ok(server, a, "Email/set", {"update": {eid: {"keywords/$flagged": None}}})
    _, flags = imap_flags(server, a, "INBOX", subj)
    assert "\\Flagged" not in flags and "\\Seen" in flags
    # full keywords value
    ok(server, a, "Email/set", {"update": {eid: {"keywords": {"$answered": True}}}})
    _, flags = imap_flags(server, a, "INBOX", subj)
    assert flags == ("\\Answered",)
    # move: INBOX -> Trash keeps the id
    ok(server, a, "Email/set", {"update": {eid: {f"mailboxIds/{mb['inbox']}": None,
                                                  f"mailboxIds/{mb['trash']}": True}}})
    assert imap_flags(server, a, "INBOX", subj) is None
    assert imap_flags(server, a, "Trash", subj) is not None
    e = ok(server, a, "Email/get", {"ids": [eid], "properties": ["mailboxIds", "keywords"]})["list"][0]
    assert e["mailboxIds"] == {mb["trash"]: True} and e["keywords"] == {"$answered": True}
    # a second mailbox (copy), same email
    ok(server, a, "Email/set", {"update": {eid: {"mailboxIds": {mb["trash"]: True, mb["junk"]: True}}}})
    e = ok(server, a, "Email/get", {"ids": [eid], "properties": ["mailboxIds"]})["list"][0]
    assert e["mailboxIds"] == {mb["trash"]: True, mb["junk"]: True}
    # destroy: gone from both
    r = ok(server, a, "Email/set", {"destroy": [eid]})
    assert r["destroyed"] == [eid]
    assert imap_flags(server, a, "Trash", subj) is None and imap_flags(server, a, "Junk", subj) is None
    assert ok(server, a, "Email/get", {"ids": [eid]})["notFound"] == [eid]


def test_email_set_errors(server):
    a, b = "alice@example.test", "bob@example.test"
    mb = mailboxes(server, a)
    subj = unique("err")
    append(server, a, message(subj))
    eid = find(server, a, subj)
    state = ok(server, a, "Email/get", {"ids": []})["state"]
    assert err(server, a, "Email/set", {"ifInState": "0", "destroy": [eid]}) == "stateMismatch"
    r = ok(server, a, "Email/set", {"ifInState": state, "update": {
        eid: {"mailboxIds": {}},
        "Mffffffffffffff00": {"keywords/$seen": True},
    }, "destroy": ["Mffffffffffffff01"], "create": {
        "x": {"subject": "no mailbox"},
        "y": {"mailboxIds": {mb["inbox"]: True}, "attachments": [{"blobId": "Uffffffffffffffffffffffffffffffff", "type": "a/b"}]},
        "z": {"mailboxIds": {mb["inbox"]: True}, "id": "Mabc"},
    }})
    assert r["notUpdated"][eid]["type"] == "invalidProperties"
    assert r["notUpdated"]["Mffffffffffffff00"]["type"] == "notFound"
    assert r["notDestroyed"]["Mffffffffffffff01"]["type"] == "notFound"
    assert r["notCreated"]["x"]["type"] == "invalidProperties"
    assert r["notCreated"]["y"]["type"] == "blobNotFound"
    assert r["notCreated"]["z"]["type"] == "invalidProperties"
    r = ok(server, a, "Email/set", {"update": {eid: {"keywords": {"$seen": True}, "keywords/$flagged": True}}})
    assert r["notUpdated"][eid]["type"] == "invalidPatch"
    r = ok(server, a, "Email/set", {"update": {eid: {"keywords/a b": True}}})
    assert r["notUpdated"][eid]["type"] == "invalidProperties"
    # another user's email and mailbox
    subj_b = unique("bobs")
    append(server, b, message(subj_b, to=b))
    bid = find(server, b, subj_b)
    r = ok(server, a, "Email/set", {"destroy": [bid], "update": {eid: {"mailboxIds": {mailboxes(server, b)["inbox"]: True}}}})
    assert r["notDestroyed"][bid]["type"] == "notFound"
    assert r["notUpdated"][eid]["type"] == "invalidProperties"
    assert imap_flags(server, b, "INBOX", subj_b) is not None


# -- Email/import, Email/copy, Email/parse, SearchSnippet/get --------------


def test_email_import_from_upload(server):
    a = "alice@example.test"
    mb = mailboxes(server, a)
    subj = unique("imp")
    blob = upload(server, a, message(subj).replace(b"\r\n", b"\n"))["blobId"]
    r = ok(server, a, "Email/import", {"emails": {"i1": {
        "blobId": blob, "mailboxIds": {mb["archive"] if "archive" in mb else mb["junk"]: True},
        "keywords": {"$seen": True}, "receivedAt": "2025-01-02T03:04:05Z"}}})
    c = r["created"]["i1"]
    e = ok(server, a, "Email/get", {"ids": [c["id"]], "properties": ["subject", "receivedAt", "keywords", "size"]})["list"][0]
    assert e["subject"] == subj and e["receivedAt"] == "2025-01-02T03:04:05Z"
    assert e["keywords"] == {"$seen": True} and e["size"] == c["size"]
    # Stored with CRLF line ends, as IMAP serves it.
    m = server.imap(a)
    try:
        m.select("Junk", readonly=True)
        typ, data = m.uid("SEARCH", None, "SUBJECT", f'"{subj}"')
        typ, data = m.uid("FETCH", data[0].split()[-1].decode(), "(BODY.PEEK[])")
        assert b"\r\nSubject: " + subj.encode() + b"\r\n" in data[0][1]
    finally:
        m.logout()
    # Errors: unknown blob, not a message, bad mailbox, state.
    bad = upload(server, a, b"\x00\x01 not mail", "application/octet-stream")["blobId"]
    r = ok(server, a, "Email/import", {"emails": {
        "x": {"blobId": "Uffffffffffffffffffffffffffffffff", "mailboxIds": {mb["inbox"]: True}},
        "y": {"blobId": bad, "mailboxIds": {mb["inbox"]: True}},
        "z": {"blobId": blob, "mailboxIds": {"Fffffffffffffff00": True}},
    }})
    assert r["notCreated"]["x"]["type"] == "blobNotFound"
    assert r["notCreated"]["y"]["type"] == "invalidEmail"
    assert r["notCreated"]["z"]["type"] == "invalidProperties"
    assert err(server, a, "Email/import", {"ifInState": "0", "emails": {}}) == "stateMismatch"
    # Another user's upload is not found.
    other = upload(server, "bob@example.test", message("bob's"))["blobId"]
    r = ok(server, a, "Email/import", {"emails": {"o": {"blobId": other, "mailboxIds": {mb["inbox"]: True}}}})
    assert r["notCreated"]["o"]["type"] == "blobNotFound"


def test_email_copy_within_account(server):
    a = "alice@example.test"
    mb = mailboxes(server, a)
    acc = account(server, a)
    subj = unique("cp")
    append(server, a, message(subj), flags="(\\Flagged)")
    eid = find(server, a, subj)
    r = api(server, a, [["Email/copy", {"fromAccountId": acc, "accountId": acc, "create": {
        "k": {"id": eid, "mailboxIds": {mb["trash"]: True}}}, "onSuccessDestroyOriginal": True}, "c"]])
    assert r[0][0] == "Email/copy"
    new = r[0][1]["created"]["k"]["id"]
    assert new != eid
    assert r[1][0] == "Email/set" and r[1][1]["destroyed"] == [eid] and r[1][2] == "c"
    e = ok(server, a, "Email/get", {"ids": [new], "properties": ["subject", "mailboxIds", "keywords"]})["list"][0]
    assert e["subject"] == subj and e["mailboxIds"] == {mb["trash"]: True}
    assert e["keywords"] == {"$flagged": True}
    assert imap_flags(server, a, "INBOX", subj) is None
    r = api(server, a, [["Email/copy", {"fromAccountId": account(server, "bob@example.test"), "accountId": acc,
                                        "create": {}}, "c"]])
    assert r[0][1]["type"] == "fromAccountNotFound"
    r = api(server, a, [["Email/copy", {"fromAccountId": acc, "accountId": acc, "create": {
        "k": {"id": "Mffffffffffffff00", "mailboxIds": {mb["trash"]: True}}}}, "c"]])
    assert r[0][1]["notCreated"]["k"]["type"] == "notFound"


def test_email_parse_upload_and_attached_message(server):
    a = "alice@example.test"
    inner = message("inner subject", body="inner body")
    outer = (b"From: x@remote.example\r\nSubject: outer\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
             b"--b\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--b--\r\n")
    up = upload(server, a, outer)["blobId"]
    r = ok(server, a, "Email/parse", {"blobIds": [up, "Uffffffffffffffffffffffffffffffff"],
                                      "fetchTextBodyValues": True})
    p = r["parsed"][up]
    assert p["subject"] == "outer" and r["notFound"] == ["Uffffffffffffffffffffffffffffffff"]
    assert p["attachments"][0]["type"] == "message/rfc822" and p["attachments"][0]["blobId"] is None
    # Stored: the attached message is a part blob that parses on its own.
    append(server, a, outer)
    eid = find(server, a, "outer")
    att = ok(server, a, "Email/get", {"ids": [eid], "properties": ["attachments"]})["list"][0]["attachments"][0]
    r = ok(server, a, "Email/parse", {"blobIds": [att["blobId"]], "properties": ["subject", "textBody", "bodyValues"],
                                      "fetchTextBodyValues": True})
    q = r["parsed"][att["blobId"]]
    assert q["subject"] == "inner subject"
    assert list(q["bodyValues"].values())[0]["value"].startswith("inner body")
    bad = upload(server, a, b"\x00\x01binary", "application/octet-stream")["blobId"]
    assert ok(server, a, "Email/parse", {"blobIds": [bad]})["notParsable"] == [bad]
    assert err(server, a, "Email/parse", {}) == "invalidArguments"


def test_search_snippet_get(server):
    a = "alice@example.test"
    tag = unique("snip")
    append(server, a, message(f"{tag} quarterly <report>", body="The quarterly numbers are <in> & ready."))
    eid = find(server, a, tag)
    r = ok(server, a, "SearchSnippet/get", {"emailIds": [eid, "Mffffffffffffff00"],
                                            "filter": {"text": "quarterly"}})
    s = r["list"][0]
    assert s["emailId"] == eid
    assert s["subject"] == f"{tag} <mark>quarterly</mark> &lt;report&gt;"
    assert "<mark>quarterly</mark> numbers are &lt;in&gt; &amp; ready." in s["preview"]
    assert r["notFound"] == ["Mffffffffffffff00"]
    r = ok(server, a, "SearchSnippet/get", {"emailIds": [eid], "filter": {"subject": "nomatch"}})
    assert r["list"][0]["subject"] is None
    assert err(server, a, "SearchSnippet/get", {"emailIds": [eid], "filter": {"bad": 1}}) == "unsupportedFilter"


# -- hostile input and references ------------------------------------------


def test_email_get_of_deeply_nested_message_is_bounded(server):
    a = "alice@example.test"
    subj = unique("deep")
    parts = [f"From: x@remote.example\r\nSubject: {subj}\r\nMIME-Version: 1.0\r\n"]
    for i in range(5000):
        parts.append(f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n")
    parts.append("Content-Type: text/plain\r\n\r\nleaf\r\n")
    append(server, a, "".join(parts).encode())
    eid = find(server, a, subj)
    e = ok(server, a, "Email/get", {"ids": [eid], "properties": ["bodyStructure", "textBody", "bodyValues",
                                                                 "hasAttachment", "preview"],
                                    "fetchAllBodyValues": True})["list"][0]
    depth, node = 0, e["bodyStructure"]
    while node.get("subParts"):
        node, depth = node["subParts"][0], depth + 1
    assert depth <= 64
    # the server goes on serving
    assert ok(server, a, "Email/get", {"ids": [eid], "properties": ["subject"]})["list"][0]["subject"] == subj


def test_email_set_references_and_argument_errors(server):
    a = "alice@example.test"
    mb = mailboxes(server, a)
    acc = account(server, a)
    subj = unique("ref")
    r = api(server, a, [
        ["Email/set", {"accountId": acc, "create": {"n": {
            "mailboxIds": {mb["drafts"]: True}, "subject": subj,
            "bodyStructure": {"type": "text/plain", "partId": "b"}, "bodyValues": {"b": {"value": "body"}}}}}, "1"],
        ["Email/set", {"accountId": acc, "update": {"#n": {"keywords/$seen": True}}}, "2"],
        ["Email/get", {"accountId": acc, "ids": ["#n"], "properties": ["subject", "keywords"]}, "3"],
    ])
    assert r[0][0] == "Email/set" and "n" in r[0][1]["created"]
    new = r[0][1]["created"]["n"]["id"]
    assert r[1][1]["updated"] == {new: None}
    assert r[2][0] == "Email/get", r[2]
    assert r[2][1]["list"] == [{"id": new, "subject": subj, "keywords": {"$seen": True}}]
    assert err(server, a, "Email/get", {"ids": [new], "maxBodyValueBytes": 0}) == "invalidArguments"
    assert err(server, a, "Email/get", {"ids": [new], "fetchTextBodyValues": "yes"}) == "invalidArguments"
    assert err(server, a, "Email/set", {"create": []}) == "invalidArguments"
    everything = ok(server, a, "Email/get", {"ids": None, "properties": ["id"]})
    assert new in [e["id"] for e in everything["list"]]
