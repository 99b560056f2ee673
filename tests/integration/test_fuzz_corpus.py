"""The fuzzer's hostile extremes against the real binary (src/fuzz/ runs
them against the parsers in `cargo test`; this checks the server as a
whole): deep configuration nesting is a configuration error, not a stack
overflow, and 1 MB lines, literals claiming 2^63 bytes, 100,000-deep
SEARCH nesting and 100,000 sequence ranges get an answer while the server
keeps serving other clients with bounded memory."""

import subprocess

import pytest

from conftest import DOMAIN, LineClient, Msgd, msgd_bin, msgd_env

USER = f"fuzz@{DOMAIN}"
USERS = [USER]

# The whole server: a debug build, all roles, with a few idle sessions.
RSS_BOUND_KB = 400 * 1024


def rss_kb(inst: Msgd) -> int:
    with open(f"/proc/{inst.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def assert_still_serving(server: Msgd) -> None:
    assert server.running, "msgd exited"
    with LineClient(server.ports["imap"]) as c:
        assert c.readline().startswith(b"* OK"), "no IMAP greeting after the attack"
        c.send("z1 NOOP\r\n")
        assert c.readline().startswith(b"z1 OK")
    with LineClient(server.ports["smtp"]) as c:
        assert c.smtp_reply()[0] == 220
        assert c.smtp_cmd("NOOP")[0] == 250
    rss = rss_kb(server)
    assert rss < RSS_BOUND_KB, f"RSS {rss} kB after the attack"


def check_config_with_env(tmp_path, name: str, value: str) -> subprocess.CompletedProcess:
    inst = Msgd(tmp_path)
    env = msgd_env() | {name: value}
    return subprocess.run([msgd_bin(), "--config", str(inst.config_path), "check-config"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)


def test_environment_value_nested_100000_deep_is_a_config_error(tmp_path):
    res = check_config_with_env(tmp_path, "MSGD_SERVER__HOSTNAME", "[" * 100_000)
    assert res.returncode == 2, f"exit {res.returncode} (negative: killed by a signal): {res.stderr[-300:]}"
    assert "MSGD_SERVER__HOSTNAME: arrays or tables nested more than 32 deep" in res.stdout + res.stderr


def test_environment_name_with_30000_parts_is_a_config_error(tmp_path):
    name = "MSGD_" + "__".join(["A"] * 30_000)
    res = check_config_with_env(tmp_path, name, "1")
    assert res.returncode == 2, f"exit {res.returncode}: {res.stderr[-300:]}"
    out = res.stdout + res.stderr
    assert "more than 32 nested key parts" in out
    assert len(out) < 2000, "the error quotes the whole 90 KB name"


@pytest.mark.parametrize("deep", ["x = " + "[" * 100_000, "x = " + "{ a = " * 100_000])
def test_config_file_nested_100000_deep_is_a_config_error(tmp_path, deep):
    inst = Msgd(tmp_path)
    inst.config_path.write_text(inst.config_text() + "\n[server_extra]\n" + deep + "\n")
    res = inst.cli("check-config")
    assert res.returncode == 2, f"exit {res.returncode}: {res.stderr[-300:]}"
    assert "nested more than 32 deep" in res.stdout + res.stderr


def imap_login(server: Msgd) -> LineClient:
    c = LineClient(server.ports["imap"], timeout=60)
    assert c.readline().startswith(b"* OK")
    c.send(f"a LOGIN {USER} {server.passwords[USER]}\r\n")
    assert c.imap_response().startswith(b"a OK"), "login failed"
    c.send("b SELECT INBOX\r\n")
    while True:
        line = c.imap_response()
        assert line, "EOF during SELECT"
        if line.startswith(b"b "):
            assert line.startswith(b"b OK")
            return c


def test_smtp_1mb_line_is_refused_and_the_session_continues(server):
    with LineClient(server.ports["smtp"]) as c:
        assert c.smtp_reply()[0] == 220
        c.send(b"EHLO " + b"a" * (1 << 20) + b"\r\n")
        code, text = c.smtp_reply()
        assert code == 500 and "Line too long" in text, text
        assert c.smtp_cmd("EHLO client.example")[0] == 250
    assert_still_serving(server)


@pytest.mark.parametrize("literal", ["{9223372036854775808}", "{18446744073709551615}", "{4294967296}"])
def test_imap_literal_claiming_2_63_bytes_is_refused(server, literal):
    with LineClient(server.ports["imap"]) as c:
        assert c.readline().startswith(b"* OK")
        c.send(f"t1 LOGIN {literal}\r\n")
        line = c.imap_response()
        assert line.startswith(b"t1 NO") or line.startswith(b"t1 BAD"), line
        assert b"+" not in line[:1], "a continuation was sent for an impossible literal"
        c.send("t2 NOOP\r\n")
        assert c.imap_response().startswith(b"t2 OK")
    assert_still_serving(server)


def test_imap_search_nested_100000_deep_is_a_syntax_error(server):
    c = imap_login(server)
    with c:
        # Longer than a command line may be, and within the line limit but
        # deeper than the parser's nesting cap.
        for prog in ["(" * 100_000 + "ALL" + ")" * 100_000, "NOT " * 100_000 + "ALL", "OR ALL " * 100_000 + "ALL",
                     "(" * 5_000 + "ALL" + ")" * 5_000, "NOT " * 2_000 + "ALL"]:
            c.send(f"s1 SEARCH {prog}\r\n")
            line = c.imap_response()
            while line.startswith(b"*"):
                line = c.imap_response()
            # Too long for a line, or nested too deeply: BAD either way.
            assert line.startswith(b"s1 BAD"), line[:200]
        c.send("s2 NOOP\r\n")
        line = c.imap_response()
        while line.startswith(b"*"):
            line = c.imap_response()
        assert line.startswith(b"s2 OK")
    assert_still_serving(server)


def test_imap_fetch_with_100000_ranges_is_answered(server):
    c = imap_login(server)
    with c:
        ranges = ",".join(f"{i + 1}:{4_000_000_000 - i}" for i in range(100_000))
        c.send(f"f1 UID FETCH {ranges} (FLAGS)\r\n")
        line = c.imap_response()
        while line.startswith(b"*"):
            line = c.imap_response()
        assert line.startswith(b"f1 OK") or line.startswith(b"f1 BAD"), line[:200]
        c.send("f2 NOOP\r\n")
        line = c.imap_response()
        while line.startswith(b"*"):
            line = c.imap_response()
        assert line.startswith(b"f2 OK")
    assert_still_serving(server)


def test_pop3_1mb_line_is_refused_and_the_session_continues(server):
    with LineClient(server.ports["pop3"]) as c:
        assert c.readline().startswith(b"+OK")
        c.send(b"USER " + b"a" * (1 << 20) + b"\r\n")
        assert c.readline().startswith(b"-ERR")
        c.send(b"CAPA\r\n")
        assert c.readline().startswith(b"+OK")
    assert_still_serving(server)
