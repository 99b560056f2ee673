"""State survives a restart; SIGTERM shuts down gracefully."""

import re

from conftest import (
    CLIENT_HELO,
    DOMAIN,
    REMOTE_SENDER,
    LineClient,
    build_message,
    imap_fetch_pairs,
    imap_ok,
    unique,
)

USER = f"restart@{DOMAIN}"


def snapshot(server, address) -> dict:
    """Everything a client could notice: per mailbox UIDVALIDITY, UIDNEXT and
    {uid: (flags, bytes)}, plus the POP3 UIDL listing."""
    m = server.imap(address)
    state = {}
    try:
        for box in ("INBOX", "Keep"):
            imap_ok(m.select(box, readonly=True), f"EXAMINE {box}")
            uidvalidity = int(m.untagged_responses["UIDVALIDITY"][0])
            uidnext = int(m.untagged_responses["UIDNEXT"][0])
            data = imap_ok(m.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])"), "UID FETCH")
            msgs = {}
            for meta, literal in imap_fetch_pairs(data):
                meta = meta.decode()
                uid = int(re.search(r"UID (\d+)", meta).group(1))
                flags = set(re.search(r"FLAGS \(([^)]*)\)", meta).group(1).split()) - {"\\Recent"}
                msgs[uid] = (flags, literal)
            state[box] = (uidvalidity, uidnext, msgs)
    finally:
        m.logout()
    p = server.pop3(address)
    try:
        state["UIDL"] = p.uidl()[1]
    finally:
        p.quit()
    return state


def test_restart_keeps_messages_flags_uids_and_uidvalidity(msgd_factory):
    server = msgd_factory(users=[USER])
    for i in range(3):
        server.send(USER, build_message(USER, f"persist {i} {unique()}", f"persistent body {i}\r\n"))
    server.wait_count(USER, 3)
    m = server.imap(USER)
    try:
        imap_ok(m.select("INBOX"), "SELECT")
        imap_ok(m.store("1", "+FLAGS", "(\\Flagged)"), "STORE")
        imap_ok(m.store("2", "+FLAGS", "(\\Seen \\Answered)"), "STORE")
        imap_ok(m.create("Keep"), "CREATE Keep")
        imap_ok(m.append("Keep", "(\\Draft)", None, build_message(USER, "kept draft", "draft\r\n")), "APPEND")
    finally:
        m.logout()

    before = snapshot(server, USER)
    assert len(before["INBOX"][2]) == 3 and len(before["Keep"][2]) == 1
    assert any("\\Flagged" in flags for flags, _ in before["INBOX"][2].values())

    server.stop()  # asserts exit status 0 within 15 s
    server.start()

    after = snapshot(server, USER)
    for box in ("INBOX", "Keep"):
        uv0, next0, msgs0 = before[box]
        uv1, next1, msgs1 = after[box]
        assert uv1 == uv0, f"{box}: UIDVALIDITY changed across restart ({uv0} -> {uv1})"
        assert next1 == next0, f"{box}: UIDNEXT changed across restart ({next0} -> {next1})"
        assert sorted(msgs1) == sorted(msgs0), f"{box}: UIDs {sorted(msgs0)} became {sorted(msgs1)}"
        for uid in msgs0:
            assert msgs1[uid][0] == msgs0[uid][0], f"{box} UID {uid}: flags {msgs0[uid][0]} -> {msgs1[uid][0]}"
            assert msgs1[uid][1] == msgs0[uid][1], f"{box} UID {uid}: content changed across restart"
    assert after["UIDL"] == before["UIDL"], "POP3 UIDLs changed across restart"

    server.send(USER, build_message(USER, "after restart", "new\r\n"))
    server.wait_count(USER, 4)
    m = server.imap(USER)
    try:
        imap_ok(m.select("INBOX", readonly=True), "EXAMINE")
        uids = [int(u) for u in imap_ok(m.uid("SEARCH", None, "ALL"))[0].split()]
    finally:
        m.logout()
    new_uid = max(uids)
    assert new_uid >= before["INBOX"][1], f"new message got UID {new_uid}, below the old UIDNEXT {before['INBOX'][1]}"


def test_sigterm_with_open_sessions_exits_cleanly(msgd_factory):
    """SIGTERM drains: with an IMAP session idle in SELECTED state and an
    SMTP session in the middle of a transaction, msgd still exits 0 within 15 s."""
    server = msgd_factory(users=[USER])
    m = server.imap(USER)
    imap_ok(m.select("INBOX"), "SELECT")
    smtp = LineClient(server.ports["smtp"])
    try:
        assert smtp.smtp_reply()[0] == 220
        assert smtp.smtp_cmd(f"EHLO {CLIENT_HELO}")[0] == 250
        assert smtp.smtp_cmd(f"MAIL FROM:<{REMOTE_SENDER}>")[0] == 250
        server.stop()  # asserts exit status 0 within 15 s
    finally:
        smtp.close()
        try:
            m.shutdown()
        except OSError:
            pass
