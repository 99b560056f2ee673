"""IMAP behaviours clients saw wrong (issue 10), against the real msgd
binary: one test per behaviour, named after the RFC section it checks.
Raw sockets (LineClient) where the exact order or form of responses
matters, imaplib where a stock client is the point."""

import re

from conftest import DOMAIN, LineClient, imap_raw_login

KW_A = f"x-kw@{DOMAIN}"
ATOM = f"x-atom@{DOMAIN}"
CS = f"x-condstore@{DOMAIN}"
LX = f"x-listext@{DOMAIN}"
MV = f"x-move@{DOMAIN}"
SF = f"x-searchfrom@{DOMAIN}"
SO = f"x-sortsubj@{DOMAIN}"
BN = f"x-binparts@{DOMAIN}"
USERS = [KW_A, ATOM, CS, LX, MV, SF, SO, BN]


def ok(c: LineClient, tag: str, command, what: str = "") -> tuple[bytes, list[bytes]]:
    tagged, others = c.imap_cmd(tag, command)
    assert tagged.startswith(tag.encode() + b" OK"), f"{what or command!r}: {tagged!r} {others!r}"
    return tagged, others


def append(c: LineClient, mailbox: str, data: bytes, flags: str = "", tag: str = "AP",
           binary: bool = False) -> bytes:
    """APPEND with a synchronizing literal (a literal8 `~{n}` if `binary`)."""
    fl = f" ({flags})".encode() if flags else b""
    lit = (b"~{" if binary else b"{") + str(len(data)).encode() + b"}\r\n"
    c.send(tag.encode() + b" APPEND " + mailbox.encode() + fl + b" " + lit)
    cont = c.imap_response()
    assert cont.startswith(b"+"), f"APPEND continuation {cont!r}"
    c.send(data + b"\r\n")
    tagged, others = c.imap_until_tagged(tag)
    assert tagged.startswith(tag.encode() + b" OK"), f"APPEND: {tagged!r} {others!r}"
    return tagged


def msg(subject: str, frm: str = "Bob <bob@example.net>", to: str = "alice@example.test",
        body: str = "hello\r\n") -> bytes:
    return (f"From: {frm}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: Tue, 14 Nov 2023 10:00:00 +0000\r\n\r\n{body}").encode()


def index_of(lines: list[bytes], pred) -> int:
    for i, l in enumerate(lines):
        if pred(l):
            return i
    raise AssertionError(f"no such response in {lines!r}")


# --------------------------------------------------------------------------


def test_rfc3501_7_2_6_rfc9051_7_3_5_keyword_from_other_session_announced_before_fetch(server):
    a = imap_raw_login(server, KW_A)
    b = imap_raw_login(server, KW_A)
    for i in range(3):
        append(a, "INBOX", msg(f"kw {i}"))
    ok(a, "S", "SELECT INBOX")
    ok(b, "S", "SELECT INBOX")
    # B adds a keyword A has never seen; A's own STORE on that message gets
    # the whole flag set back: FLAGS and PERMANENTFLAGS first.
    ok(b, "K1", "STORE 1 +FLAGS ($Label1)")
    _, lines = ok(a, "T1", "STORE 1 +FLAGS (\\Flagged)")
    f = index_of(lines, lambda l: l.startswith(b"* FLAGS (") and b"$Label1" in l)
    p = index_of(lines, lambda l: b"[PERMANENTFLAGS (" in l and b"$Label1" in l)
    x = index_of(lines, lambda l: b"FETCH (FLAGS (" in l and b"$Label1" in l)
    assert f < x and p < x, lines
    # Announced by NOOP the same way.
    ok(b, "K2", "STORE 2 +FLAGS ($Label2)")
    _, lines = ok(a, "N", "NOOP")
    f = index_of(lines, lambda l: l.startswith(b"* FLAGS (") and b"$Label2" in l)
    x = index_of(lines, lambda l: b"FETCH (FLAGS (" in l and b"$Label2" in l)
    assert f < x, lines
    # And before an implicit \Seen's FETCH.
    ok(b, "K3", "STORE 3 +FLAGS ($Label3)")
    _, lines = ok(a, "F", "FETCH 3 (BODY[TEXT])")
    f = index_of(lines, lambda l: l.startswith(b"* FLAGS (") and b"$Label3" in l)
    x = index_of(lines, lambda l: l.startswith(b"* 3 FETCH"))
    assert f < x, lines
    a.close()
    b.close()


