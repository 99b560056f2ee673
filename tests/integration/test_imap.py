"""IMAP4rev1 (RFC 3501) with imaplib and raw sockets."""

import base64
import imaplib
import re
import socket
import ssl
import time

from conftest import (
    DOMAIN,
    LineClient,
    build_message,
    imap_list_names,
    imap_literals,
    imap_ok,
    imap_raw_login,
    multipart_message,
    parse_fetch,
    parse_status,
    unique,
)

BASIC = f"imap-basic@{DOMAIN}"
LISTER = f"imap-list@{DOMAIN}"
FLAGS = f"imap-flags@{DOMAIN}"
SEARCH = f"imap-search@{DOMAIN}"
COPY = f"imap-copy@{DOMAIN}"
MBOX = f"imap-mbox@{DOMAIN}"
STATUS = f"imap-status@{DOMAIN}"
STRUCT = f"imap-struct@{DOMAIN}"
IDLE = f"imap-idle@{DOMAIN}"
TLS = f"imap-tls@{DOMAIN}"
BARE = f"imapbare@{DOMAIN}"
USERS = [BASIC, LISTER, FLAGS, SEARCH, COPY, MBOX, STATUS, STRUCT, IDLE, TLS, BARE]

DELIVERY_WAIT = 15  # seconds IDLE waits for the EXISTS of a delivered message
SPECIAL_USE = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk"}


def append(m, mailbox: str, data: bytes, flags: str = "") -> None:
    imap_ok(m.append(mailbox, flags or None, None, data), f"APPEND to {mailbox}")


def poll_untagged(m: imaplib.IMAP4, kind: str, predicate, timeout: float = 10.0) -> list[bytes]:
    """NOOPs until the untagged responses of `kind` collected so far satisfy predicate."""
    collected = []
    deadline = time.monotonic() + timeout
    while True:
        imap_ok(m.noop(), "NOOP")
        collected += [d for d in m.untagged_responses.pop(kind, []) if d is not None]
        if predicate(collected) or time.monotonic() >= deadline:
            return collected
        time.sleep(0.2)


def fetch_flags(items: list[bytes]) -> dict[int, set[str]]:
    out = {}
    for item in items:
        mo = re.match(rb"(\d+) \(.*FLAGS \(([^)]*)\)", item)
        if mo:
            out[int(mo.group(1))] = set(mo.group(2).decode().split())
    return out


def uid_search(m, *criteria) -> list[int]:
    data = imap_ok(m.uid("SEARCH", None, *criteria), f"UID SEARCH {criteria}")
    return sorted(int(x) for x in data[0].split())


def search(m, *criteria) -> list[int]:
    data = imap_ok(m.search(None, *criteria), f"SEARCH {criteria}")
    return sorted(int(x) for x in data[0].split())


def test_imap_login_and_select_inbox_reports_exists(server):
    for i in range(2):
        server.send(BASIC, build_message(BASIC, f"select me {i}", f"body {i}\r\n"))
    server.wait_count(BASIC, 2)
    m = server.imap(BASIC)
    try:
        typ, data = m.select("INBOX")
        assert typ == "OK" and int(data[0]) == 2, f"SELECT INBOX: {typ} {data}"
        assert m.untagged_responses.get("EXISTS") == [b"2"], m.untagged_responses
        assert m.untagged_responses.get("FLAGS"), "SELECT sent no FLAGS"
        assert int(m.untagged_responses["UIDVALIDITY"][0]) > 0
        assert int(m.untagged_responses["UIDNEXT"][0]) >= 3
    finally:
        m.logout()


def test_imap_login_accepts_bare_local_part_in_default_domain(server):
    m = server.imap()
    try:
        typ, _ = m.login("imapbare", server.passwords[BARE])
        assert typ == "OK"
        imap_ok(m.select("INBOX"), "SELECT")
    finally:
        m.logout()


