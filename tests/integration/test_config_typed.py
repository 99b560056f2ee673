"""Typed configuration values (issue 11): networks, addresses, routes and
choices are checked when the configuration loads, by `msgd check-config`
and at start, with an error that names the key and lists what is accepted;
the running server uses the typed values (trusted networks, listeners of
any name with a `protocol`). Also: config sits at the bottom of the import
graph (scripts/check-imports.py)."""

import subprocess
import sys

import pytest

from conftest import REPO_ROOT, LineClient, Msgd, free_ports, msgd_bin, msgd_env, wait_for_ports


def with_keys(inst: Msgd, table: str, keys: str) -> str:
    """The instance's config with the line `keys` in `[table]` (the table
    added if absent; a key already there replaced)."""
    name = keys.split("=", 1)[0].strip()
    lines = inst.config_text().split("\n")
    header = f"[{table}]"
    if header not in lines:
        return "\n".join(lines) + f"\n{header}\n{keys}\n"
    start = lines.index(header) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
    kept = [l for l in lines[start:end] if l.split("=", 1)[0].strip() != name]
    return "\n".join(lines[:start] + [keys] + kept + lines[end:])


def test_sample_config_passes_check_config():
    res = subprocess.run([msgd_bin(), "--config", str(REPO_ROOT / "etc" / "msgd.toml"), "check-config"],
                         capture_output=True, text=True, timeout=30, env=msgd_env())
    assert res.returncode == 0, f"etc/msgd.toml: {res.stdout}{res.stderr}"


BAD_VALUES = [
    ("store", 'lmtp_networks = ["10.0.0.0/8", "10.0.0.0/33"]', "store.lmtp_networks",
     "'10.0.0.0/33' is not a network"),
    ("submission", 'trusted_networks = ["webmail"]', "submission.trusted_networks", "'webmail' is not a network"),
    ("imap", 'login_networks = ["10.0.0.1/40"]', "imap.login_networks", "is not a network"),
    ("listener.imap", 'proxy_networks = ["lb.example"]', "listener.imap.proxy_networks", "is not a network"),
    ("log", 'format = "xml"', "log.format", "'xml' is not one of text, json"),
    ("directory", 'backend = "sql"', "directory.backend", "'sql' is not one of embedded, ldap"),
    ("mmp", 'backend_tls = "tls"', "mmp.backend_tls", "'tls' is not one of none, starttls, implicit"),
    ("mmp", 'login_mode = "proxy"', "mmp.login_mode", "'proxy' is not one of credentials, proxyauth"),
    ("listener.imap", 'tls = "ssl"', "listener.imap.tls", "'ssl' is not one of none, starttls, implicit"),
    ("listener.imap", 'protocol = "imap4"', "listener.imap.protocol", "'imap4' is not one of smtp, submission"),
    ("mta", 'relay = "smtp.example.net"', "mta.relay", "'smtp.example.net' is not host:port"),
    ("mta", 'local_via = "smtp:mta-in.example"', "mta.local_via", 'is not "lmtp" or "smtp:host:port"'),
    ("mta.tls_policy", '"bank.example" = "strict"', "mta.tls_policy",
     "'strict' is not one of none, opportunistic, require, verify"),
    ("mmp.backends", 'store1 = "10.0.0.5:143"', "mmp.backends.store1", "must be a host without port"),
    ("mmp.imap_backends", 'store1 = "bad host"', "mmp.imap_backends.store1", "is not host or host:port"),
]


@pytest.mark.parametrize("table,keys,key,says", BAD_VALUES, ids=[b[2] for b in BAD_VALUES])
def test_bad_typed_value_is_a_config_error_naming_the_key(tmp_path, table, keys, key, says):
    inst = Msgd(tmp_path)
    inst.config_path.write_text(with_keys(inst, table, keys))
    res = inst.cli("check-config")
    out = res.stdout + res.stderr
    assert res.returncode == 2, f"check-config with {keys!r} exited {res.returncode}:\n{out}"
    assert key in out, f"the error does not name {key}:\n{out}"
    assert says in out, f"the error does not say {says!r}:\n{out}"
    # The server refuses to start with it too (exit 2: no restart loop).
    run = subprocess.run([msgd_bin(), "--config", str(inst.config_path)], capture_output=True, text=True,
                         timeout=30, cwd=tmp_path, env=msgd_env())
    assert run.returncode == 2, f"msgd started with {keys!r}: {run.returncode}\n{run.stderr}"
    assert key in run.stdout + run.stderr