def test_rfc9051_9_mailbox_names_as_atoms_with_any_atom_char(server):
    c = imap_raw_login(server, ATOM)
    ok(c, "C", "CREATE ~foo")
    _, lines = ok(c, "L", 'LIST "" ~foo')
    assert any(l.rstrip().endswith(b'"~foo"') for l in lines), lines
    tagged, _ = ok(c, "S", "SELECT ~foo")
    assert b"[READ-WRITE]" in tagged
    _, lines = ok(c, "T", "STATUS ~foo (MESSAGES)")
    assert lines and lines[0].startswith(b'* STATUS "~foo" (MESSAGES 0)'), lines
    ok(c, "E", "EXAMINE ~foo")
    ok(c, "N", "NOOP")  # still connected
    c.close()


def test_rfc7162_3_1_highestmodseq_on_enable_and_3_1_5_search_min_modseq(server):
    c = imap_raw_login(server, CS)
    for i in range(3):
        append(c, "INBOX", msg(f"cs {i}"))
    ok(c, "S", "SELECT INBOX")
    tagged, _ = ok(c, "F1", "FETCH 1 (MODSEQ)")
    assert re.match(rb"F1 OK \[HIGHESTMODSEQ \d+\]", tagged), tagged
    ok(c, "ST", "STORE 3 +FLAGS (\\Flagged)")
    _, lines = ok(c, "F2", "FETCH 1:3 (MODSEQ)")
    mods = {int(re.match(rb"\* (\d+) ", l).group(1)): int(re.search(rb"MODSEQ \((\d+)\)", l).group(1))
            for l in lines if b"MODSEQ" in l}
    assert mods[3] > mods[1], mods
    _, lines = ok(c, "M", "SEARCH RETURN (MIN) MODSEQ 1")
    assert lines[0].rstrip().endswith(f"MIN 1 MODSEQ {mods[1]}".encode()), lines
    _, lines = ok(c, "X", "SEARCH RETURN (MIN MAX) MODSEQ 1")
    assert lines[0].rstrip().endswith(f"MODSEQ {mods[3]}".encode()), lines
    c.close()


