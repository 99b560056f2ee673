"""`msgd config get|set|list|check` (issue 14, configutil) against the real
binary: effective values with defaults, comments and layout kept by `set`,
unknown keys and bad values refused with exit 2 and the file untouched,
secrets masked, an atomic write keeping the file's permissions, and the
command working beside a running server."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from conftest import REPO_ROOT, msgd_bin, msgd_env

COMMENTED = """\
# Site configuration: kept by msgd config set.
[server]
hostname = "mx.example.test" # the public name
data_dir = "{data}"
domain = "example.test"

[store]
# Cache of the mboxlist, in bytes.
dbcachesize = 1048576

[directory.ldap]
bind_password = "hunter2-secret"

[listener.imap]
bind = ["127.0.0.1:1143"]
"""


def run(*args: str, config: Path | None = None, role: str = "all-in-one") -> subprocess.CompletedProcess:
    cmd = [msgd_bin(), "--role", role]
    if config is not None:
        cmd += ["--config", str(config)]
    return subprocess.run(cmd + ["config", *args], capture_output=True, text=True, timeout=60,
                          env=msgd_env(), cwd=config.parent if config else None)


def site(tmp_path: Path) -> Path:
    p = tmp_path / "msgd.toml"
    p.write_text(COMMENTED.format(data=tmp_path / "data"))
    return p


def test_get_shows_file_values_and_defaults(tmp_path):
    cfg = site(tmp_path)
    r = run("get", "store.dbcachesize", config=cfg)
    assert (r.returncode, r.stdout) == (0, "1048576\n"), r.stderr
    # Not in the file: the built-in default.
    r = run("get", "server.shutdown_grace", config=cfg)
    assert (r.returncode, r.stdout) == (0, "10\n"), r.stderr
    r = run("get", "server.hostname", config=cfg)
    assert r.stdout == "mx.example.test\n"
    # A table: every key below it.
    r = run("get", "store.partition", config=cfg)
    assert r.returncode == 0
    assert 'store.partition.primary.path = "partition/primary"' in r.stdout
    # The role profile counts: the store profile binds LMTP on port 24.
    r = run("get", "listener.lmtp.bind", config=cfg, role="store")
    assert r.returncode == 0 and "0.0.0.0:24" in r.stdout, r.stdout


def test_get_unknown_key_exits_2(tmp_path):
    r = run("get", "store.no_such_key", config=site(tmp_path))
    assert r.returncode == 2
    assert "store.no_such_key" in r.stderr


def test_list_shows_every_key_and_changed_only_the_file(tmp_path):
    cfg = site(tmp_path)
    r = run("list", config=cfg)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "store.dbcachesize = 1048576" in lines
    assert "server.shutdown_grace = 10" in lines  # a default
    assert any(line.startswith("imap.") for line in lines)
    r = run("list", "--changed", config=cfg)
    assert r.returncode == 0, r.stderr
    keys = {line.split(" = ")[0] for line in r.stdout.splitlines()}
    assert keys == {"server.hostname", "server.data_dir", "server.domain", "store.dbcachesize",
                    "directory.ldap.bind_password", "listener.imap.bind"}, keys


def test_secrets_are_masked_in_get_list_and_set(tmp_path):
    cfg = site(tmp_path)
    for args in (("get", "directory.ldap.bind_password"), ("list",), ("list", "--changed"),
                 ("get", "directory.ldap")):
        r = run(*args, config=cfg)
        assert r.returncode == 0, r.stderr
        assert "hunter2" not in r.stdout + r.stderr, args
        assert "********" in r.stdout, args
    r = run("set", "directory.ldap.bind_password", "n3w-s3cret-pw", config=cfg)
    assert r.returncode == 0, r.stderr
    assert "n3w-s3cret-pw" not in r.stdout + r.stderr
    assert 'bind_password = "n3w-s3cret-pw"' in cfg.read_text()
    # A file naming the password is a path, not a secret.
    r = run("get", "directory.ldap.bind_password_file", config=cfg)
    assert r.returncode == 0 and "*" not in r.stdout


def test_set_keeps_comments_and_layout(tmp_path):
    cfg = site(tmp_path)
    before = cfg.read_text()
    r = run("set", "store.dbcachesize", "268435456", config=cfg)
    assert r.returncode == 0, r.stderr
    after = cfg.read_text()
    assert after == before.replace("dbcachesize = 1048576", "dbcachesize = 268435456")
    r = run("set", "server.hostname", "mx2.example.test", config=cfg)
    assert r.returncode == 0, r.stderr
    # The comment after the value stays.
    assert 'hostname = "mx2.example.test" # the public name' in cfg.read_text()
    assert run("get", "store.dbcachesize", config=cfg).stdout == "268435456\n"
    assert "# Cache of the mboxlist, in bytes." in cfg.read_text()


def test_set_types_follow_the_schema(tmp_path):
    cfg = site(tmp_path)
    # An array as a comma list, and as a TOML literal.
    r = run("set", "listener.imap.bind", "127.0.0.1:1143, [::1]:1143", config=cfg)
    assert r.returncode == 0, r.stderr
    assert 'bind = ["127.0.0.1:1143", "[::1]:1143"]' in cfg.read_text()
    r = run("set", "listener.imap.bind", '["127.0.0.1:2143"]', config=cfg)
    assert r.returncode == 0, r.stderr
    assert run("get", "listener.imap.bind", config=cfg).stdout == '["127.0.0.1:2143"]\n'
    # A boolean, a string that looks like a number, a new partition.
    assert run("set", "listener.imap.enabled", "false", config=cfg).returncode == 0
    assert "enabled = false" in cfg.read_text()
    assert run("set", "server.domain", "1234", config=cfg).returncode == 0
    assert 'domain = "1234"' in cfg.read_text()
    r = run("set", "store.partition.second.path", "/srv/msgd/p2", config=cfg)
    assert r.returncode == 0, r.stderr
    assert '[store.partition.second]\npath = "/srv/msgd/p2"' in cfg.read_text()
    assert run("get", "store.partition.second.path", config=cfg).stdout == "/srv/msgd/p2\n"
    assert run("check", config=cfg).returncode == 0


def refused(cfg: Path, key: str, value: str, words: tuple[str, ...]) -> None:
    before = cfg.read_bytes()
    inode = cfg.stat().st_ino
    r = run("set", key, value, config=cfg)
    assert r.returncode == 2, (key, value, r.stdout, r.stderr)
    assert cfg.read_bytes() == before, f"{key}: file changed on refusal"
    assert cfg.stat().st_ino == inode
    for w in words:
        assert w in r.stderr, (w, r.stderr)
    # No temporary copy left beside the file.
    assert sorted(p.name for p in cfg.parent.iterdir() if p.name.startswith(".")) == []


def test_set_refuses_unknown_keys_and_bad_values(tmp_path):
    cfg = site(tmp_path)
    # The error names the file being changed (never the temporary copy).
    refused(cfg, "store.dbcachesiz", "5", ("dbcachesiz", "unknown", f"{cfg} left unchanged", f"in {cfg}"))
    refused(cfg, "nosuchsection.key", "5", ("nosuchsection",))
    refused(cfg, "store.dbcachesize", "lots", ("store.dbcachesize",))
    refused(cfg, "store.dbcachesize", "-5", ("dbcachesize",))
    refused(cfg, "log.format", "xml", ("text", "json"))
    refused(cfg, "listener.imap.bind", "not-an-address", ("bind",))
    # A rule across keys (config::validate): checked too.
    refused(cfg, "limits.max_line", "100", ("max_line",))
    refused(cfg, "store.default_partition", "nowhere", ("nowhere",))
    refused(cfg, "store", "1", ("table",))
    r = run("set", "store..x", "1", config=cfg)
    assert r.returncode == 2


def test_set_is_atomic_and_keeps_permissions(tmp_path):
    cfg = site(tmp_path)
    os.chmod(cfg, 0o640)
    inode = cfg.stat().st_ino
    r = run("set", "store.dbcachesize", "4096", config=cfg)
    assert r.returncode == 0, r.stderr
    st = cfg.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640
    # A new file renamed over the old one, not the old one rewritten.
    assert st.st_ino != inode
    # A symlinked config: the target changes, the link stays.
    link = tmp_path / "link.toml"
    link.symlink_to(cfg)
    r = run("set", "store.dbcachesize", "8192", config=link)
    assert r.returncode == 0, r.stderr
    assert link.is_symlink()
    assert "dbcachesize = 8192" in cfg.read_text()


def test_set_needs_a_file(tmp_path):
    r = run("set", "store.dbcachesize", "1")
    assert r.returncode == 2
    assert "--config" in r.stderr


def test_check_and_its_check_config_alias(tmp_path):
    cfg = site(tmp_path)
    r = run("check", config=cfg)
    assert (r.returncode, r.stdout.strip()) == (0, "configuration ok"), r.stderr
    old = subprocess.run([msgd_bin(), "--config", str(cfg), "check-config"], capture_output=True, text=True,
                         env=msgd_env())
    assert old.returncode == 0 and "configuration ok" in old.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text() + "\n[imap]\nno_such = 1\n[limits]\nmax_line = 10\n")
    r = run("check", config=bad)
    assert r.returncode == 2
    assert "no_such" in r.stderr
    old = subprocess.run([msgd_bin(), "--config", str(bad), "check-config"], capture_output=True, text=True,
                         env=msgd_env())
    assert old.returncode == 2 and "no_such" in old.stderr
    # get/list on a file that does not load: exit 2 with the errors.
    r = run("get", "server.hostname", config=bad)
    assert r.returncode == 2 and "no_such" in r.stderr
    r = run("check", config=tmp_path / "missing.toml")
    assert r.returncode == 2 and "no such file" in r.stderr


def test_sample_tier_configs_check(tmp_path):
    """The samples installed as /etc/msgd/<role>.toml load for their role."""
    tiers = REPO_ROOT / "etc" / "tiers"
    names = sorted(p.stem for p in tiers.glob("*.toml"))
    assert names == ["all-in-one", "mem", "mmp", "mta-in", "mta-out", "store"]
    for role in names:
        r = run("check", config=tiers / f"{role}.toml", role=role)
        assert r.returncode == 0, (role, r.stderr)


def test_config_set_beside_a_running_server(msgd_factory):
    """`msgd config` works on the file while the server runs: it never
    touches the server's state, and the server keeps serving."""
    server = msgd_factory()
    r = server.cli("config", "set", "imap.max_literal", "1000000")
    assert r.returncode == 0, r.stderr
    assert "reload" in r.stdout
    r = server.cli("config", "get", "imap.max_literal")
    assert r.stdout == "1000000\n"
    r = server.cli("config", "set", "imap.max_literal", "many")
    assert r.returncode == 2
    assert server.running
    m = server.imap()
    assert m.noop()[0] == "OK"
    m.logout()


