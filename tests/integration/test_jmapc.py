"""JMAP with a client the project did not write: `jmapc` from PyPI
(install: scripts/install-test-deps.sh, or `pip install jmapc`), over
HTTPS (jmapc speaks only https) with msgd's generated certificate:
list mailboxes, query and get emails, set keywords, move, destroy,
upload a blob, import. Submission is tested with the other JMAP parts."""

import os

import pytest

from conftest import free_ports, unique

try:
    import jmapc
    from jmapc import Client, EmailQueryFilterCondition
    from jmapc.methods import (CustomMethod, EmailGet, EmailQuery, EmailSet, MailboxGet)
except ImportError:  # pragma: no cover - the test fails with the hint below
    jmapc = None

ALICE = "alice@example.test"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """All-in-one with an HTTPS listener beside the standard ones."""
    from conftest import MsgdFactory
    factory = MsgdFactory(tmp_path_factory, "jmapc")
    inst = factory(users=(ALICE,), start=False)
    (https_port,) = free_ports(1)
    inst.ports["https"] = https_port
    inst.config_path.write_text(inst.config_text() + "\n".join([
        "", "[listener.https]", f'bind = ["127.0.0.1:{https_port}"]', "enabled = true", ""]))
    inst.start()
    yield inst
    factory.cleanup()


@pytest.fixture
def client(srv, monkeypatch):
    assert jmapc is not None, "jmapc is missing: run scripts/install-test-deps.sh (or: pip install jmapc)"
    # requests verifies against msgd's own certificate (it names 127.0.0.1).
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(srv.cert_path))
    return Client.create_with_password(host=f"127.0.0.1:{srv.ports['https']}", user=ALICE,
                                       password=srv.passwords[ALICE])


def one(client, method):
    r = client.request(method)
    assert not isinstance(r, jmapc.errors.Error), f"{method}: {r}"
    return r


def test_jmapc_mailboxes_query_get_keywords_move_destroy(srv, client):
    subj = unique("jmapc")
    m = srv.imap(ALICE)
    try:
        typ, data = m.append("INBOX", "", None,
                             f"From: Zed <zed@remote.example>\r\nTo: {ALICE}\r\nSubject: {subj}\r\n\r\nhi there\r\n".encode())
        assert typ == "OK", data
    finally:
        m.logout()
    boxes = one(client, MailboxGet(ids=None)).data
    by_role = {b.role: b for b in boxes}
    assert {"inbox", "drafts", "sent", "trash", "junk"} <= set(by_role)
    inbox, trash = by_role["inbox"].id, by_role["trash"].id
    q = one(client, EmailQuery(filter=EmailQueryFilterCondition(in_mailbox=inbox, text=subj)))
    assert len(q.ids) == 1
    eid = q.ids[0]
    e = one(client, EmailGet(ids=[eid], properties=["subject", "from", "keywords", "mailboxIds", "preview"])).data[0]
    assert e.subject == subj and e.mail_from[0].email == "zed@remote.example"
    assert e.preview.startswith("hi there") and e.mailbox_ids == {inbox: True}
    # keywords
    r = one(client, EmailSet(update={eid: {"keywords/$seen": True, "keywords/$flagged": True}}))
    assert eid in r.updated
    e = one(client, EmailGet(ids=[eid], properties=["keywords"])).data[0]
    assert e.keywords == {"$seen": True, "$flagged": True}
    # move
    r = one(client, EmailSet(update={eid: {f"mailboxIds/{inbox}": None, f"mailboxIds/{trash}": True}}))
    assert eid in r.updated
    e = one(client, EmailGet(ids=[eid], properties=["mailboxIds"])).data[0]
    assert e.mailbox_ids == {trash: True}
    m = srv.imap(ALICE)
    try:
        m.select("Trash", readonly=True)
        typ, data = m.search(None, "SUBJECT", f'"{subj}"')
        assert data[0].split(), "moved message not in Trash over IMAP"
    finally:
        m.logout()
    # destroy
    r = one(client, EmailSet(destroy=[eid]))
    assert r.destroyed == [eid]
    assert one(client, EmailGet(ids=[eid])).not_found == [eid]


def test_jmapc_upload_and_import(srv, client, tmp_path):
    subj = unique("imported")
    path = tmp_path / "msg.eml"
    path.write_bytes(f"From: Imp <imp@remote.example>\r\nTo: {ALICE}\r\nSubject: {subj}\r\n\r\nimported body\r\n".encode())
    blob = client.upload_blob(path)
    assert blob.id and blob.size == path.stat().st_size
    boxes = one(client, MailboxGet(ids=None)).data
    inbox = next(b.id for b in boxes if b.role == "inbox")
    imp = CustomMethod(data={"accountId": client.account_id, "emails": {
        "i": {"blobId": blob.id, "mailboxIds": {inbox: True}, "keywords": {"$seen": True}}}})
    imp.jmap_method = "Email/import"
    imp.using = {"urn:ietf:params:jmap:mail"}
    r = one(client, imp)
    created = r.data["created"]["i"]
    e = one(client, EmailGet(ids=[created["id"]], properties=["subject", "keywords", "mailboxIds"])).data[0]
    assert e.subject == subj and e.keywords == {"$seen": True} and e.mailbox_ids == {inbox: True}
