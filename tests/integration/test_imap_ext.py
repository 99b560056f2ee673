"""IMAP extensions (docs/imap.md capability table) against the real msgd
binary: one test per capability, named after the RFC behaviour. Raw IMAP
over LineClient where imaplib has no support for the extension."""

import base64
import re
import socket
import time
import zlib

import pytest

from conftest import (
    DOMAIN,
    LineClient,
    MsgdFactory,
    build_message,
    imap_raw_login,
    parse_fetch,
    unique,
)

QR = f"x-qresync@{DOMAIN}"
IDLER = f"x-idle@{DOMAIN}"
EN = f"x-enable@{DOMAIN}"
ES = f"x-esearch@{DOMAIN}"
LS = f"x-list@{DOMAIN}"
QU = f"x-quota@{DOMAIN}"
SO = f"x-sort@{DOMAIN}"
BI = f"x-binary@{DOMAIN}"
CO = f"x-compress@{DOMAIN}"
U8 = f"x-utf8@{DOMAIN}"
ACL_A = f"x-acla@{DOMAIN}"
ACL_B = f"x-aclb@{DOMAIN}"
OB = f"x-objectid@{DOMAIN}"
USERS = [QR, IDLER, EN, ES, LS, SO, BI, CO, U8, ACL_A, ACL_B, OB]
QUOTA_BYTES = 20000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Like conftest's `server`, plus one user with a small quota
    (`msgd user add --quota`)."""
    factory = MsgdFactory(tmp_path_factory, "test_imap_ext")
    inst = factory(users=USERS, start=False)
    res = inst.cli("user", "add", "--quota", str(QUOTA_BYTES), QU, input="pw-quota-Xk93q\n")
    assert res.returncode == 0, f"user add --quota: {res.stdout} {res.stderr}"
    inst.passwords[QU] = "pw-quota-Xk93q"
    inst.start()
    yield inst
    factory.cleanup()


# --------------------------------------------------------------------------
# helpers


def ok(c: LineClient, tag: str, command, what: str = "") -> list[bytes]:
    tagged, others = c.imap_cmd(tag, command)
    assert tagged.startswith(tag.encode() + b" OK"), f"{what or command!r}: {tagged!r} {others!r}"
    return others


def append(c: LineClient, mailbox: str, data: bytes, flags: str = "", tag: str = "AP") -> bytes:
    """APPEND with a synchronizing literal; returns the tagged OK line."""
    mb = mailbox.encode() if isinstance(mailbox, str) else mailbox
    fl = f" ({flags})".encode() if flags else b""
    c.send(tag.encode() + b" APPEND " + mb + fl + b" {" + str(len(data)).encode() + b"}\r\n")
    cont = c.imap_response()
    assert cont.startswith(b"+"), f"APPEND continuation {cont!r}"
    c.send(data + b"\r\n")
    tagged, others = c.imap_until_tagged(tag)
    assert tagged.startswith(tag.encode() + b" OK"), f"APPEND: {tagged!r} {others!r}"
    return tagged


def msg(to: str, subject: str, body: str = "body\r\n", **kw) -> bytes:
    return build_message(to, subject, body, **kw)


def fetches(lines) -> dict[int, dict]:
    out = {}
    for line in lines:
        if re.match(rb"\* \d+ FETCH ", line):
            n, items = parse_fetch(line)
            out.setdefault(n, {}).update(items)
    return out


def code_value(line: bytes, code: str) -> bytes:
    mo = re.search(rb"\[" + code.encode() + rb" ([^\]]*)\]", line)
    assert mo, f"no [{code} ...] in {line!r}"
    return mo.group(1)


def untagged(lines, word: str) -> list[bytes]:
    return [l for l in lines if re.match(rb"\* (\d+ )?" + word.encode() + rb"\b", l, re.I)]


def read_until(c: LineClient, predicate, timeout: float) -> list[bytes]:
    """Reads responses until predicate(collected) or timeout."""
    got = []
    deadline = time.monotonic() + timeout
    while not predicate(got) and time.monotonic() < deadline:
        c.sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            line = c.imap_response()
        except socket.timeout:
            break
        if not line:
            break
        got.append(line)
    c.sock.settimeout(15)
    return got


# --------------------------------------------------------------------------
# 1. CONDSTORE / QRESYNC


def test_rfc7162_qresync_resync_after_disconnect_and_condstore_changedsince_unchangedsince(server):
    c = imap_raw_login(server, QR)
    for i in range(3):
        append(c, "INBOX", msg(QR, f"qr {i}"))
    ok(c, "E1", "ENABLE QRESYNC")
    sel = ok(c, "S1", "SELECT INBOX")
    uidvalidity = int(code_value(b"".join(l for l in sel if b"UIDVALIDITY" in l), "UIDVALIDITY"))
    modseq = int(code_value(b"".join(l for l in sel if b"HIGHESTMODSEQ" in l), "HIGHESTMODSEQ"))
    uids = [int(x) for x in b" ".join(untagged(ok(c, "U1", "UID SEARCH ALL"), "SEARCH")).split()[2:]]
    assert len(uids) == 3, uids
    ok(c, "LO", "LOGOUT")
    c.close()

    # another session changes flags on uids[0] and expunges uids[1]
    d = imap_raw_login(server, QR)
    ok(d, "S1", "SELECT INBOX")
    ok(d, "F1", f"UID STORE {uids[0]} +FLAGS (\\Flagged)")
    ok(d, "F2", f"UID STORE {uids[1]} +FLAGS (\\Deleted)")
    ok(d, "X1", f"UID EXPUNGE {uids[1]}")
    ok(d, "LO", "LOGOUT")
    d.close()

    c = imap_raw_login(server, QR)
    enabled = ok(c, "E1", "ENABLE QRESYNC")
    assert any(re.match(rb"\* ENABLED .*QRESYNC", l, re.I) for l in enabled), enabled
    sel = ok(c, "S1", f"SELECT INBOX (QRESYNC ({uidvalidity} {modseq}))")
    vanished = [l for l in sel if l.upper().startswith(b"* VANISHED (EARLIER)")]
    assert vanished, f"no VANISHED (EARLIER) in QRESYNC SELECT: {sel}"
    assert str(uids[1]).encode() in vanished[0].split()[-1].split(b","), vanished
    changed = fetches(sel)
    assert len(changed) == 1, f"QRESYNC SELECT should FETCH only the changed message: {sel}"
    (items,) = changed.values()
    assert int(items["UID"]) == uids[0], items
    assert b"\\Flagged" in items["FLAGS"], items
    new_modseq = int(items["MODSEQ"][0])
    assert new_modseq > modseq, items

    # UID FETCH (CHANGEDSINCE n): only the changed message
    got = fetches(ok(c, "F1", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq})"))
    assert [int(v["UID"]) for v in got.values()] == [uids[0]], got
    assert all("MODSEQ" in v for v in got.values()), f"CHANGEDSINCE implies MODSEQ: {got}"

    # STORE (UNCHANGEDSINCE n) on a message changed after n -> [MODIFIED uid]
    tagged, others = c.imap_cmd("ST", f"UID STORE {uids[0]},{uids[2]} (UNCHANGEDSINCE {modseq}) +FLAGS (\\Seen)")
    assert tagged.startswith(b"ST OK"), tagged
    assert b"[MODIFIED " in tagged, f"UNCHANGEDSINCE gave no [MODIFIED]: {tagged!r}"
    assert code_value(tagged, "MODIFIED") == str(uids[0]).encode(), tagged
    stored = fetches(others)
    assert [int(v["UID"]) for v in stored.values()] == [uids[2]], others

    # UID FETCH (CHANGEDSINCE n VANISHED) reports the expunged uid too
    out = ok(c, "F2", f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq} VANISHED)")
    van = [l for l in out if l.upper().startswith(b"* VANISHED (EARLIER)")]
    assert van and str(uids[1]).encode() in van[0], f"no VANISHED (EARLIER) {uids[1]}: {out}"

    # STATUS HIGHESTMODSEQ, SEARCH MODSEQ
    st = untagged(ok(c, "SS", "STATUS INBOX (HIGHESTMODSEQ)"), "STATUS")
    assert st and int(re.search(rb"HIGHESTMODSEQ (\d+)", st[0]).group(1)) > new_modseq, st
    res = untagged(ok(c, "SM", f"UID SEARCH MODSEQ {new_modseq + 1}"), "SEARCH")
    assert res and re.search(rb"\(MODSEQ \d+\)", res[0]), f"SEARCH MODSEQ must end with (MODSEQ n): {res}"
    assert sorted(int(x) for x in res[0].split(b"(")[0].split()[2:]) == [uids[2]], res  # only the STORE above

    # with QRESYNC enabled an expunge is announced as VANISHED, not EXPUNGE
    ok(c, "D1", f"UID STORE {uids[2]} +FLAGS.SILENT (\\Deleted)")
    out = ok(c, "X1", "EXPUNGE")
    assert not untagged(out, "EXPUNGE"), f"EXPUNGE sent while QRESYNC is enabled: {out}"
    assert any(l.rstrip() == f"* VANISHED {uids[2]}".encode() for l in out), out

    # reselecting: OK [CLOSED] before the new mailbox's responses
    out = ok(c, "S2", "SELECT INBOX")
    assert out and b"[CLOSED]" in out[0], f"first response to a reselect is OK [CLOSED]: {out}"
    ok(c, "LO", "LOGOUT")
    c.close()


# --------------------------------------------------------------------------
# 2. IDLE


def test_rfc2177_idle_wakes_on_smtp_delivery_and_on_flag_change_by_other_session(server):
    c = imap_raw_login(server, IDLER)
    sel = ok(c, "S1", "SELECT INBOX")
    exists = int(untagged(sel, "EXISTS")[0].split()[1])
    c.send(b"I1 IDLE\r\n")
    assert c.imap_response().startswith(b"+"), "no IDLE continuation"
    server.send(IDLER, msg(IDLER, f"idle {unique()}"))
    want = f"* {exists + 1} EXISTS".encode()
    got = read_until(c, lambda g: any(l.startswith(want) for l in g), 10)
    assert any(l.startswith(want) for l in got), f"no {want!r} during IDLE: {got}"

    # a flag change by another session wakes the IDLE with a FETCH
    other = imap_raw_login(server, IDLER)
    ok(other, "S1", "SELECT INBOX")
    ok(other, "F1", f"STORE {exists + 1} +FLAGS (\\Flagged)")
    got = read_until(c, lambda g: any(b"FETCH" in l and b"\\Flagged" in l for l in g), 10)
    assert any(re.match(rf"\* {exists + 1} FETCH .*\\Flagged".encode(), l) for l in got), got
    ok(other, "F2", f"STORE {exists + 1} +FLAGS.SILENT (\\Deleted)")
    ok(other, "X1", "EXPUNGE")
    want = f"* {exists + 1} EXPUNGE".encode()
    got = read_until(c, lambda g: any(l.startswith(want) for l in g), 10)
    assert any(l.startswith(want) for l in got), f"no {want!r} during IDLE: {got}"
    c.send(b"DONE\r\n")
    tagged, _ = c.imap_until_tagged("I1")
    assert tagged.startswith(b"I1 OK"), tagged
    other.close()
    c.close()


# --------------------------------------------------------------------------
# 3. ENABLE, IMAP4rev2


def test_rfc5161_enable_lists_only_enabled_and_rfc9051_search_answers_esearch(server):
    c = imap_raw_login(server, EN)
    append(c, "INBOX", msg(EN, "en 1"))
    append(c, "INBOX", msg(EN, "en 2"))
    out = ok(c, "E1", "ENABLE X-NOSUCH CONDSTORE")
    enabled = [l for l in out if l.upper().startswith(b"* ENABLED")]
    assert len(enabled) == 1, out
    assert enabled[0].split()[2:] == [b"CONDSTORE"], f"ENABLED lists only CONDSTORE: {enabled}"

    # before IMAP4rev2: classic SEARCH
    ok(c, "S0", "SELECT INBOX")
    assert untagged(ok(c, "Q0", "SEARCH ALL"), "SEARCH"), "rev1 SEARCH answers * SEARCH"
    ok(c, "UN", "UNSELECT")
    out = ok(c, "E2", "ENABLE IMAP4rev2")
    assert any(l.upper().split()[2:] == [b"IMAP4REV2"] for l in out if l.upper().startswith(b"* ENABLED")), out
    sel = ok(c, "S1", "SELECT INBOX")
    assert not untagged(sel, "RECENT"), f"IMAP4rev2 SELECT sends no RECENT: {sel}"
    res = ok(c, "Q1", "SEARCH ALL")
    assert not untagged(res, "SEARCH"), f"IMAP4rev2 SEARCH must not answer * SEARCH: {res}"
    es = untagged(res, "ESEARCH")
    assert es and b'(TAG "Q1")' in es[0] and b"ALL 1:2" in es[0], res
    assert any(l.startswith(b"* LIST ") and b"INBOX" in l for l in sel), f"rev2 SELECT sends LIST: {sel}"
    assert not any(b"[UNSEEN " in l for l in sel), f"rev2 SELECT sends no UNSEEN code: {sel}"
    out = ok(c, "S2", "EXAMINE INBOX")
    assert out and b"[CLOSED]" in out[0], f"reselect starts with OK [CLOSED]: {out}"
    tagged, _ = c.imap_cmd("E3", "ENABLE QRESYNC")
    # ENABLE is valid only in the authenticated state (docs/imap.md)
    assert tagged.startswith(b"E3 BAD") or tagged.startswith(b"E3 NO"), tagged
    c.close()


# --------------------------------------------------------------------------
# 4. ESEARCH, SEARCHRES


def test_rfc4731_esearch_min_max_count_all_and_rfc5182_searchres_save(server):
    c = imap_raw_login(server, ES)
    for i in range(5):
        append(c, "INBOX", msg(ES, f"es {i}"), flags="\\Flagged" if i in (1, 3, 4) else "")
    ok(c, "S1", "SELECT INBOX")
    res = ok(c, "Q1", "SEARCH RETURN (MIN MAX COUNT ALL) FLAGGED")
    es = untagged(res, "ESEARCH")
    assert len(es) == 1, res
    line = es[0].rstrip()
    assert b'(TAG "Q1")' in line, line
    assert re.search(rb"\bMIN 2\b", line) and re.search(rb"\bMAX 5\b", line), line
    assert re.search(rb"\bCOUNT 3\b", line) and re.search(rb"\bALL 2,4:5\b", line), line

    res = ok(c, "Q3", "SEARCH RETURN (MIN MAX COUNT) DELETED")
    es = untagged(res, "ESEARCH")
    assert es and es[0].rstrip() == b'* ESEARCH (TAG "Q3") COUNT 0', f"no MIN/MAX without matches: {res}"
    res = ok(c, "Q4", "UID SEARCH RETURN () 1:2")
    es = untagged(res, "ESEARCH")
    assert es and re.search(rb'\(TAG "Q4"\) UID ALL \d', es[0]), f"UID ESEARCH marks UID: {res}"

    res = ok(c, "Q2", "SEARCH RETURN (SAVE) FLAGGED")
    assert not untagged(res, "ESEARCH") and not untagged(res, "SEARCH"), f"RETURN (SAVE) alone returns nothing: {res}"
    got = fetches(ok(c, "F1", "FETCH $ (UID)"))
    assert sorted(got) == [2, 4, 5], got
    res = untagged(ok(c, "Q5", "SEARCH $ 4:5"), "SEARCH")
    assert res and res[0].split()[2:] == [b"4", b"5"], res
    # a failed SEARCH empties $ (RFC 5182 2.1)
    tagged, _ = c.imap_cmd("Q6", "SEARCH RETURN (SAVE) NOSUCHKEY")
    assert tagged.startswith(b"Q6 BAD") or tagged.startswith(b"Q6 NO"), tagged
    assert fetches(ok(c, "F2", "FETCH $ (UID)")) == {}, "$ after a failed SEARCH is empty"
    c.close()


# --------------------------------------------------------------------------
# 5. LIST-EXTENDED, LIST-STATUS


def test_rfc5258_list_special_use_selection_and_rfc5819_list_status(server):
    c = imap_raw_login(server, LS)
    append(c, "INBOX", msg(LS, "ls 1"), flags="\\Seen")
    append(c, "INBOX", msg(LS, "ls 2"))
    out = ok(c, "L1", 'LIST (SPECIAL-USE) "" "*"')
    lists = untagged(out, "LIST")
    assert lists, out
    names = {}
    for l in lists:
        mo = re.match(rb'\* LIST \(([^)]*)\) \S+ "?([^"\r\n]*)"?', l)
        names[mo.group(2)] = mo.group(1)
    assert b"INBOX" not in names, f"LIST (SPECIAL-USE) lists only special-use mailboxes: {lists}"
    for name, attr in ((b"Sent", b"\\Sent"), (b"Trash", b"\\Trash"), (b"Drafts", b"\\Drafts")):
        assert name in names and attr in names[name], f"{name}: {lists}"

    ok(c, "C1", "CREATE Parent/Child")
    ok(c, "SB", "SUBSCRIBE Parent/Child")
    out = ok(c, "L3", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "Parent"')
    lst = untagged(out, "LIST")
    assert len(lst) == 1 and b"CHILDINFO" in lst[0] and b"SUBSCRIBED" in lst[0].upper(), f"RECURSIVEMATCH: {out}"
    assert b"\\Subscribed" not in lst[0], f"Parent itself is not subscribed: {lst}"
    out = ok(c, "L4", 'LIST "" ("Parent" "Parent/Child") RETURN (CHILDREN SUBSCRIBED)')
    lst = {l.rstrip().split()[-1].strip(b'"'): l for l in untagged(out, "LIST")}
    assert b"\\HasChildren" in lst[b"Parent"] and b"\\HasNoChildren" in lst[b"Parent/Child"], out
    assert b"\\Subscribed" in lst[b"Parent/Child"], out

    out = ok(c, "L2", 'LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN))')
    st = [l for l in untagged(out, "STATUS") if b"INBOX" in l]
    assert st, f"no STATUS INBOX in LIST-STATUS: {out}"
    assert re.search(rb"MESSAGES 2\b", st[0]) and re.search(rb"UNSEEN 1\b", st[0]), st
    # every listed selectable mailbox gets a STATUS after its LIST
    assert len(untagged(out, "STATUS")) == len(untagged(out, "LIST")), out
    c.close()


# --------------------------------------------------------------------------
# 6. STATUS=SIZE, APPENDLIMIT, QUOTA


def test_rfc8438_status_size_rfc7889_appendlimit_and_rfc9208_quota(server):
    c = imap_raw_login(server, QU)
    data = msg(QU, "quota 1", "x" * 2000 + "\r\n")
    append(c, "INBOX", data)
    out = ok(c, "ST", "STATUS INBOX (MESSAGES SIZE APPENDLIMIT)")
    st = untagged(out, "STATUS")[0]
    assert re.search(rb"MESSAGES 1\b", st), st
    size = int(re.search(rb"SIZE (\d+)", st).group(1))
    assert size >= len(data), st
    mo = re.search(rb"APPENDLIMIT (\d+)", st)
    assert mo and int(mo.group(1)) > len(data), f"APPENDLIMIT is imap.max_literal: {st}"

    out = ok(c, "Q1", "GETQUOTAROOT INBOX")
    root = [l for l in out if l.upper().startswith(b"* QUOTAROOT")]
    assert root and root[0].split()[2] in (b"INBOX", b'"INBOX"'), out
    quota = [l for l in out if l.upper().startswith(b"* QUOTA ")]
    assert quota, out
    mo = re.search(rb"STORAGE (\d+) (\d+)", quota[0])
    assert mo, quota
    used_kib, limit_kib = int(mo.group(1)), int(mo.group(2))
    assert limit_kib == QUOTA_BYTES // 1024, f"STORAGE limit in KiB: {quota}"
    assert used_kib >= size // 1024, quota

    big = msg(QU, "too big", "y" * (QUOTA_BYTES + 100) + "\r\n")
    c.send(b"A2 APPEND INBOX {" + str(len(big)).encode() + b"}\r\n")
    first = c.imap_response()
    if first.startswith(b"+"):
        c.send(big + b"\r\n")
        tagged, _ = c.imap_until_tagged("A2")
    else:
        tagged = first
    assert tagged.startswith(b"A2 NO") and b"[OVERQUOTA]" in tagged, f"APPEND over quota: {tagged!r}"

    out = ok(c, "Q2", 'GETQUOTA ""')
    assert any(re.search(rb'^\* QUOTA "" \(.*STORAGE \d+ ' + str(QUOTA_BYTES // 1024).encode(), l) for l in out), out
    tagged, _ = c.imap_cmd("Q3", 'SETQUOTA "" (STORAGE 99999)')
    assert tagged.startswith(b"Q3 NO") and b"[NOPERM]" in tagged, tagged
    # COPY that would exceed the quota is refused too
    for i in range(8):
        filler = msg(QU, f"fill {i}", "z" * 4000 + "\r\n")
        tagged, _ = c.imap_cmd(f"AX{i}", b"APPEND INBOX {%d+}\r\n" % len(filler) + filler)
        if not tagged.startswith(f"AX{i} OK".encode()):
            break
    assert b"[OVERQUOTA]" in tagged, f"filling the quota: {tagged!r}"
    ok(c, "SE", "SELECT INBOX")
    tagged, _ = c.imap_cmd("CP", "COPY 1:* Trash")
    assert tagged.startswith(b"CP NO") and b"[OVERQUOTA]" in tagged, f"COPY over quota: {tagged!r}"
    c.close()


# --------------------------------------------------------------------------
# 7. SORT, THREAD


def test_rfc5256_sort_subject_and_thread_references(server):
    c = imap_raw_login(server, SO)
    append(c, "INBOX", msg(SO, "Charlie", msgid="root-so"))
    append(c, "INBOX", msg(SO, "Alpha", msgid="other-so"))
    append(c, "INBOX", msg(SO, "Re: Charlie", msgid="reply-so",
                            extra_headers=["In-Reply-To: <root-so@remote.example>",
                                           "References: <root-so@remote.example>"]))
    append(c, "INBOX", msg(SO, "Bravo", msgid="b-so"))
    ok(c, "S1", "SELECT INBOX")
    out = ok(c, "O1", "SORT (SUBJECT) UTF-8 ALL")
    sort = [l for l in out if l.upper().startswith(b"* SORT")]
    # base subjects: Alpha(2) Bravo(4) Charlie(1) Charlie(3), ties by sequence
    assert sort and sort[0].split()[2:] == [b"2", b"4", b"1", b"3"], out
    # REVERSE reverses the key; ties stay in mailbox order (RFC 5256 3)
    out = ok(c, "O2", "SORT (REVERSE SUBJECT) UTF-8 ALL")
    assert [l for l in out if l.upper().startswith(b"* SORT")][0].split()[2:] == [b"1", b"3", b"4", b"2"], out

    out = ok(c, "T1", "THREAD REFERENCES UTF-8 ALL")
    th = [l for l in out if l.upper().startswith(b"* THREAD")]
    assert th, out
    text = th[0][len(b"* THREAD "):].strip()
    assert b"(1 3)" in text, f"reply 3 threads under 1: {text!r}"
    assert b"(2)" in text and b"(4)" in text, text
    c.close()


# --------------------------------------------------------------------------
# 8. BINARY


def test_rfc3516_binary_peek_decodes_base64_and_binary_size(server):
    c = imap_raw_login(server, BI)
    payload = b"binary payload \x01\x02\xff\xfe" * 20
    b64 = base64.encodebytes(payload).decode().replace("\n", "\r\n")
    append(c, "INBOX", msg(BI, "bin", b64, content_type="application/octet-stream", cte="base64"))
    ok(c, "S1", "SELECT INBOX")
    got = fetches(ok(c, "F1", "FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1])"))
    assert got[1]["BINARY[1]"] == payload, got
    assert int(got[1]["BINARY.SIZE[1]"]) == len(payload), got
    flags = fetches(ok(c, "F2", "FETCH 1 (FLAGS)"))
    assert b"\\Seen" not in flags[1]["FLAGS"], f"BINARY.PEEK must not set \\Seen: {flags}"
    # partial
    got = fetches(ok(c, "F3", "FETCH 1 (BINARY.PEEK[1]<3.10>)"))
    assert got[1]["BINARY[1]<3>"] == payload[3:13], got
    # data with NUL comes as literal8 ~{n}
    nul = b"a\x00b\x00c" * 10
    append(c, "INBOX", msg(BI, "nul", base64.encodebytes(nul).decode().replace("\n", "\r\n"),
                           content_type="application/octet-stream", cte="base64"))
    ok(c, "NO", "NOOP")
    c.send(b"F4 FETCH 2 (BINARY.PEEK[1])\r\n")
    line = c.readline()
    assert re.search(rb"BINARY\[1\] ~\{%d\}\r\n$" % len(nul), line), f"literal8 for NUL data: {line!r}"
    assert c.read_exact(len(nul)) == nul
    tagged, _ = c.imap_until_tagged("F4")
    assert tagged.startswith(b"F4 OK"), tagged
    # unknown Content-Transfer-Encoding -> NO [UNKNOWN-CTE]
    append(c, "INBOX", msg(BI, "cte", "gibberish\r\n", content_type="application/octet-stream", cte="x-weird"))
    ok(c, "N2", "NOOP")
    tagged, _ = c.imap_cmd("F5", "FETCH 3 (BINARY.PEEK[1])")
    assert tagged.startswith(b"F5 NO") and b"[UNKNOWN-CTE]" in tagged, tagged
    c.close()


# --------------------------------------------------------------------------
# 9. COMPRESS=DEFLATE


def test_rfc4978_compress_deflate_then_noop_through_stream(server):
    c = imap_raw_login(server, CO)
    tagged, _ = c.imap_cmd("C1", "COMPRESS DEFLATE")
    assert tagged.startswith(b"C1 OK"), tagged
    assert c.buf == b"", f"uncompressed data after COMPRESS OK: {c.buf!r}"
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    decomp = zlib.decompressobj(-15)

    def send(line: bytes) -> None:
        c.sock.sendall(comp.compress(line) + comp.flush(zlib.Z_SYNC_FLUSH))

    def read_tagged(tag: bytes) -> bytes:
        text = b""
        deadline = time.monotonic() + 10
        while tag + b" " not in text and time.monotonic() < deadline:
            chunk = c.sock.recv(65536)
            assert chunk, f"EOF; got {text!r}"
            text += decomp.decompress(chunk)
        return text

    send(b"N1 NOOP\r\n")
    text = read_tagged(b"N1")
    assert re.search(rb"^N1 OK", text, re.M), text
    send(b"N2 CAPABILITY\r\n")
    text = read_tagged(b"N2")
    assert b"* CAPABILITY" in text and re.search(rb"^N2 OK", text, re.M), text
    # a second COMPRESS is refused with [COMPRESSIONACTIVE]
    send(b"N3 COMPRESS DEFLATE\r\n")
    text = read_tagged(b"N3")
    assert re.search(rb"^N3 NO \[COMPRESSIONACTIVE\]", text, re.M), text
    c.close()


# --------------------------------------------------------------------------
# 10. UTF8=ACCEPT


def test_rfc6855_utf8_accept_create_and_list_utf8_mailbox_name(server):
    c = imap_raw_login(server, U8)
    out = ok(c, "E1", "ENABLE UTF8=ACCEPT")
    assert any(b"UTF8=ACCEPT" in l.upper() for l in out if l.upper().startswith(b"* ENABLED")), out
    name = "Grüße 日本"
    ok(c, "C1", f'CREATE "{name}"'.encode())
    out = ok(c, "L1", 'LIST "" "*"')
    raw = b"\n".join(untagged(out, "LIST"))
    assert name.encode() in raw, f"LIST must show the UTF-8 name after UTF8=ACCEPT: {out}"
    assert b"&" not in raw.replace(b"&-", b""), f"no modified UTF-7 after UTF8=ACCEPT: {out}"
    ok(c, "S1", f'SELECT "{name}"'.encode())
    # APPEND UTF8 (~{n}) with a UTF-8 header
    body = msg(U8, "Grüße ✓").replace(b"remote.example>", "rémote.example>".encode())
    c.send(b"A1 APPEND INBOX UTF8 (~{%d+}\r\n" % len(body) + body + b")\r\n")
    tagged, _ = c.imap_until_tagged("A1")
    assert tagged.startswith(b"A1 OK"), tagged
    # the modified UTF-7 form of the name is still accepted as input
    mutf7 = "Gr&APwA3w-e &ZeVnLA-"
    st = untagged(ok(c, "S2", f'STATUS "{mutf7}" (MESSAGES)'), "STATUS")
    assert st and name.encode() in st[0], f"STATUS by modified UTF-7 name answers with the UTF-8 name: {st}"
    c.close()


# --------------------------------------------------------------------------
# 11. ACL


def test_rfc4314_acl_setacl_shares_mailbox_under_other_users(server):
    a = imap_raw_login(server, ACL_A)
    box = "Shared" + unique("")
    ok(a, "C1", f"CREATE {box}")
    append(a, box, msg(ACL_A, "shared msg"))
    ok(a, "A1", f'SETACL {box} "{ACL_B}" lr')
    out = ok(a, "G1", f"GETACL {box}")
    acl = [l for l in out if l.upper().startswith(b"* ACL")]
    assert acl and re.search(re.escape(ACL_B.encode()) + rb'"? "?lr"?', acl[0]), out
    out = ok(a, "M1", f"MYRIGHTS {box}")
    my = [l for l in out if l.upper().startswith(b"* MYRIGHTS")]
    assert my and all(r in my[0].split()[-1] for r in b"lrswipkxtea"), f"owner has all rights: {out}"

    b = imap_raw_login(server, ACL_B)
    out = ok(b, "L1", 'LIST "" "*"')
    shared = f"Other Users/{ACL_A}/{box}"
    assert any(shared.encode() in l for l in untagged(out, "LIST")), f"B does not see {shared}: {out}"
    out = ok(b, "M1", f'MYRIGHTS "{shared}"')
    my = [l for l in out if l.upper().startswith(b"* MYRIGHTS")]
    assert my and my[0].rstrip().split()[-1].strip(b'"') == b"lr", out
    tagged, sel = b.imap_cmd("S1", f'SELECT "{shared}"')
    assert tagged.startswith(b"S1 OK"), (tagged, sel)
    assert untagged(sel, "EXISTS")[0].split()[1] == b"1", sel
    got = fetches(ok(b, "F1", "FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
    assert b"shared msg" in got[1]["BODY[HEADER.FIELDS (SUBJECT)]"], got
    assert b"[READ-ONLY]" in tagged, f"SELECT without s/w/t/e is read-only: {tagged!r}"
    # without i, B cannot APPEND
    tagged, _ = b.imap_cmd("AP", f'APPEND "{shared}" {{5+}}\r\nhello')
    assert tagged.startswith(b"AP NO"), tagged
    # B cannot change the ACL (no a)
    tagged, _ = b.imap_cmd("SA", f'SETACL "{shared}" "{ACL_B}" lrswi')
    assert tagged.startswith(b"SA NO"), tagged

    out = ok(a, "LR", f'LISTRIGHTS {box} "{ACL_B}"')
    assert any(l.upper().startswith(b"* LISTRIGHTS") for l in out), out
    tagged, _ = a.imap_cmd("NG", f'SETACL {box} "-{ACL_B}" r')
    assert tagged.startswith(b"NG NO") or tagged.startswith(b"NG BAD"), f"negative rights refused: {tagged!r}"
    ok(a, "A2", f'SETACL {box} "{ACL_B}" +w')
    out = ok(a, "G2", f"GETACL {box}")
    assert re.search(re.escape(ACL_B.encode()) + rb'"? "?lrw"?', b"".join(out)), f"+w adds: {out}"
    ok(a, "DA", f'DELETEACL {box} "{ACL_B}"')
    out = ok(a, "G3", f"GETACL {box}")
    assert ACL_B.encode() not in b"".join(out), out
    out = ok(b, "L2", 'LIST "" "*"')
    assert not any(shared.encode() in l for l in untagged(out, "LIST")), f"still shared after DELETEACL: {out}"
    a.close()
    b.close()


# --------------------------------------------------------------------------
# 12. OBJECTID, SAVEDATE, WITHIN, MOVE, UIDPLUS, UNSELECT, NAMESPACE, ID,
#     CREATE-SPECIAL-USE


def test_rfc8474_objectid_rfc8514_savedate_rfc5032_within_rfc4315_uidplus_rfc6851_move_and_more(server):
    c = imap_raw_login(server, OB)
    caps = b" ".join(ok(c, "CA", "CAPABILITY")).upper()
    for cap in (b"OBJECTID", b"SAVEDATE", b"WITHIN", b"MOVE", b"UIDPLUS", b"UNSELECT", b"NAMESPACE",
                b"ID", b"CREATE-SPECIAL-USE", b"IMAP4REV2", b"CONDSTORE", b"QRESYNC", b"ESEARCH",
                b"SEARCHRES", b"LIST-EXTENDED", b"LIST-STATUS", b"STATUS=SIZE", b"QUOTA", b"BINARY",
                b"SORT", b"THREAD=REFERENCES", b"COMPRESS=DEFLATE", b"UTF8=ACCEPT", b"ACL", b"RIGHTS=KXTE",
                b"SPECIAL-USE", b"APPENDLIMIT"):
        assert re.search(rb"\b" + re.escape(cap) + rb"\b", caps), f"{cap} not advertised: {caps}"

    # UIDPLUS: APPENDUID
    tagged = append(c, "INBOX", msg(OB, "obj 1"))
    st = untagged(ok(c, "ST", "STATUS INBOX (UIDVALIDITY MAILBOXID)"), "STATUS")[0]
    uidvalidity = re.search(rb"UIDVALIDITY (\d+)", st).group(1)
    mo = re.search(rb"\[APPENDUID (\d+) (\d+)\]", tagged)
    assert mo and mo.group(1) == uidvalidity, f"APPENDUID: {tagged!r} vs {st!r}"
    uid1 = int(mo.group(2))
    # OBJECTID: MAILBOXID in STATUS
    inbox_id = re.search(rb"MAILBOXID \(([^)]+)\)", st)
    assert inbox_id, f"STATUS MAILBOXID: {st}"

    # CREATE-SPECIAL-USE
    arch = "Arch" + unique("")
    ok(c, "CR", f"CREATE {arch} (USE (\\Archive))")
    tagged, _ = c.imap_cmd("C2", f"CREATE X{arch} (USE (\\Archive \\Junk))")
    assert tagged.startswith(b"C2 NO") and b"[USEATTR]" in tagged, f"two attributes: {tagged!r}"
    lst = untagged(ok(c, "LI", f'LIST "" "{arch}"'), "LIST")
    assert lst and b"\\Archive" in lst[0], lst
    st2 = untagged(ok(c, "S2", f"STATUS {arch} (MAILBOXID)"), "STATUS")[0]
    arch_id = re.search(rb"MAILBOXID \(([^)]+)\)", st2).group(1)
    assert arch_id != inbox_id.group(1), (st, st2)

    # EMAILID stays across COPY; COPYUID
    sel = ok(c, "SE", "SELECT INBOX")
    assert any(b"[MAILBOXID (" + inbox_id.group(1) + b")]" in l for l in sel), f"SELECT MAILBOXID: {sel}"
    f = fetches(ok(c, "F1", f"UID FETCH {uid1} (EMAILID SAVEDATE)"))
    (item,) = f.values()
    email_id = item["EMAILID"][0]
    assert email_id, item
    assert item["SAVEDATE"] and re.match(rb"\d{1,2}-\w{3}-\d{4} ", item["SAVEDATE"]), f"SAVEDATE: {item}"
    tagged, _ = c.imap_cmd("CP", f"UID COPY {uid1} {arch}")
    mo = re.search(rb"\[COPYUID (\d+) (\S+) (\S+)\]", tagged)
    assert tagged.startswith(b"CP OK") and mo and int(mo.group(2)) == uid1, tagged
    copy_uid = int(mo.group(3))

    res = untagged(ok(c, "SE2", b"UID SEARCH EMAILID " + email_id), "SEARCH")
    assert res and res[0].split()[2:] == [str(uid1).encode()], res
    f = fetches(ok(c, "TI", f"UID FETCH {uid1} (THREADID)"))
    # THREADID from the thread index (test_imap_meta.py has the rules).
    thread = list(f.values())[0]["THREADID"]
    assert thread and re.fullmatch(rb"T[0-9a-f]{16}", thread[0]), f"THREADID: {f}"
    res = untagged(ok(c, "SV", "UID SEARCH SAVEDSINCE 1-Jan-2020 SAVEDATESUPPORTED"), "SEARCH")
    assert res and str(uid1).encode() in res[0].split(), res
    res = untagged(ok(c, "SV2", "UID SEARCH SAVEDBEFORE 1-Jan-2020"), "SEARCH")
    assert res and res[0].split()[2:] == [], res

    # WITHIN
    res = ok(c, "W1", "UID SEARCH YOUNGER 3600")
    assert str(uid1).encode() in b" ".join(untagged(res, "SEARCH")).split(), res
    res = ok(c, "W2", "UID SEARCH OLDER 3600")
    assert untagged(res, "SEARCH")[0].split()[2:] == [], res

    # MOVE (with COPYUID), then UID EXPUNGE
    append(c, "INBOX", msg(OB, "obj 2"))
    append(c, "INBOX", msg(OB, "obj 3"))
    ok(c, "NO", "NOOP")
    tagged, others = c.imap_cmd("MV", f"MOVE 2 {arch}")
    assert tagged.startswith(b"MV OK"), tagged
    assert b"[COPYUID " in tagged or any(b"[COPYUID " in l for l in others), (tagged, others)
    assert untagged(others, "EXPUNGE") and untagged(others, "EXPUNGE")[0].split()[1] == b"2", others
    uids = [int(x) for x in untagged(ok(c, "U1", "UID SEARCH ALL"), "SEARCH")[0].split()[2:]]
    assert len(uids) == 2, uids
    ok(c, "D1", f"UID STORE {uids[0]},{uids[1]} +FLAGS.SILENT (\\Deleted)")
    out = ok(c, "UX", f"UID EXPUNGE {uids[1]}")
    assert [l.split()[1] for l in untagged(out, "EXPUNGE")] == [b"2"], out

    # UNSELECT keeps \Deleted messages
    ok(c, "US", "UNSELECT")
    sel = ok(c, "S3", "SELECT INBOX")
    assert untagged(sel, "EXISTS")[0].split()[1] == b"1", sel
    # the copy in arch keeps the EMAILID
    ok(c, "S4", f"SELECT {arch}")
    f = fetches(ok(c, "F2", f"UID FETCH {copy_uid} (EMAILID)"))
    (item,) = f.values()
    assert item["EMAILID"][0] == email_id, f"EMAILID changed by COPY: {item} vs {email_id!r}"

    # NAMESPACE, ID
    out = ok(c, "NS", "NAMESPACE")
    ns = [l for l in out if l.upper().startswith(b"* NAMESPACE")]
    assert ns and ns[0].startswith(b'* NAMESPACE (("" "/")) (("Other Users/" "/"))'), out
    out = ok(c, "ID", 'ID ("name" "pytest")')
    idl = [l for l in out if l.upper().startswith(b"* ID")]
    assert idl and (b"NIL" in idl[0] or b'"name"' in idl[0].lower()), out
    c.close()
