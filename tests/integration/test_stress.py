"""`msgd stress` against the real binary: concurrent IMAP clients on shared
mailboxes, every response checked against a model of the mailbox and a
ledger of acknowledged messages (src/stress/). A violation makes it exit 1
and print the violation with the client's last exchanges."""

from __future__ import annotations

import re
import subprocess

from conftest import msgd_bin, msgd_env

USERS = ("stress1@example.test", "stress2@example.test")


def run_stress(server, *extra: str, duration: int = 20, clients: int = 8,
               port: str = "imap", timeout: float = 150) -> subprocess.CompletedProcess:
    users = ",".join(f"{u}:{server.passwords[u]}" for u in USERS)
    args = [msgd_bin(), "stress", "--host", "127.0.0.1", "--port", str(server.ports[port]),
            "--users", users, "--clients", str(clients), "--duration", str(duration), *extra]
    return subprocess.run(args, capture_output=True, text=True, encoding="utf-8", errors="replace",
                          timeout=timeout, env=msgd_env())


def commands_per_second(out: str) -> float:
    mo = re.search(r"stress: (\d+) commands in [\d.]+ s = (\d+) commands/s", out)
    assert mo, f"no throughput line in the output:\n{out[-3000:]}"
    assert int(mo.group(1)) > 0, "no commands were run"
    return float(mo.group(2))


def assert_clean(res: subprocess.CompletedProcess, what: str) -> str:
    out = res.stdout
    assert res.returncode == 0 and "stress: result OK" in out, (
        f"{what}: msgd stress exited {res.returncode}\n--- stdout ---\n{out[-20000:]}\n"
        f"--- stderr ---\n{res.stderr[-3000:]}"
    )
    return out


def test_rfc3501_consistency_under_concurrent_clients(server):
    """8 clients, 2 accounts, 3 shared mailboxes each, 20 s of random
    APPEND/FETCH/STORE/COPY/MOVE/EXPUNGE/CLOSE/IDLE/SEARCH/NOOP: no
    violation, and the per-command report lists the commands run."""
    res = run_stress(server, duration=20, clients=8)
    out = assert_clean(res, "stress")
    assert commands_per_second(out) > 0
    for command in ("APPEND", "FETCH", "STORE", "EXPUNGE", "NOOP", "SELECT"):
        assert re.search(rf"^{command}\s+\d+\s", out, re.M), f"no {command} line in the report:\n{out}"
    mo = re.search(r"appended (\d+), copied (\d+), moved (\d+), expunges seen (\d+), verifications (\d+)", out)
    assert mo, out
    appended, copied, moved, expunged, verified = map(int, mo.groups())
    assert appended > 0 and expunged > 0 and verified > 0, f"too little happened: {mo.group(0)}"


def test_rfc3501_consistency_over_implicit_tls_and_starttls(server):
    """A short run over IMAPS (trusting the generated certificate) and one
    over STARTTLS."""
    ca = str(server.cert_path)
    res = run_stress(server, "--tls", "--ca", ca, duration=5, clients=4, port="imaps")
    commands_per_second(assert_clean(res, "stress --tls"))
    res = run_stress(server, "--starttls", "--ca", ca, duration=5, clients=4, port="imap")
    commands_per_second(assert_clean(res, "stress --starttls"))


def test_session_workload_reports_latency_per_command(server):
    """The benchmark's workload (login, select, fetch headers and bodies,
    store, append, expunge, logout) runs clean and reports p50/p99."""
    res = run_stress(server, "--workload", "sessions", duration=5, clients=4)
    out = assert_clean(res, "stress --workload sessions")
    for command in ("LOGIN", "SELECT", "FETCH", "APPEND", "LOGOUT"):
        mo = re.search(rf"^{command}\s+(\d+)\s+[\d.]+\s+([\d.]+)\s+([\d.]+)", out, re.M)
        assert mo, f"no {command} latency line:\n{out}"
        count, p50, p99 = int(mo.group(1)), float(mo.group(2)), float(mo.group(3))
        assert count > 0 and 0 < p50 <= p99, mo.group(0)


def test_idle_connections_mode(server):
    """--idle-conns opens, holds and logs out N logged-in connections."""
    res = run_stress(server, "--idle-conns", "20", duration=1)
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert "idle: 20 connections logged in, selected and in IDLE" in res.stdout, res.stdout
    assert "idle: 20 connections logged out" in res.stdout, res.stdout


def test_refuses_non_loopback_target(server):
    """Loopback only: another address is a usage error (exit 2), nothing sent."""
    args = [msgd_bin(), "stress", "--host", "192.0.2.1", "--port", "143",
            "--users", "a@b:c", "--duration", "1"]
    res = subprocess.run(args, capture_output=True, text=True, timeout=30, env=msgd_env())
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "loopback" in res.stderr