def test_imap_list_shows_special_use_mailboxes(server):
    m = server.imap(LISTER)
    try:
        boxes = imap_list_names(m)
    finally:
        m.logout()
    assert "INBOX" in boxes, f"LIST lacks INBOX: {boxes}"
    for name, attr in SPECIAL_USE.items():
        assert name in boxes, f"LIST lacks {name}: {sorted(boxes)}"
        assert attr.lower() in {a.lower() for a in boxes[name]}, f"{name} lacks {attr}: {boxes[name]}"


def test_imap_flag_changes_and_expunge_are_seen_by_other_session(server):
    a = server.imap(FLAGS)
    b = server.imap(FLAGS)
    try:
        for i in range(3):
            append(a, "INBOX", build_message(FLAGS, f"flags {i}", f"message {i}\r\n"))
        assert int(imap_ok(a.select("INBOX"))[0]) == 3
        assert int(imap_ok(b.select("INBOX"))[0]) == 3
        b.untagged_responses.clear()

        data = imap_ok(a.store("1", "+FLAGS", "(\\Seen \\Flagged)"), "STORE")
        assert {"\\Seen", "\\Flagged"} <= fetch_flags(data).get(1, set()), f"STORE reply {data}"

        fetches = poll_untagged(b, "FETCH", lambda got: {"\\Seen", "\\Flagged"} <= fetch_flags(got).get(1, set()))
        assert {"\\Seen", "\\Flagged"} <= fetch_flags(fetches).get(1, set()), (
            f"session B got no FETCH FLAGS for message 1; untagged FETCH seen: {fetches}"
        )

        imap_ok(a.store("2", "+FLAGS.SILENT", "(\\Deleted)"), "STORE \\Deleted")
        expunged = imap_ok(a.expunge(), "EXPUNGE")
        assert expunged == [b"2"], f"EXPUNGE in session A reported {expunged}"

        seen = poll_untagged(b, "EXPUNGE", lambda got: b"2" in got)
        assert seen == [b"2"], f"session B saw EXPUNGE responses {seen}, want [2]"

        flags = fetch_flags(imap_ok(b.fetch("1:*", "(FLAGS)"), "FETCH FLAGS"))
        assert sorted(flags) == [1, 2], f"session B sees messages {sorted(flags)} after EXPUNGE"
        assert {"\\Seen", "\\Flagged"} <= flags[1]
        assert "\\Seen" not in flags[2]
    finally:
        a.logout()
        b.logout()


def test_imap_append_then_search_and_uid_fetch(server):
    tok = unique("s")
    m = server.imap(SEARCH)
    try:
        append(m, "INBOX", build_message(SEARCH, f"apple report {tok}", "the word zanzibar is here\r\n",
                                         sender="alice-search@remote.example"), "(\\Seen)")
        append(m, "INBOX", build_message(SEARCH, f"banana report {tok}", "nothing special\r\n",
                                         sender="bob@other.example"))
        append(m, "INBOX", build_message(SEARCH, "cherry notes", "zanzibar again\r\n",
                                         sender="alice-search@remote.example"))
        imap_ok(m.select("INBOX"), "SELECT")
        assert search(m, "ALL") == [1, 2, 3]
        assert search(m, "SUBJECT", f'"report {tok}"') == [1, 2]
        assert search(m, "FROM", "alice-search") == [1, 3]
        assert search(m, "UNSEEN") == [2, 3]
        assert search(m, "TEXT", "zanzibar") == [1, 3]
        assert search(m, "SUBJECT", "nonexistent-subject-xyz") == []

        uids = uid_search(m, "ALL")
        assert len(uids) == 3 and uids == sorted(set(uids)), f"UIDs {uids}"
        (banana,) = uid_search(m, "SUBJECT", "banana")
        assert banana == uids[1]
        data = imap_ok(m.uid("FETCH", str(banana), "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])"), "UID FETCH")
        header = imap_literals(data)[0]
        assert header.strip() == f"Subject: banana report {tok}".encode(), header
        meta = b" ".join(d[0] if isinstance(d, tuple) else d for d in data)
        assert f"UID {banana}".encode() in meta, meta
    finally:
        m.logout()


