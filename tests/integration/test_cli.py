"""The msgd command line: --version, check-config, user management."""

import re
import subprocess
import time

import pytest

from conftest import DOMAIN, REMOTE_SENDER, Msgd, build_message, imap_ok, msgd_bin, msgd_env


def test_version_prints_name_and_version_and_exits_0():
    res = subprocess.run([msgd_bin(), "--version"], capture_output=True, text=True, timeout=30, env=msgd_env())
    assert res.returncode == 0, f"--version exited {res.returncode}: {res.stderr}"
    assert re.fullmatch(r"msgd \d+\.\d+\.\d+\S*\n?", res.stdout), f"--version printed {res.stdout!r}"


def test_check_config_accepts_valid_config(tmp_path):
    inst = Msgd(tmp_path)
    res = inst.cli("check-config")
    assert res.returncode == 0, f"check-config of a valid config exited {res.returncode}:\n{res.stdout}\n{res.stderr}"


@pytest.mark.parametrize("table,key", [("server", "surprise_knob"), ("listener.imap", "bindd")])
def test_check_config_rejects_unknown_key_with_exit_2_naming_it(tmp_path, table, key):
    inst = Msgd(tmp_path)
    text = inst.config_text().replace(f"[{table}]\n", f"[{table}]\n{key} = 3\n", 1)
    assert f"{key} = 3" in text
    inst.config_path.write_text(text)
    res = inst.cli("check-config")
    assert res.returncode == 2, f"check-config with unknown key {key} exited {res.returncode}"
    assert key in res.stdout + res.stderr, f"check-config output does not name {key}:\n{res.stdout}\n{res.stderr}"


def test_server_refuses_to_start_with_unknown_key(tmp_path):
    inst = Msgd(tmp_path)
    inst.config_path.write_text(inst.config_text() + "\n[server_typo]\nhostname = \"x\"\n")
    res = subprocess.run([msgd_bin(), "--config", str(inst.config_path)], capture_output=True, text=True,
                         timeout=30, cwd=tmp_path, env=msgd_env())
    assert res.returncode == 2, f"msgd with an unknown config table exited {res.returncode}"
    assert "server_typo" in res.stdout + res.stderr


def test_usage_error_exits_2(tmp_path):
    inst = Msgd(tmp_path)
    res = inst.cli("user", "frobnicate")
    assert res.returncode == 2, f"`msgd user frobnicate` exited {res.returncode}"


def test_user_add_reads_password_from_stdin_and_user_list_shows_users(msgd_factory):
    server = msgd_factory(start=False)
    alice, bob = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
    server.add_user(alice, "alice-stdin-Pw1")
    server.add_user(bob, "bob-stdin-Pw2", inactive=True)
    res = server.cli("user", "list")
    assert res.returncode == 0, res.stderr
    listed = res.stdout
    assert alice in listed and bob in listed, f"user list:\n{listed}"

    server.start()
    m = server.imap()
    try:
        imap_ok(m.login(alice, "alice-stdin-Pw1"), "LOGIN with the password given on stdin")
    finally:
        m.logout()
    m = server.imap()
    try:
        with pytest.raises(m.error):
            m.login(alice, "alice-stdin-Pw1-wrong")
    finally:
        m.shutdown()


def test_user_del_marks_user_deleted(msgd_factory):
    """`user del` (old spelling of `user delete`) marks the user deleted:
    gone from the active users, listed as deleted until the purge."""
    server = msgd_factory(start=False)
    keep, gone = f"keep@{DOMAIN}", f"gone@{DOMAIN}"
    server.add_user(keep)
    server.add_user(gone)
    res = server.cli("user", "del", gone)
    assert res.returncode == 0, res.stderr
    listed = server.cli("user", "list", "--status", "active").stdout
    assert keep in listed and gone not in listed, f"user list after del:\n{listed}"
    listed = server.cli("user", "list", "--status", "deleted").stdout
    assert gone in listed and keep not in listed, f"deleted users:\n{listed}"


def test_user_added_while_server_runs_can_log_in_and_receive_mail(msgd_factory):
    server = msgd_factory(users=[f"first@{DOMAIN}"])
    late = f"late-{int(time.time())}@{DOMAIN}"
    server.add_user(late)

    def login_ok():
        m = server.imap()
        try:
            m.login(late, server.passwords[late])
            m.logout()
            return True
        except m.error:
            m.shutdown()
            return False

    deadline = time.monotonic() + 10
    ok = login_ok()
    while not ok and time.monotonic() < deadline:
        time.sleep(0.5)
        ok = login_ok()
    assert ok, "a user added while msgd runs cannot log in within 10 s"

    server.send(late, build_message(late, "welcome", "hello late user\r\n"), sender=REMOTE_SENDER)
    server.wait_count(late, 1)
