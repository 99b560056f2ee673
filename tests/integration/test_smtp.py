"""SMTP (RFC 5321) on the smtp listener: extensions, recipient checks,
size limit, STARTTLS, BDAT, pipelining, smuggling and abuse limits."""

import pytest

from conftest import (
    CLIENT_HELO,
    DOMAIN,
    REMOTE_SENDER,
    LineClient,
    assert_delivered_copy,
    build_message,
    unique,
)

SMUGGLE_VARIANTS = {
    "lf-dot-lf": b"\n.\n",
    "crlf-dot-lf": b"\r\n.\n",
    "lf-dot-crlf": b"\n.\r\n",
    "cr-dot-crlf": b"\r.\r\n",
}

USER = f"smtp-user@{DOMAIN}"
TLS_USER = f"smtp-tls@{DOMAIN}"
BDAT_USER = f"smtp-bdat@{DOMAIN}"
PIPE_USER = f"smtp-pipe@{DOMAIN}"
SIZE_USER = f"smtp-size@{DOMAIN}"
INACTIVE = f"smtp-frozen@{DOMAIN}"
SMUGGLE_USERS = {name: (f"smuggle-rcpt-{name}@{DOMAIN}", f"smuggle-victim-{name}@{DOMAIN}")
                 for name in SMUGGLE_VARIANTS}

USERS = [USER, TLS_USER, BDAT_USER, PIPE_USER, SIZE_USER] + [a for pair in SMUGGLE_USERS.values() for a in pair]
INACTIVE_USERS = [INACTIVE]

REQUIRED_EXTENSIONS = ["PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING", "STARTTLS"]


def rcpt_reply(server, rcpt: str, sender: str = REMOTE_SENDER) -> tuple[int, str]:
    with server.smtp() as s:
        s.ehlo()
        code, msg = s.mail(sender)
        assert code == 250, f"MAIL FROM:<{sender}> got {code} {msg!r}"
        code, msg = s.rcpt(rcpt)
        s.rset()
    return code, msg.decode("utf-8", "replace")


def ehlo_size_limit(server) -> int:
    with server.smtp() as s:
        s.ehlo()
        assert s.has_extn("size"), "EHLO does not advertise SIZE"
        value = s.esmtp_features["size"].strip()
    assert value.isdigit() and int(value) > 0, f"EHLO SIZE advertises no limit: {value!r}"
    return int(value)


def inbox_messages(server, address) -> list[bytes]:
    """Every message in the maildrop of `address`, read over POP3 (so these
    SMTP tests do not depend on IMAP)."""
    p = server.pop3(address)
    try:
        count, _ = p.stat()
        out = []
        for i in range(1, count + 1):
            _, lines, _ = p.retr(i)
            out.append(b"\r\n".join(lines) + b"\r\n")
        return out
    finally:
        p.quit()


def test_ehlo_advertises_required_extensions(server):
    with server.smtp() as s:
        code, banner = s.ehlo()
        assert code == 250, banner
        missing = [ext for ext in REQUIRED_EXTENSIONS if not s.has_extn(ext)]
        assert not missing, f"EHLO lacks {missing}; advertised: {sorted(s.esmtp_features)}"


def test_smtp_greeting_and_helo_work(server):
    with LineClient(server.ports["smtp"]) as c:
        code, text = c.smtp_reply()
        assert code == 220, text
        code, text = c.smtp_cmd(f"HELO {CLIENT_HELO}")
        assert code == 250, text
        code, text = c.smtp_cmd("NOOP")
        assert code == 250, text
        code, text = c.smtp_cmd("QUIT")
        assert code == 221, text


@pytest.mark.parametrize("sender", [REMOTE_SENDER, f"spoofed@{DOMAIN}"])
def test_smtp_refuses_relay_to_foreign_domain(server, sender):
    code, msg = rcpt_reply(server, "someone@foreign.example", sender=sender)
    assert code in (550, 554), f"relay RCPT got {code} {msg!r}, want 550/554"
    assert "5.7.1" in msg, f"relay refusal lacks enhanced code 5.7.1: {code} {msg!r}"


def test_smtp_rejects_unknown_local_user_with_5_1_1(server):
    code, msg = rcpt_reply(server, f"no-such-user-{unique()}@{DOMAIN}")
    assert code == 550 and "5.1.1" in msg, f"unknown user RCPT got {code} {msg!r}, want 550 5.1.1"


def test_smtp_rejects_inactive_user_with_5_2_1(server):
    code, msg = rcpt_reply(server, INACTIVE)
    assert code == 550 and "5.2.1" in msg, f"inactive user RCPT got {code} {msg!r}, want 550 5.2.1"


def test_smtp_accepts_known_local_user(server):
    code, msg = rcpt_reply(server, USER)
    assert code == 250, f"RCPT to an existing user got {code} {msg!r}"