def test_imap_copy_to_another_mailbox(server):
    m = server.imap(COPY)
    try:
        msgs = [build_message(COPY, f"copy {i}", f"copy body {i}\r\n") for i in range(2)]
        for data in msgs:
            append(m, "INBOX", data)
        imap_ok(m.create("Archive"), "CREATE Archive")
        imap_ok(m.select("INBOX"), "SELECT")
        imap_ok(m.copy("1:2", "Archive"), "COPY")
        assert parse_status(imap_ok(m.status("Archive", "(MESSAGES)")))["MESSAGES"] == 2
        assert parse_status(imap_ok(m.status("INBOX", "(MESSAGES)")))["MESSAGES"] == 2
        imap_ok(m.select("Archive"), "SELECT Archive")
        copies = imap_literals(imap_ok(m.fetch("1:2", "(BODY.PEEK[])"), "FETCH"))
        assert copies == msgs, "copied messages differ from the originals"
    finally:
        m.logout()


def test_imap_create_rename_delete_mailbox(server):
    m = server.imap(MBOX)
    try:
        imap_ok(m.create("Projects"), "CREATE")
        assert m.create("Projects")[0] == "NO", "CREATE of an existing mailbox must fail"
        assert "Projects" in imap_list_names(m)
        append(m, "Projects", build_message(MBOX, "in projects", "x\r\n"))

        imap_ok(m.rename("Projects", "Clients"), "RENAME")
        names = imap_list_names(m)
        assert "Clients" in names and "Projects" not in names, sorted(names)
        assert parse_status(imap_ok(m.status("Clients", "(MESSAGES)")))["MESSAGES"] == 1, "RENAME lost messages"

        imap_ok(m.delete("Clients"), "DELETE")
        assert "Clients" not in imap_list_names(m)
        assert m.select("Clients")[0] == "NO", "SELECT of a deleted mailbox must fail"
        assert m.delete("INBOX")[0] == "NO", "DELETE INBOX must fail"
    finally:
        m.logout()


def test_imap_status_reports_counts(server):
    m = server.imap(STATUS)
    try:
        for i, flags in enumerate(["(\\Seen)", "", ""]):
            append(m, "INBOX", build_message(STATUS, f"status {i}", "s\r\n"), flags)
        st = parse_status(imap_ok(m.status("INBOX", "(MESSAGES UNSEEN UIDNEXT UIDVALIDITY)"), "STATUS"))
        assert st["MESSAGES"] == 3 and st["UNSEEN"] == 2, st
        imap_ok(m.select("INBOX", readonly=True), "EXAMINE")
        uids = uid_search(m, "ALL")
        assert st["UIDNEXT"] > max(uids), f"UIDNEXT {st['UIDNEXT']} not above UIDs {uids}"
        assert st["UIDVALIDITY"] == int(m.untagged_responses["UIDVALIDITY"][0])
    finally:
        m.logout()