def test_rfc5258_5_subscribed_recursivematch_children_and_childinfo(server):
    c = imap_raw_login(server, LX)
    for n in ["Fruit", "Fruit/Apple", "Fruit/Banana", "Tofu", "Tofu/Soy", "Veg", "Veg/Corn"]:
        ok(c, "C", f"CREATE {n}")
    for n in ["Fruit/Banana", "Tofu", "Tofu/Soy", "Veg", "Gone", "Ghost/Child"]:
        ok(c, "U", f"SUBSCRIBE {n}")
    _, lines = ok(c, "L", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" % RETURN (CHILDREN)')
    by = {}
    for l in lines:
        mo = re.match(rb'\* LIST \(([^)]*)\) "/" "([^"]+)"(.*)\r\n', l)
        assert mo, l
        by[mo.group(2).decode()] = (set(mo.group(1).decode().split()), mo.group(3))
    for name, (attrs, _) in by.items():
        assert attrs & {"\\HasChildren", "\\HasNoChildren"}, (name, attrs)
    childinfo = b' ("CHILDINFO" ("SUBSCRIBED"))'
    assert by["Fruit"] == ({"\\HasChildren"}, childinfo), by["Fruit"]
    assert by["Tofu"] == ({"\\HasChildren", "\\Subscribed"}, childinfo), by["Tofu"]
    assert by["Veg"] == ({"\\HasChildren", "\\Subscribed"}, b""), by["Veg"]
    assert by["Gone"] == ({"\\NonExistent", "\\Subscribed", "\\HasNoChildren"}, b""), by["Gone"]
    assert by["Ghost"] == ({"\\NonExistent", "\\HasChildren"}, childinfo), by["Ghost"]
    _, lines = ok(c, "L2", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" * RETURN (CHILDREN)')
    assert not any(b"CHILDINFO" in l for l in lines), lines
    c.close()


def test_rfc6851_3_1_move_to_the_selected_mailbox_is_copy_then_expunge(server):
    c = imap_raw_login(server, MV)
    append(c, "INBOX", msg("one"), flags="$Work")
    append(c, "INBOX", msg("two"))
    tagged, lines = ok(c, "S", "SELECT INBOX")
    _, lines = ok(c, "M", "MOVE 1 INBOX")
    mo = re.match(rb"\* OK \[COPYUID \d+ 1 3\]", lines[0])
    assert mo, lines
    assert b"* 1 EXPUNGE\r\n" in lines and b"* 2 EXISTS\r\n" in lines, lines
    _, lines = ok(c, "U", "UID MOVE 2 INBOX")
    assert re.match(rb"\* OK \[COPYUID \d+ 2 4\]", lines[0]), lines
    _, lines = ok(c, "F", "UID FETCH 1:* (FLAGS)")
    assert len(lines) == 2, lines
    assert b"UID 3" in lines[0] and b"$Work" in lines[0] and b"\\Deleted" not in lines[0], lines
    c.close()


def test_rfc9051_6_4_4_search_from_to_cc_bcc_whole_decoded_field(server):
    m = server.imap(SF)
    try:
        m.append("INBOX", None, None, msg(
            "quoted", frm='"Smith, John \\"JJ\\" (Sales)" <john@example.com>',
            to='Team: a@x.test, "=?utf-8?q?J=C3=B6rg?=" <j@x.test>;'))
        m.append("INBOX", None, None, msg(
            "comment", frm="zed@example.com (Zed  Example)", to="undisclosed-recipients:;")
            .replace(b"Subject:", b"Cc: carol@example.org (Carol C)\r\nBcc: =?iso-8859-1?q?J=F8rn?= <jorn@example.net>\r\nSubject:"))
        m.select("INBOX")
        for crit, want in [
            ('FROM "Smith, John"', b"1"),
            ('FROM "John \\"JJ\\" (Sales)"', b"1"),
            ('FROM "(sales) <john@example.com>"', b"1"),
            ("FROM john@example.com", b"1"),
            ('TO "team:"', b"1"),
            ('TO "Jörg <j@x.test>"', b"1"),
            ('FROM "zed example"', b"2"),
            ("TO undisclosed-recipients", b"2"),
            ('CC "carol c"', b"2"),
            ('BCC "jørn <jorn@"', b"2"),
            ("FROM nobody", b""),
        ]:
            typ, data = m.search("UTF-8", crit.encode() if isinstance(crit, str) else crit)
            assert typ == "OK", (crit, typ, data)
            assert data[0].strip() == want, (crit, data)
    finally:
        m.logout()


def test_rfc5256_2_1_sort_subject_base_subject_and_arrival_tiebreak(server):
    c = imap_raw_login(server, SO)
    subjects = [
        "Re: [list] Fwd: Zebra (fwd)",
        "[fwd: Re: apple]",
        "Fw: Re:  mango",
        "RE [2]:\tapple",
        "Apple",
        "[blob] Re: [x] Mango (FWD) (fwd)",
        "=?utf-8?q?Re=3A_banana?=",
        "zebra",
    ]
    for s in subjects:
        append(c, "INBOX", msg(s))
    ok(c, "S", "SELECT INBOX")
    _, lines = ok(c, "O", "SORT (SUBJECT) UTF-8 ALL")
    assert lines == [b"* SORT 2 4 5 7 3 6 1 8\r\n"], lines
    _, lines = ok(c, "R", "SORT (REVERSE SUBJECT) UTF-8 ALL")
    assert lines == [b"* SORT 1 8 3 6 7 2 4 5\r\n"], lines
    c.close()


def test_rfc3516_4_3_rfc9051_6_4_5_empty_and_literal8_parts_fetch_as_literals(server):
    c = imap_raw_login(server, BN)
    data = (b"From: a@example.net\r\nSubject: parts\r\n"
            b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n'
            b"--XX\r\nContent-Type: text/plain\r\n\r\n\r\n"
            b"--XX\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: binary\r\n\r\nab\x00cd\r\n--XX--\r\n")
    append(c, "INBOX", data, binary=True)
    ok(c, "S", "SELECT INBOX")
    for item, want in [
        ("BODY.PEEK[1]", b"* 1 FETCH (BODY[1] {0}\r\n)\r\n"),
        ("BINARY.PEEK[1]", b"* 1 FETCH (BINARY[1] {0}\r\n)\r\n"),
        ("BINARY.SIZE[1]", b"* 1 FETCH (BINARY.SIZE[1] 0)\r\n"),
        ("BODY.PEEK[2]", b"* 1 FETCH (BODY[2] ~{5}\r\nab\x00cd)\r\n"),
        ("BINARY.PEEK[2]", b"* 1 FETCH (BINARY[2] ~{5}\r\nab\x00cd)\r\n"),
    ]:
        _, lines = ok(c, "F", f"FETCH 1 ({item})")
        assert lines == [want], (item, lines)
    _, lines = ok(c, "G", "FETCH 1 (BODY.PEEK[])")
    assert lines == [b"* 1 FETCH (BODY[] ~{%d}\r\n" % len(data) + data + b")\r\n"], lines
    c.close()
