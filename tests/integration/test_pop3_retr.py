"""POP3 RETR / TOP of big messages (RFC 1939 section 3), against the real
binary with poplib: the bytes arrive exactly (dot-stuffing undone by the
client gives back the stored message), and the server streams the message
file instead of holding it: its resident memory (VmHWM, the peak, reset
just before the RETR) grows by far less than the message size."""

import poplib
import random
import time

from conftest import (
    DOMAIN,
    REMOTE_SENDER,
    assert_delivered_copy,
    build_message,
    unique,
)

USER = f"pop-retr@{DOMAIN}"
BIG = 20 * 1024 * 1024
# Streaming holds one 128 KiB piece and about twice that of output per
# session; a server holding the message whole would grow by 20 MiB or more.
GROWTH_BOUND = 6 * 1024 * 1024


def big_body(size: int, seed: int) -> str:
    """Lines of 0..400 bytes, many beginning with '.', some a lone '.',
    until `size` bytes (poplib reads lines of at most 2048 bytes)."""
    rnd = random.Random(seed)
    out = []
    n = 0
    i = 0
    while n < size:
        kind = rnd.randrange(10)
        if kind == 0:
            line = "."
        elif kind < 4:
            line = "." + "d" * rnd.randrange(0, 400)
        elif kind == 4:
            line = ""
        else:
            line = f"{i:08d} " + "x" * rnd.randrange(0, 390)
        out.append(line)
        n += len(line) + 2
        i += 1
    return "\r\n".join(out) + "\r\n"


def status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def reset_peak(pid: int) -> None:
    """Sets VmHWM back to the current VmRSS (Linux clear_refs "5")."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def retr_raw(p: poplib.POP3, which: int) -> tuple[bytes, bytes]:
    resp, lines, _ = p.retr(which)
    return resp, b"\r\n".join(lines) + b"\r\n"


def deliver_and_restart(inst, sent: bytes) -> None:
    """Delivers `sent`, then restarts msgd so the RETR runs in a fresh
    process whose memory holds nothing of the delivery."""
    inst.send(USER, sent)
    inst.wait_count_pop3(USER, 1, timeout=60)
    inst.stop()
    inst.start()


def test_rfc1939_retr_of_20_mib_is_byte_exact_and_streamed_in_bounded_memory(msgd_factory):
    inst = msgd_factory(users=[USER])
    sent = build_message(USER, f"big {unique()}", big_body(BIG, 1))
    assert len(sent) >= BIG
    deliver_and_restart(inst, sent)
    pid = inst.proc.pid

    p = inst.pop3(USER, timeout=120)
    try:
        count, octets = p.stat()
        assert count == 1
        # The login's password check and maildrop are done: measure from here.
        base = status_kib(pid, "VmRSS")
        reset_peak(pid)
        assert status_kib(pid, "VmHWM") <= base + 512 * 1024
        resp, raw = retr_raw(p, 1)
        peak = status_kib(pid, "VmHWM")
        assert resp == f"+OK {octets} octets".encode(), resp
        assert len(raw) == octets
        assert_delivered_copy(raw, sent, REMOTE_SENDER, "POP3 RETR of 20 MiB")
        assert peak - base < GROWTH_BOUND, (
            f"server RSS grew by {(peak - base) >> 10} KiB during a RETR of {octets >> 20} MiB "
            f"(bound {GROWTH_BOUND >> 10} KiB): the message is not streamed"
        )

        # TOP reads only what it sends: header, blank line, 3 body lines.
        reset_peak(pid)
        base = status_kib(pid, "VmRSS")
        resp, lines, _ = p.top(1, 3)
        peak = status_kib(pid, "VmHWM")
        assert resp.startswith(b"+OK"), resp
        header, body = raw.split(b"\r\n\r\n", 1)
        want = header.split(b"\r\n") + [b""] + body.split(b"\r\n")[:3]
        assert lines == want
        assert peak - base < GROWTH_BOUND
    finally:
        p.quit()

    # The same message again, in a second session: the process gave the
    # memory of the first back (no growth per RETR).
    p = inst.pop3(USER, timeout=120)
    try:
        base = status_kib(pid, "VmRSS")
        reset_peak(pid)
        resp, again = retr_raw(p, 1)
        assert again == raw
        assert status_kib(pid, "VmHWM") - base < GROWTH_BOUND
    finally:
        p.quit()


def test_rfc2595_pop3s_retr_of_a_big_message_is_byte_exact(msgd_factory):
    inst = msgd_factory(users=[USER])
    sent = build_message(USER, f"tls {unique()}", big_body(3 * 1024 * 1024 + 17, 2))
    inst.send(USER, sent)
    inst.wait_count_pop3(USER, 1, timeout=60)
    p = poplib.POP3_SSL("127.0.0.1", inst.ports["pop3s"], context=inst.ssl_context(), timeout=60)
    try:
        p.user(USER)
        p.pass_(inst.passwords[USER])
        count, octets = p.stat()
        assert count == 1
        resp, raw = retr_raw(p, 1)
        assert resp == f"+OK {octets} octets".encode(), resp
        assert_delivered_copy(raw, sent, REMOTE_SENDER, "POP3S RETR")
        # Pipelined behind nothing else, TOP 0 still ends after the header.
        resp, lines, _ = p.top(1, 0)
        assert lines == raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n") + [b""]
    finally:
        p.quit()


def test_rfc1939_retr_of_a_message_expunged_after_login_is_an_error_and_the_session_goes_on(msgd_factory):
    inst = msgd_factory(users=[USER])
    first = build_message(USER, f"one {unique()}", "first\r\n")
    second = build_message(USER, f"two {unique()}", big_body(300 * 1024, 3))
    inst.send(USER, first)
    inst.send(USER, second)
    inst.wait_count_pop3(USER, 2, timeout=60)
    p = inst.pop3(USER)
    try:
        assert p.stat()[0] == 2
        # Another session (IMAP) expunges message 1 behind POP3's back.
        m = inst.imap(USER)
        try:
            m.select("INBOX")
            m.store("1", "+FLAGS", "(\\Deleted)")
            m.expunge()
        finally:
            m.logout()
        deadline = time.monotonic() + 10
        while True:
            try:
                p.retr(1)
            except poplib.error_proto as e:
                assert str(e).startswith("b'-ERR"), e
                break
            assert time.monotonic() < deadline, "RETR of an expunged message kept succeeding"
            time.sleep(0.2)
        resp, raw = retr_raw(p, 2)
        assert resp.startswith(b"+OK")
        assert_delivered_copy(raw, second, REMOTE_SENDER, "RETR after an expunge")
    finally:
        p.quit()