def test_imap_envelope_and_bodystructure_of_multipart_message(server):
    subject = f"multipart {unique()}"
    data, _facts = multipart_message(STRUCT, subject)
    m = server.imap(STRUCT)
    try:
        append(m, "INBOX", data)
    finally:
        m.logout()
    c = imap_raw_login(server, STRUCT)
    with c:
        tagged, _ = c.imap_cmd("S1", "SELECT INBOX")
        assert tagged.startswith(b"S1 OK"), tagged
        tagged, lines = c.imap_cmd("F1", "FETCH 1 (ENVELOPE BODYSTRUCTURE RFC822.SIZE)")
        assert tagged.startswith(b"F1 OK"), tagged
    fetches = [parse_fetch(line)[1] for line in lines if re.match(rb"\* 1 FETCH", line)]
    assert fetches, f"no FETCH response: {lines}"
    items = {k: v for f in fetches for k, v in f.items()}

    assert int(items["RFC822.SIZE"]) == len(data)
    env = items["ENVELOPE"]
    assert env[1] == subject.encode(), f"envelope subject {env[1]!r}"
    (from_addr,) = env[2]
    assert (from_addr[2], from_addr[3]) == (b"sender", b"remote.example"), f"envelope from {env[2]}"
    (to_addr,) = env[5]
    assert (to_addr[2] + b"@" + to_addr[3]).decode() == STRUCT, f"envelope to {env[5]}"
    assert env[9] and env[9].startswith(b"<") and env[9].endswith(b"@remote.example>"), f"message-id {env[9]!r}"

    bs = items["BODYSTRUCTURE"]
    # body-type-mpart: the parts (lists), then the subtype, then extension data
    n_parts = next(i for i, x in enumerate(bs) if not isinstance(x, list))
    parts, subtype = bs[:n_parts], bs[n_parts]
    assert len(parts) == 3, f"BODYSTRUCTURE has {len(parts)} parts: {bs}"
    assert subtype.lower() == b"mixed", f"multipart subtype {subtype!r}"
    kinds = [(p[0].lower(), p[1].lower()) for p in parts]
    assert kinds == [(b"text", b"plain"), (b"text", b"html"), (b"application", b"octet-stream")], kinds
    assert parts[2][5].lower() == b"base64", f"attachment encoding {parts[2][5]!r}"
    assert parts[0][7].isdigit() and int(parts[0][7]) == 2, f"text/plain line count {parts[0][7]!r}"


def test_imap_body_section_and_partial_fetch(server):
    data, facts = multipart_message(STRUCT, f"sections {unique()}")
    m = server.imap(STRUCT)
    try:
        append(m, "INBOX", data)
        n = int(imap_ok(m.select("INBOX"))[0])
    finally:
        m.logout()
    c = imap_raw_login(server, STRUCT)
    with c:
        assert c.imap_cmd("S1", "SELECT INBOX")[0].startswith(b"S1 OK")
        tagged, lines = c.imap_cmd(
            "F1", f"FETCH {n} (BODY.PEEK[1] BODY.PEEK[3] BODY.PEEK[]<0.10> BODY.PEEK[]<7.20>)")
        assert tagged.startswith(b"F1 OK"), tagged
        tagged, after = c.imap_cmd("F2", f"FETCH {n} (FLAGS)")
        assert tagged.startswith(b"F2 OK")
    items = {}
    for line in lines:
        if re.match(rb"\* \d+ FETCH", line):
            items.update(parse_fetch(line)[1])
    assert items.get("BODY[1]") == facts["plain"], f"BODY[1] = {items.get('BODY[1]')!r}"
    assert base64.b64decode(items["BODY[3]"]) == facts["attachment"], "BODY[3] does not decode to the attachment"
    assert items.get("BODY[]<0>") == data[:10], f"BODY[]<0.10> = {items.get('BODY[]<0>')!r}"
    assert items.get("BODY[]<7>") == data[7:27], f"BODY[]<7.20> = {items.get('BODY[]<7>')!r}"
    assert b"\\Seen" not in b"".join(after), "BODY.PEEK set \\Seen"


def test_imap_idle_reports_new_message_delivered_by_smtp(server):
    c = imap_raw_login(server, IDLE)
    with c:
        tagged, caps = c.imap_cmd("C1", "CAPABILITY")
        assert b"IDLE" in b"".join(caps).upper(), f"IDLE not in {caps}"
        tagged, lines = c.imap_cmd("S1", "SELECT INBOX")
        assert tagged.startswith(b"S1 OK"), tagged
        exists = [int(mo.group(1)) for l in lines if (mo := re.match(rb"\* (\d+) EXISTS", l))]
        assert exists, f"SELECT gave no EXISTS: {lines}"
        before = exists[-1]
        c.send(b"I1 IDLE\r\n")
        cont = c.imap_response()
        assert cont.startswith(b"+"), f"IDLE continuation {cont!r}"

        server.send(IDLE, build_message(IDLE, f"idle {unique()}", "wake up\r\n"))
        c.sock.settimeout(DELIVERY_WAIT)
        got = []
        try:
            while True:
                line = c.imap_response()
                if not line:
                    break
                got.append(line)
                mo = re.match(rb"\* (\d+) EXISTS", line)
                if mo and int(mo.group(1)) > before:
                    break
        except (socket.timeout, TimeoutError):
            pass
        assert any(re.match(rb"\* %d EXISTS" % (before + 1), l) for l in got), (
            f"no '* {before + 1} EXISTS' during IDLE within {DELIVERY_WAIT}s; got {got}"
        )
        c.sock.settimeout(15)
        c.send(b"DONE\r\n")
        tagged, _ = c.imap_until_tagged("I1")
        assert tagged.startswith(b"I1 OK"), tagged


