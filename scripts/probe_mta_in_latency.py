#!/usr/bin/env python3
"""Where a message's time goes on the mta-in -> LMTP -> store path: the
per-step latency of one SMTP session, alone and beside a load, and the
disk traffic per message.

Starts the same cluster as scripts/bench_mta_in.py (private slapd, one
store, one mta-in; cut-through as shipped) on a fresh journaled ext4 image
on a loop device (root needed), then:

1. `--alone` SMTP transactions (4 KiB) one after another from this
   script, each step timed (connect and banner, EHLO, MAIL, RCPT, DATA,
   the body up to the 250, QUIT); prints the median of each step;
2. smtp-source with `--sessions` sessions as load, and while it runs:
   the same timed transactions (`--beside`), then a window of
   `--window` seconds in which it counts the messages stored (IMAP
   STATUS) and the loop device's sectors and write requests
   (/sys/block/<loop>/stat): messages/s, KiB and write requests per
   message.

A probe, not a benchmark: it compares nothing and asserts nothing (the
ratios live in scripts/bench_mta_in.py and docs/benchmarks.md). Bounded:
every socket has a 30 s timeout, the load is killed at the end, every
process started is stopped and the image removed on exit.

    MSGD_BIN=target/release/msgd python3 scripts/probe_mta_in_latency.py
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_mta_in as bench  # noqa: E402  (cluster and image helpers)

STEPS = ("connect", "ehlo", "mail", "rcpt", "data", "body", "quit", "total")
BODY = b"Subject: probe\r\n\r\n" + (b"y" * 76 + b"\r\n") * 52 + b".\r\n"


def reply(s: socket.socket) -> bytes:
    """One whole SMTP reply (the last line has a space after the code)."""
    buf = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError(f"connection closed after {buf!r}")
        buf += chunk
        lines = buf.split(b"\r\n")
        if len(lines) >= 2 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" ":
            return buf


def transaction(port: int, times: dict[str, list[float]]) -> None:
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        r = reply(s)
        times["connect"].append(time.perf_counter() - t0)
        for step, line in (("ehlo", b"EHLO probe.test\r\n"),
                           ("mail", f"MAIL FROM:<{bench.SENDER}>\r\n".encode()),
                           ("rcpt", f"RCPT TO:<{bench.RCPT}>\r\n".encode()),
                           ("data", b"DATA\r\n"), ("body", BODY), ("quit", b"QUIT\r\n")):
            t1 = time.perf_counter()
            s.sendall(line)
            r = reply(s)
            times[step].append(time.perf_counter() - t1)
            if r[:1] not in (b"2", b"3"):
                raise RuntimeError(f"{step}: {r!r}")
    times["total"].append(time.perf_counter() - t0)


def timed(port: int, n: int) -> str:
    times: dict[str, list[float]] = {k: [] for k in STEPS}
    for _ in range(n):
        transaction(port, times)
    return "  ".join(f"{k} {1000 * statistics.median(v):.3f}" for k, v in times.items()) + "  (ms, medians)"


def loop_stat(mnt: Path) -> tuple[int, int]:
    """Sectors written and write requests of the loop device under `mnt`."""
    dev = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(mnt)], capture_output=True, text=True,
                         check=True).stdout.strip().split("/")[-1]
    f = Path(f"/sys/block/{dev}/stat").read_text().split()
    return int(f[6]), int(f[4])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alone", type=int, default=300)
    ap.add_argument("--beside", type=int, default=200)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--window", type=float, default=6.0)
    ap.add_argument("--store-sync", choices=("files", "filesystem"), default=None)
    args = ap.parse_args()
    if not os.environ.get("MSGD_BIN"):
        bench.die("set MSGD_BIN")
    if os.geteuid() != 0:
        bench.die("the probe mounts a fresh ext4 image on a loop device: run it as root")
    bench.STORE_SYNC = args.store_sync
    smtp_source = bench.find_smtp_source()
    mnt, holder = bench.scratch_fs()
    bench.use_folder(mnt)
    ldap = store = mta = load = counter = None
    try:
        ldap, store, mta = bench.start_cluster(Path(tempfile.mkdtemp(prefix="probe-")), 30, "warn")
        port = mta.ports["smtp"]
        print(f"alone:  {timed(port, args.alone)}")
        load = subprocess.Popen([smtp_source, "-c", "-l", "4096", "-m", "1000000", "-s", str(args.sessions),
                                 "-f", bench.SENDER, "-t", bench.RCPT, f"127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2.0)
        print(f"beside: {timed(port, args.beside)}  (smtp-source -s {args.sessions} running)")
        counter = bench.Counter(store)
        n0, d0, t0 = counter.count(), loop_stat(mnt), time.monotonic()
        time.sleep(args.window)
        n1, d1, t1 = counter.count(), loop_stat(mnt), time.monotonic()
        n = max(1, n1 - n0)
        print(f"load:   {n / (t1 - t0):.0f} messages/s stored; per message {(d1[0] - d0[0]) * 512 / 1024 / n:.1f} KiB "
              f"and {(d1[1] - d0[1]) / n:.2f} write requests to the disk")
    finally:
        if load is not None:
            load.kill()
            load.wait()
        if counter is not None:
            counter.close()
        bench.stop_cluster(ldap, store, mta, "probe")
        bench.drop_scratch_fs(mnt, holder)


if __name__ == "__main__":
    main()
