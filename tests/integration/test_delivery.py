"""A message delivered over SMTP comes back byte for byte over IMAP and POP3."""

from conftest import (
    CLIENT_HELO,
    DOMAIN,
    REMOTE_SENDER,
    assert_delivered_copy,
    build_message,
    first_difference,
    imap_literals,
    imap_ok,
    rich_body,
    run_swaks,
    unique,
)

USERS = [f"rt-smtplib@{DOMAIN}", f"rt-swaks@{DOMAIN}", f"rt-multi1@{DOMAIN}", f"rt-multi2@{DOMAIN}"]


def fetch_only_message_imap(server, address, item: str) -> bytes:
    """FETCH `item` of the only message in INBOX (by UID)."""
    m = server.imap(address)
    try:
        data = imap_ok(m.select("INBOX"), "SELECT")
        assert int(data[0]) == 1, f"expected exactly one message in INBOX, found {data[0]!r}"
        uids = imap_ok(m.uid("SEARCH", None, "ALL"), "UID SEARCH")[0].split()
        assert len(uids) == 1, f"UID SEARCH ALL returned {uids!r}"
        literals = imap_literals(imap_ok(m.uid("FETCH", uids[0], f"({item})"), f"UID FETCH {item}"))
        assert len(literals) == 1, f"expected one literal from FETCH {item}"
        return literals[0]
    finally:
        m.logout()


def retr_only_message_pop3(server, address) -> bytes:
    p = server.pop3(address)
    try:
        count, _size = p.stat()
        assert count == 1, f"POP3 STAT says {count} messages, expected 1"
        resp, lines, _octets = p.retr(1)
        assert resp.startswith(b"+OK"), resp
        _, listing, _ = p.list()
        size = int(listing[0].split()[1])
        data = b"\r\n".join(lines) + b"\r\n"
        assert size == len(data), f"POP3 LIST size {size} != RETR length {len(data)}"
        return data
    finally:
        p.quit()


def test_smtplib_message_is_byte_identical_over_imap_and_pop3(server):
    rcpt = USERS[0]
    sent = build_message(rcpt, f"round trip {unique()} — ünïcödé", rich_body())
    assert len(sent) > 100_000 and b"\r\n.\r\n" in sent and b"\r\n.a line" in sent
    server.send(rcpt, sent)
    server.wait_count(rcpt, 1)

    imap_copy = fetch_only_message_imap(server, rcpt, "BODY.PEEK[]")
    assert_delivered_copy(imap_copy, sent, REMOTE_SENDER, "IMAP BODY[]")

    pop_copy = retr_only_message_pop3(server, rcpt)
    assert_delivered_copy(pop_copy, sent, REMOTE_SENDER, "POP3 RETR")
    assert pop_copy == imap_copy, "POP3 and IMAP disagree: " + first_difference(pop_copy, imap_copy)


def test_swaks_message_is_byte_identical_over_imap_and_pop3(server, tmp_path):
    rcpt = USERS[1]
    sender = "swaks-sender@remote.example"
    # swaks ends DATA with CRLF.CRLF after the file's last line, so a file
    # without a trailing newline is delivered as file + CRLF.
    sent = build_message(rcpt, f"swaks round trip {unique()}", rich_body(800), sender=sender)
    assert sent.endswith(b"\r\n")
    path = tmp_path / "message.eml"
    path.write_bytes(sent[:-2])
    res = run_swaks(
        "--server", f"127.0.0.1:{server.ports['smtp']}",
        "--helo", CLIENT_HELO,
        "--from", sender,
        "--to", rcpt,
        "--data", f"@{path}",
        "--pipeline",
    )
    assert res.returncode == 0, f"swaks failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    assert "250" in res.stdout
    server.wait_count(rcpt, 1)

    imap_copy = fetch_only_message_imap(server, rcpt, "RFC822")
    assert_delivered_copy(imap_copy, sent, sender, "IMAP RFC822")

    pop_copy = retr_only_message_pop3(server, rcpt)
    assert_delivered_copy(pop_copy, sent, sender, "POP3 RETR")


def test_one_smtp_transaction_delivers_to_several_local_recipients(server):
    rcpts = USERS[2:4]
    sent = build_message(rcpts[0], f"two recipients {unique()}", "one body, two mailboxes\r\n")
    server.send(rcpts, sent)
    for rcpt in rcpts:
        server.wait_count(rcpt, 1)
        copy = fetch_only_message_imap(server, rcpt, "BODY.PEEK[]")
        assert_delivered_copy(copy, sent, REMOTE_SENDER, f"IMAP BODY[] of {rcpt}")