def test_imap_starttls_then_login(server):
    m = server.imap()
    try:
        assert "STARTTLS" in m.capabilities, m.capabilities
        typ, _ = m.starttls(ssl_context=server.ssl_context())
        assert typ == "OK"
        assert isinstance(m.sock, ssl.SSLSocket)
        imap_ok(m.login(TLS, server.passwords[TLS]), "LOGIN after STARTTLS")
        imap_ok(m.select("INBOX"), "SELECT")
    finally:
        m.logout()


def test_imaps_implicit_tls_login(server):
    m = imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=server.ssl_context(), timeout=20)
    try:
        assert m.sock.version() in ("TLSv1.2", "TLSv1.3")
        imap_ok(m.login(TLS, server.passwords[TLS]), "LOGIN over IMAPS")
        imap_ok(m.select("INBOX"), "SELECT")
    finally:
        m.logout()


def test_imap_login_with_wrong_password_gets_no(server):
    with LineClient(server.ports["imap"], timeout=30) as c:
        assert c.imap_response().startswith(b"* OK")
        tagged, _ = c.imap_cmd("A1", f'LOGIN "{BASIC}" "wrong-password"')
        assert tagged.startswith(b"A1 NO"), f"wrong password got {tagged!r}"
        tagged, _ = c.imap_cmd("A2", f'LOGIN "nobody-{unique()}@{DOMAIN}" "whatever"')
        assert tagged.startswith(b"A2 NO"), f"unknown user got {tagged!r}"


def test_imap_garbage_first_command_gets_bad(server):
    with LineClient(server.ports["imap"]) as c:
        assert c.imap_response().startswith(b"* OK")
        c.send(b"hello world this is not imap\r\n")
        resp = c.imap_response()
        assert re.match(rb"(\*|hello) BAD", resp), f"garbage got {resp!r}"
        tagged, _ = c.imap_cmd("N1", "NOOP")
        assert tagged.startswith(b"N1 OK"), f"session unusable after BAD: {tagged!r}"


def test_imap_overlong_command_line_gets_bad(server):
    responses = []
    with LineClient(server.ports["imap"]) as c:
        assert c.imap_response().startswith(b"* OK")
        try:
            c.send(b"A1 LOGIN " + b"x" * (1024 * 1024) + b" y\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while True:
                resp = c.imap_response()
                if not resp:
                    break
                responses.append(resp[:200])
                if resp.startswith(b"A1 ") or b"BAD" in resp or resp.startswith(b"* BYE"):
                    break
        except (socket.timeout, TimeoutError, ConnectionResetError):
            pass
    assert any(re.match(rb"(\*|A1) BAD", r) for r in responses), f"over-long line got {responses}"


def test_imap_too_many_bad_commands_disconnects(server):
    replies = []
    with LineClient(server.ports["imap"]) as c:
        assert c.imap_response().startswith(b"* OK")
        closed = False
        for i in range(100):
            try:
                c.send(f"b{i} XYZZY plugh\r\n")
                resp = c.imap_response()
            except (BrokenPipeError, ConnectionResetError):
                resp = b""
            replies.append(resp[:80])
            if not resp:
                closed = True
                break
            if resp.startswith(b"* BYE"):
                try:
                    closed = c.imap_response() == b""
                except ConnectionResetError:
                    closed = True
                break
    assert closed, f"still connected after {len(replies)} bad commands; last replies {replies[-3:]}"
    assert len(replies) > 1 and all(b"BAD" in r for r in replies[:-1]), replies[:5]