def test_bad_typed_value_from_the_environment_names_the_variable(tmp_path):
    inst = Msgd(tmp_path)
    env = msgd_env() | {"MSGD_MMP__LOGIN_MODE": "proxy"}
    res = subprocess.run([msgd_bin(), "--config", str(inst.config_path), "check-config"], capture_output=True,
                         text=True, timeout=30, cwd=tmp_path, env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert "LOGIN_MODE" in out.upper() and "environment" in out, out
    assert "credentials, proxyauth" in out, out


def test_good_typed_values_pass_check_config(tmp_path):
    inst = Msgd(tmp_path)
    text = inst.config_text() + (
        '\n[store]\nlmtp_networks = ["10.0.0.0/8", "fd00::/8", "::1"]\n'
        '[mta]\nrelay = "[::1]:2525"\nlocal_via = "smtp:mta-in.example:25"\n'
        '[mta.hosts]\n"store1.example" = "10.0.0.5"\n"store2.example" = "10.0.0.6:2424"\n'
        '[mta.tls_policy]\n"bank.example" = "verify"\n'
        '[mmp]\nbackend_tls = "implicit"\nlogin_mode = "credentials"\n'
        '[mmp.backends]\nstore1 = "10.0.0.5"\n'
        '[mmp.imap_backends]\nstore2 = "[::1]:1143"\n'
    )
    inst.config_path.write_text(text)
    res = inst.cli("check-config")
    assert res.returncode == 0, res.stdout + res.stderr


def smtp_code(c: LineClient, line: str) -> int:
    code, text = c.smtp_cmd(line)
    return code


@pytest.mark.parametrize("networks,mail_code", [('["127.0.0.0/8"]', 250), ('["192.0.2.0/24"]', 530)])
def test_submission_trusted_networks_are_matched_as_typed_networks(msgd_factory, networks, mail_code):
    """RFC 6409 4.3: a client in submission.trusted_networks may submit
    without AUTH; anyone else gets 530 before AUTH."""
    inst = msgd_factory(start=False)
    inst.config_path.write_text(with_keys(inst, "submission", f"trusted_networks = {networks}"))
    inst.start()
    with LineClient(inst.ports["submission"]) as c:
        code, _ = c.smtp_reply()
        assert code == 220
        assert smtp_code(c, "EHLO client.example") == 250
        got = smtp_code(c, "MAIL FROM:<sender@remote.example>")
        assert got == mail_code, f"trusted_networks = {networks}: MAIL FROM got {got}"


def test_listener_of_any_name_serves_its_protocol(msgd_factory):
    """A second listener named other than its protocol (documented in
    etc/msgd.toml) runs beside the usual one."""
    inst = msgd_factory(start=False)
    (port,) = free_ports(1)
    inst.config_path.write_text(
        inst.config_text() + f'\n[listener.imap-second]\nprotocol = "imap"\nbind = ["127.0.0.1:{port}"]\n')
    inst.start()
    wait_for_ports(inst.proc, [port], 10, inst.log, "the second IMAP listener")
    with LineClient(port) as c:
        greeting = c.readline()
        assert greeting.startswith(b"* OK"), greeting
    with LineClient(inst.ports["imap"]) as c:
        assert c.readline().startswith(b"* OK")


def test_config_imports_nothing_above_it():
    """No module below the protocols (config, netaddr, net, login, store,
    directory, ...) imports a protocol module, and no module keeps mutable
    state in a static (scripts/check-imports.py)."""
    res = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "check-imports.py")], capture_output=True,
                         text=True, timeout=30, cwd=REPO_ROOT)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_layer_check_finds_an_upward_import_and_a_mutable_static(tmp_path):
    """The checker itself, on a small tree: an import from a higher layer
    and mutable statics are reported (also after a one-line test module
    declaration); constants, test code and the fuzzing harness are not."""
    src = tmp_path / "src"
    (src / "fuzz").mkdir(parents=True)
    (src / "netaddr.rs").write_text(
        "#[cfg(test)]\nmod tests;\n"
        "use crate::imap::mime;\n"
        "static TABLE: &[u8] = b\"abc\";\n"
        "pub(crate) static HITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);\n"
        "#[cfg(test)]\nmod more {\n    static IN_TEST: std::sync::Mutex<u8> = std::sync::Mutex::new(0);\n}\n")
    (src / "imap.rs").write_text("thread_local! { static SCRATCH: u8 = 0; }\n")
    (src / "fuzz" / "mod.rs").write_text("static SEEN: std::sync::Mutex<u8> = std::sync::Mutex::new(0);\n")
    res = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "check-imports.py")], capture_output=True,
                         text=True, timeout=30, cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    lines = sorted(res.stdout.splitlines())
    assert lines == [
        "src/imap.rs:1: process-wide mutable state in a static (put it in Services)",
        "src/netaddr.rs: uses crate::imap (a higher layer)",
        "src/netaddr.rs:5: process-wide mutable state in a static (put it in Services)",
    ], res.stdout