def test_smtp_rejects_declared_size_over_limit_with_552(server):
    limit = ehlo_size_limit(server)
    with server.smtp() as s:
        s.ehlo()
        code, msg = s.mail(REMOTE_SENDER, [f"SIZE={limit + 1}"])
        assert code == 552, f"MAIL FROM with SIZE={limit + 1} (limit {limit}) got {code} {msg!r}, want 552"
        code, msg = s.mail(REMOTE_SENDER, [f"SIZE={min(limit, 1000)}"])
        assert code == 250, f"MAIL FROM with a SIZE under the limit got {code} {msg!r}"


def test_smtp_rejects_message_bigger_than_size_limit_with_552(server):
    limit = ehlo_size_limit(server)
    assert limit <= 256 * 1024 * 1024, f"SIZE limit {limit} is too big to test by sending"
    line = b"x" * 998 + b"\r\n"
    block = line * 1024  # ~1 MB
    total = limit + 64 * 1024
    with LineClient(server.ports["smtp"], timeout=60) as c:
        assert c.smtp_reply()[0] == 220
        assert c.smtp_cmd(f"EHLO {CLIENT_HELO}")[0] == 250
        assert c.smtp_cmd(f"MAIL FROM:<{REMOTE_SENDER}>")[0] == 250
        assert c.smtp_cmd(f"RCPT TO:<{SIZE_USER}>")[0] == 250
        code, text = c.smtp_cmd("DATA")
        assert code == 354, text
        sent = 0
        try:
            c.send(b"Subject: too big\r\n\r\n")
            while sent < total:
                chunk = block if total - sent >= len(block) else line * ((total - sent) // len(line) + 1)
                c.send(chunk)
                sent += len(chunk)
            c.send(b".\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may stop reading once the limit is passed
        try:
            code, text = c.smtp_reply()
        except ConnectionResetError:
            code, text = 0, "connection reset without a reply"
    assert code == 552, f"oversized DATA ({sent} bytes sent, limit {limit}) got {code} {text!r}, want 552"
    assert inbox_messages(server, SIZE_USER) == [], "the oversized message was delivered"


def test_smtp_starttls_upgrades_and_delivers(server):
    sent = build_message(TLS_USER, f"over TLS {unique()}", "sent after STARTTLS\r\n")
    with server.smtp() as s:
        s.ehlo()
        assert s.has_extn("starttls"), "STARTTLS not advertised"
        code, msg = s.starttls(context=server.ssl_context())
        assert code == 220, f"STARTTLS got {code} {msg!r}"
        assert s.sock.version() in ("TLSv1.2", "TLSv1.3"), s.sock.version()
        code, _ = s.ehlo()
        assert code == 250
        assert not s.has_extn("starttls"), "STARTTLS still advertised inside TLS"
        refused = s.sendmail(REMOTE_SENDER, [TLS_USER], sent)
        assert refused == {}
    server.wait_count_pop3(TLS_USER, 1)
    (copy,) = inbox_messages(server, TLS_USER)
    assert_delivered_copy(copy, sent, REMOTE_SENDER, "message sent over STARTTLS")


def test_smtp_bdat_chunks_are_delivered_verbatim(server):
    # BDAT carries bytes as they are: no dot-stuffing, a lone "." line is data.
    sent = build_message(BDAT_USER, f"bdat {unique()}",
                         "first line\r\n.\r\n..two dots stay two dots\r\nGrüße über BDAT\r\n" + "filler line\r\n" * 200)
    cut1 = sent.index(b".\r\n..two") + 1  # between "." and CRLF
    cut2 = len(sent) // 2
    chunks = [sent[:cut1], sent[cut1:cut2], sent[cut2:]]
    with LineClient(server.ports["smtp"]) as c:
        assert c.smtp_reply()[0] == 220
        code, text = c.smtp_cmd(f"EHLO {CLIENT_HELO}")
        assert code == 250 and "CHUNKING" in text.upper(), text
        assert c.smtp_cmd(f"MAIL FROM:<{REMOTE_SENDER}> BODY=8BITMIME")[0] == 250
        assert c.smtp_cmd(f"RCPT TO:<{BDAT_USER}>")[0] == 250
        for i, chunk in enumerate(chunks):
            last = " LAST" if i == len(chunks) - 1 else ""
            c.send(f"BDAT {len(chunk)}{last}\r\n".encode() + chunk)
            code, text = c.smtp_reply()
            assert code == 250, f"BDAT chunk {i} got {code} {text!r}"
        assert c.smtp_cmd("QUIT")[0] == 221
    server.wait_count_pop3(BDAT_USER, 1)
    (copy,) = inbox_messages(server, BDAT_USER)
    assert_delivered_copy(copy, sent, REMOTE_SENDER, "message sent with BDAT")


def test_smtp_pipelined_commands_get_replies_in_order(server):
    sent = build_message(PIPE_USER, f"pipelined {unique()}", "pipelined body\r\n")
    with LineClient(server.ports["smtp"]) as c:
        assert c.smtp_reply()[0] == 220
        assert c.smtp_cmd(f"EHLO {CLIENT_HELO}")[0] == 250
        c.send(f"MAIL FROM:<{REMOTE_SENDER}>\r\nRCPT TO:<{PIPE_USER}>\r\n"
               f"RCPT TO:<nobody-{unique()}@{DOMAIN}>\r\nDATA\r\n")
        codes = [c.smtp_reply()[0] for _ in range(4)]
        assert codes == [250, 250, 550, 354], f"pipelined replies {codes}"
        c.send(sent + b".\r\n")
        code, text = c.smtp_reply()
        assert code == 250, text
        assert c.smtp_cmd("QUIT")[0] == 221
    server.wait_count_pop3(PIPE_USER, 1)
    (copy,) = inbox_messages(server, PIPE_USER)
    assert_delivered_copy(copy, sent, REMOTE_SENDER, "pipelined message")


@pytest.mark.parametrize("variant", list(SMUGGLE_VARIANTS))
def test_smtp_bare_line_end_dot_does_not_end_data(server, variant):
    """SMTP smuggling: a non-CRLF "dot line" must not end DATA, so the
    commands after it are message text, never a second transaction."""
    rcpt, victim = SMUGGLE_USERS[variant]
    seq = SMUGGLE_VARIANTS[variant]
    marker = unique("smuggled")
    payload = (
        f"From: <{REMOTE_SENDER}>\r\nTo: <{rcpt}>\r\nSubject: smuggling {variant}\r\n\r\nfirst part".encode()
        + seq
        + f"MAIL FROM:<evil@remote.example>\r\nRCPT TO:<{victim}>\r\nDATA\r\n"
          f"From: <evil@remote.example>\r\nSubject: {marker}\r\n\r\n{marker} body\r\n.\r\n".encode()
    )
    replies = []
    with LineClient(server.ports["smtp"]) as c:
        assert c.smtp_reply()[0] == 220
        assert c.smtp_cmd(f"EHLO {CLIENT_HELO}")[0] == 250
        assert c.smtp_cmd(f"MAIL FROM:<{REMOTE_SENDER}>")[0] == 250
        assert c.smtp_cmd(f"RCPT TO:<{rcpt}>")[0] == 250
        assert c.smtp_cmd("DATA")[0] == 354
        try:
            c.send(payload)
            c.send(b"QUIT\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while True:
                code, text = c.smtp_reply()
                if code == 0:
                    break
                replies.append((code, text))
                if code == 221:
                    break
        except (TimeoutError, ConnectionResetError):
            pass
    assert replies, "no reply at all to the end of DATA"
    first_code = replies[0][0]
    assert not any(code == 354 for code, _ in replies), f"a second DATA was started: {replies}"

    # a sentinel sent afterwards to both shows when delivery has caught up
    sentinel = build_message(rcpt, f"sentinel {variant}", "sentinel\r\n")
    server.send([rcpt, victim], sentinel)
    server.wait_count_pop3(victim, 1)
    server.wait_count_pop3(rcpt, 2 if first_code == 250 else 1)

    victim_msgs = inbox_messages(server, victim)
    assert len(victim_msgs) == 1 and b"sentinel" in victim_msgs[0], (
        f"the smuggled transaction delivered to {victim}: {[m[:200] for m in victim_msgs]}"
    )
    rcpt_msgs = [m for m in inbox_messages(server, rcpt) if b"Subject: sentinel" not in m]
    assert len(rcpt_msgs) <= 1, f"{len(rcpt_msgs)} messages delivered from one DATA"
    if first_code == 250:
        assert len(rcpt_msgs) == 1, "DATA was acknowledged with 250 but nothing was delivered"
        assert marker.encode() in rcpt_msgs[0] and b"RCPT TO:<" in rcpt_msgs[0], (
            "the accepted message does not contain the text after the bare dot line"
        )
    else:
        assert 500 <= first_code < 600, f"end of DATA got {replies}"
        assert rcpt_msgs == [], "message rejected but delivered anyway"


def test_smtp_overlong_command_line_gets_5xx(server):
    with LineClient(server.ports["smtp"]) as c:
        assert c.smtp_reply()[0] == 220
        assert c.smtp_cmd(f"EHLO {CLIENT_HELO}")[0] == 250
        try:
            c.send(f"MAIL FROM:<{'a' * 65536}@remote.example>\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        code, text = c.smtp_reply()
    assert 500 <= code < 600, f"over-long command line got {code} {text!r}, want 5xx (500 5.5.2)"


def test_smtp_too_many_bad_commands_disconnects(server):
    codes = []
    with LineClient(server.ports["smtp"]) as c:
        assert c.smtp_reply()[0] == 220
        for i in range(100):
            try:
                code, _text = c.smtp_cmd(f"XYZZY{i} plugh")
            except (BrokenPipeError, ConnectionResetError):
                code = 0
            codes.append(code)
            if code in (0, 421):
                break
    assert codes[-1] in (0, 421), f"still connected after {len(codes)} bad commands"
    assert len(codes) > 1 and all(500 <= code < 600 for code in codes[:-1]), f"replies to bad commands: {codes}"