def test_keys_that_change_together_are_set_in_one_write(tmp_path):
    """tls.cert and tls.key must be given together (config::validate): one
    alone is refused, both in one `set` are written."""
    cfg = site(tmp_path)
    refused(cfg, "tls.cert", "/etc/msgd/tls/fullchain.pem", ("cert and key",))
    r = run("set", "tls.cert", "/etc/msgd/tls/fullchain.pem", "tls.key", "/etc/msgd/tls/privkey.pem", config=cfg)
    assert r.returncode == 0, r.stderr
    assert 'tls.cert = "/etc/msgd/tls/fullchain.pem"' in r.stdout
    assert run("get", "tls.key", config=cfg).stdout == "/etc/msgd/tls/privkey.pem\n"
    # A key without its value: usage error, file untouched.
    before = cfg.read_bytes()
    r = run("set", "store.dbcachesize", "1", "store.min_free_disk", config=cfg)
    assert r.returncode == 2
    assert cfg.read_bytes() == before


def test_concurrent_sets_all_land(tmp_path):
    """Twelve `set`s of different keys at once: the file lock makes them
    take turns, so every change is in the final file."""
    cfg = site(tmp_path)
    keys = [f"store.partition.p{i}.path" for i in range(12)]
    cmd = [msgd_bin(), "--role", "all-in-one", "--config", str(cfg), "config", "set"]
    procs = [subprocess.Popen(cmd + [k, f"/srv/msgd/{k.split('.')[2]}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=msgd_env()) for k in keys]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    for k in keys:
        r = run("get", k, config=cfg)
        assert r.stdout == f"/srv/msgd/{k.split('.')[2]}\n", (k, r.stdout, r.stderr)
    assert "# Cache of the mboxlist, in bytes." in cfg.read_text()
