"""Every role starts with its shipped profile (roles/*.toml) unchanged.

Each role runs as root inside a private network namespace (`unshare -n`,
then `ip link set lo up`), so the real ports 25/24/110/143/465/587/993/995
are free, with only a minimal site file (data folder, names). Inside the
namespace a probe connects to every listener the profile binds, over IPv4
(127.0.0.1 for 0.0.0.0) and IPv6 (::1 for [::]), and expects the
protocol's greeting (after a TLS handshake on implicit-TLS ports).

Before IPV6_V6ONLY, the second bind of each pair (`0.0.0.0:P`, `[::]:P`)
failed: `listener.imap: cannot listen on [::]:143`.

The probe is this file run as a script inside the namespace
(`python3 test_roles.py --probe ROLE SITE MSGD`); it prints one JSON line.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ROLES = ("mta-in", "mta-out", "store", "mmp", "mem", "all-in-one")
ROLE_FILES = ("mta-in", "mta-out", "store", "mmp", "mem")
IMPLICIT_TLS = {"submissions", "imaps", "pop3s", "https"}
GREETING = {
    "smtp": b"220 ",
    "submission": b"220 ",
    "submissions": b"220 ",
    "lmtp": b"220 ",
    "imap": b"* OK",
    "imaps": b"* OK",
    "pop3": b"+OK",
    "pop3s": b"+OK",
    # HTTP speaks second: the probe asks for /login first.
    "http": b"HTTP/1.1 ",
    "https": b"HTTP/1.1 ",
}
# Served by no role yet.
NOT_BUILT: set[str] = set()


def profile_listeners(role: str) -> dict[str, list[str]]:
    """Listener name -> bind addresses, as the shipped profiles say."""
    files = ROLE_FILES if role == "all-in-one" else (role,)
    out: dict[str, list[str]] = {}
    for f in files:
        data = tomllib.loads((REPO_ROOT / "roles" / f"{f}.toml").read_text())
        for name, l in data.get("listener", {}).items():
            for a in l.get("bind", []):
                if a not in out.setdefault(name, []):
                    out[name].append(a)
    return out


def site_config(root: Path) -> Path:
    path = root / "site.toml"
    path.write_text(
        "[server]\n"
        'hostname = "mail.example.test"\n'
        f'data_dir = "{root / "data"}"\n'
        'domain = "example.test"\n\n'
        "[dns]\n"
        'nameservers = ["127.0.0.1:9"]\n'
        "timeout = 2\n"
    )
    return path


# --------------------------------------------------------------------------
# the probe (runs inside the namespace)


def _target(addr: str) -> tuple[int, str, int]:
    host, port = addr.rsplit(":", 1)
    if host.startswith("["):
        h = host[1:-1]
        return socket.AF_INET6, ("::1" if h == "::" else h), int(port)
    return socket.AF_INET, ("127.0.0.1" if host == "0.0.0.0" else host), int(port)


def _greeting(name: str, addr: str, timeout: float = 10) -> str:
    family, host, port = _target(addr)
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        if name in IMPLICIT_TLS:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s, server_hostname="mail.example.test")
        if name in ("http", "https"):
            s.sendall(b"GET /login HTTP/1.1\r\nHost: mail.example.test\r\nConnection: close\r\n\r\n")
        data = b""
        while b"\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.decode("utf-8", "replace")
    except OSError as e:
        return f"error: {e}"
    finally:
        s.close()


def probe(role: str, site: str, msgd: str) -> dict:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    root = Path(site).parent
    err = open(root / "msgd.stderr.log", "wb")
    proc = subprocess.Popen(
        [msgd, "--role", role, "--config", site],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=root,
        env={k: v for k, v in os.environ.items() if not k.startswith("MSGD_")},
    )
    result: dict = {"role": role, "greetings": {}, "exit": None}
    try:
        wanted = {
            (name, a)
            for name, addrs in profile_listeners(role).items()
            if name not in NOT_BUILT
            for a in addrs
        }
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if "msgd ready" in (root / "msgd.stderr.log").read_text(errors="replace"):
                break
            time.sleep(0.1)
        for name, a in sorted(wanted):
            result["greetings"][f"{name} {a}"] = _greeting(name, a)
        time.sleep(0.2)
        result["exit"] = proc.poll()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        err.close()
        result["log"] = (root / "msgd.stderr.log").read_text(errors="replace")[-4000:]
    return result


# --------------------------------------------------------------------------
# the tests (run outside, start the probe in a fresh namespace)


def run_in_namespace(role: str, tmp_path: Path) -> dict:
    from conftest import msgd_bin  # noqa: PLC0415 (pytest puts tests/integration on sys.path)

    site = site_config(tmp_path)
    res = subprocess.run(
        ["unshare", "-n", sys.executable, __file__, "--probe", role, str(site), msgd_bin()],
        capture_output=True, text=True, timeout=90,
    )
    assert res.returncode == 0, f"probe failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return json.loads(res.stdout.strip().splitlines()[-1])


import pytest  # noqa: E402


@pytest.mark.parametrize("role", ROLES)
def test_role_starts_with_its_shipped_profile_over_ipv4_and_ipv6(role, tmp_path):
    profile = profile_listeners(role)
    served = {n: a for n, a in profile.items() if n not in NOT_BUILT}
    assert served, f"{role}: profile binds nothing to serve"
    # The deployment shape the issue is about: both families on each port.
    for name, addrs in served.items():
        assert any(a.startswith("0.0.0.0:") for a in addrs), (name, addrs)
        assert any(a.startswith("[::]:") for a in addrs), (name, addrs)
    r = run_in_namespace(role, tmp_path)
    assert r["exit"] is None, f"{role} exited ({r['exit']}):\n{r['log']}"
    assert "cannot listen" not in r["log"], r["log"]
    for key, greeting in r["greetings"].items():
        name = key.split()[0]
        assert greeting.startswith(GREETING[name].decode()), f"{role}: {key}: {greeting!r}\n{r['log']}"
    expected = {f"{n} {a}" for n, addrs in served.items() for a in addrs}
    assert set(r["greetings"]) == expected


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--probe":
    print(json.dumps(probe(sys.argv[2], sys.argv[3], sys.argv[4])))
