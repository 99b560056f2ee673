#!/usr/bin/env python3
"""Hostile load against one all-in-one msgd; see scripts/bench-hostile.sh.

Everything is bounded: the attack runs for --duration seconds, every client
coroutine is cancelled at the end, msgd is stopped (SIGTERM, then SIGKILL),
and the temporary data folder is removed unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DOMAIN = "example.test"
USER = f"bench@{DOMAIN}"
PASSWORD = "bench-hostile-pw"
PER_SOURCE = 50  # slowloris connections per 127.0.x.y source address


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def rss_of(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


class Stats:
    def __init__(self):
        self.slow_open = 0
        self.slow_peak = 0
        self.slow_refused = 0
        self.slow_dropped = 0
        self.bodies_ok = 0
        self.bodies_failed = 0
        self.imap_ms: list[float] = []
        self.smtp_ms: list[float] = []
        self.rss_max = 0
        self.rss_samples: list[int] = []


async def read_line(r: asyncio.StreamReader, timeout: float = 30) -> bytes:
    return await asyncio.wait_for(r.readline(), timeout)


async def smtp_reply(r) -> bytes:
    while True:
        line = await read_line(r, 120)
        if not line or line[3:4] != b"-":
            return line


async def slowloris(i: int, ports: dict, stats: Stats, every: float, stop: asyncio.Event):
    proto = ("imap", "smtp", "pop3")[i % 3]
    src = f"127.0.{1 + (i // PER_SOURCE) // 250}.{1 + (i // PER_SOURCE) % 250}"
    try:
        r, w = await asyncio.open_connection("127.0.0.1", ports[proto], local_addr=(src, 0))
    except OSError:
        stats.slow_refused += 1
        return
    opened = False
    try:
        greeting = await read_line(r)
        if not greeting or b"Too many" in greeting:
            stats.slow_refused += 1
            return
        opened = True
        stats.slow_open += 1
        stats.slow_peak = max(stats.slow_peak, stats.slow_open)
        data = {"imap": b"a1 LOGIN someone something-long", "smtp": b"EHLO slow.example.invalid",
                "pop3": b"USER someone@example.invalid"}[proto]
        k = 0
        while not stop.is_set():
            w.write(data[k % len(data):k % len(data) + 1])
            await w.drain()
            k += 1
            try:
                got = await asyncio.wait_for(r.read(512), every)
                if not got or b"BYE" in got or got.startswith((b"-ERR", b"421")):
                    stats.slow_dropped += 1
                    return
            except asyncio.TimeoutError:
                pass
    except (OSError, asyncio.TimeoutError):
        stats.slow_dropped += 1
    finally:
        if opened:
            stats.slow_open -= 1
        w.close()


async def body_sender(i: int, port: int, size: int, abort: bool, stats: Stats):
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        await smtp_reply(r)
        for cmd in (b"EHLO sender%d.example\r\n" % i, b"MAIL FROM:<s%d@remote.example>\r\n" % i,
                    f"RCPT TO:<{USER}>\r\n".encode(), b"DATA\r\n"):
            w.write(cmd)
            await w.drain()
            code = await smtp_reply(r)
        if not code.startswith(b"354"):
            stats.bodies_failed += 1
            return
        line = b"X" * 998 + b"\r\n"
        header = b"Subject: bench %d\r\nFrom: <s%d@remote.example>\r\n\r\n" % (i, i)
        w.write(header)
        sent = len(header)
        while sent < size:
            w.write(line * 64)
            sent += len(line) * 64
            await w.drain()
        if abort:
            stats.bodies_ok += 1
            w.close()
            return
        w.write(b".\r\n")
        await w.drain()
        reply = await smtp_reply(r)
        if reply.startswith(b"250"):
            stats.bodies_ok += 1
        else:
            stats.bodies_failed += 1
        w.write(b"QUIT\r\n")
        w.close()
    except (OSError, asyncio.TimeoutError):
        stats.bodies_failed += 1


async def normal_client(ports: dict, stats: Stats, stop: asyncio.Event):
    r, w = await asyncio.open_connection("127.0.0.1", ports["imap"])
    await read_line(r)

    async def imap(tag: bytes, cmd: bytes) -> float:
        t = time.monotonic()
        w.write(tag + b" " + cmd + b"\r\n")
        await w.drain()
        while True:
            line = await read_line(r, 60)
            if not line:
                raise EOFError("imap closed")
            if line.startswith(tag + b" "):
                return (time.monotonic() - t) * 1000

    await imap(b"l", f"LOGIN {USER} {PASSWORD}".encode())
    await imap(b"s", b"SELECT INBOX")
    n = 0
    while not stop.is_set():
        n += 1
        stats.imap_ms.append(await imap(b"n%d" % n, b"NOOP"))
        stats.imap_ms.append(await imap(b"f%d" % n, b"FETCH 1:* (FLAGS)"))
        t = time.monotonic()
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", ports["smtp"])
            await smtp_reply(sr)
            for cmd in (b"EHLO normal.example\r\n", b"MAIL FROM:<n@remote.example>\r\n",
                        f"RCPT TO:<{USER}>\r\n".encode(), b"RSET\r\n", b"QUIT\r\n"):
                sw.write(cmd)
                await sw.drain()
                await smtp_reply(sr)
            sw.close()
            stats.smtp_ms.append((time.monotonic() - t) * 1000 / 5)
        except (OSError, asyncio.TimeoutError):
            pass
        await asyncio.sleep(0.2)
    w.close()


async def sample_rss(pid: int, stats: Stats, stop: asyncio.Event):
    while not stop.is_set():
        v = rss_of(pid)
        stats.rss_samples.append(v)
        stats.rss_max = max(stats.rss_max, v)
        await asyncio.sleep(0.5)


async def quiet(args, ports) -> Stats:
    """The normal client alone, for the figures the attack is compared with."""
    stats = Stats()
    stop = asyncio.Event()
    task = asyncio.create_task(normal_client(ports, stats, stop))
    await asyncio.sleep(args.baseline)
    stop.set()
    await asyncio.wait([task], timeout=30)
    task.cancel()
    return stats


async def attack(args, ports, pid) -> Stats:
    stats = Stats()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(sample_rss(pid, stats, stop))]
    for i in range(args.slowloris):
        tasks.append(asyncio.create_task(slowloris(i, ports, stats, args.trickle, stop)))
        if i % 200 == 199:
            await asyncio.sleep(0.05)  # do not flood the accept queue
    tasks.append(asyncio.create_task(normal_client(ports, stats, stop)))
    senders = [asyncio.create_task(body_sender(i, ports["smtp"], args.body_mb << 20, args.abort, stats))
               for i in range(args.senders)]
    await asyncio.sleep(args.duration)
    stop.set()
    for t in senders:
        if not t.done():
            t.cancel()
    await asyncio.wait(tasks + senders, timeout=30)
    for t in tasks + senders:
        t.cancel()
    return stats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--slowloris", type=int, default=5000)
    ap.add_argument("--senders", type=int, default=200)
    ap.add_argument("--body-mb", type=int, default=10)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--trickle", type=float, default=5, help="seconds between slowloris bytes")
    ap.add_argument("--abort", action="store_true", help="drop each body before the final dot")
    ap.add_argument("--baseline", type=float, default=15,
                    help="seconds of the normal client alone before the attack")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    args.baseline = min(args.baseline, 120)
    args.slowloris = min(args.slowloris, 20000)
    args.senders = min(args.senders, 1000)
    args.duration = min(args.duration, 600)

    msgd = os.environ.get("MSGD_BIN") or str(Path(__file__).resolve().parents[1] / "target/release/msgd")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.slowloris + args.senders + 1000
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    root = Path(tempfile.mkdtemp(prefix="msgd-bench-hostile-"))
    names = ("smtp", "submission", "submissions", "lmtp", "imap", "imaps", "pop3", "pop3s")
    ports = dict(zip(names, free_ports(len(names))))
    conf = root / "msgd.toml"
    text = (f'[server]\nhostname = "mail.{DOMAIN}"\ndata_dir = "{root / "data"}"\ndomain = "{DOMAIN}"\n'
            '[log]\nlevel = "warn"\n[dns]\nnameservers = ["127.0.0.1:9"]\ntimeout = 2\n'
            '[listener.http]\nenabled = false\n')
    for n, p in ports.items():
        text += f'[listener.{n}]\nbind = ["127.0.0.1:{p}"]\n'
    conf.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGD_")}
    subprocess.run([msgd, "--config", str(conf), "user", "add", USER], input=PASSWORD + "\n",
                   text=True, check=True, capture_output=True, env=env, cwd=root)
    err = open(root / "msgd.stderr.log", "wb")
    proc = subprocess.Popen([msgd, "--config", str(conf)], stdout=subprocess.DEVNULL, stderr=err,
                            env=env, cwd=root)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", ports["imap"]), 1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"msgd did not start:\n{(root / 'msgd.stderr.log').read_text()}")
                time.sleep(0.2)
        # One message for the normal client's FETCH.
        s = socket.create_connection(("127.0.0.1", ports["smtp"]), 10)
        f = s.makefile("rwb")
        f.readline()
        for cmd in (b"EHLO b\r\n", b"MAIL FROM:<a@remote.example>\r\n", f"RCPT TO:<{USER}>\r\n".encode(),
                    b"DATA\r\n", b"Subject: first\r\n\r\nhello\r\n.\r\n", b"QUIT\r\n"):
            f.write(cmd)
            f.flush()
            while True:
                line = f.readline()
                if not line or line[3:4] != b"-":
                    break
        s.close()
        rss_idle = rss_of(proc.pid)
        base = asyncio.run(quiet(args, ports))
        started = time.monotonic()
        stats = asyncio.run(attack(args, ports, proc.pid))
        took = time.monotonic() - started
        alive = proc.poll() is None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        err.close()
    mb = 1 << 20
    print(f"command: {' '.join(sys.argv)}  (MSGD_BIN={msgd})")
    print(f"attack: {args.slowloris} slowloris (1 byte/{args.trickle:g}s), {args.senders} x {args.body_mb} MB "
          f"DATA{' (aborted)' if args.abort else ''}, {took:.0f}s")
    print(f"slowloris: peak held {stats.slow_peak}, refused {stats.slow_refused}, "
          f"dropped by server {stats.slow_dropped}")
    print(f"bodies: {stats.bodies_ok} {'sent' if args.abort else 'accepted'}, {stats.bodies_failed} failed or unfinished")
    for name, v, b in (("imap", stats.imap_ms, base.imap_ms), ("smtp", stats.smtp_ms, base.smtp_ms)):
        print(f"normal client {name}: quiet p50 {pct(b, 50):.1f} ms, p99 {pct(b, 99):.1f} ms ({len(b)} commands); "
              f"under attack p50 {pct(v, 50):.1f} ms, p99 {pct(v, 99):.1f} ms ({len(v)} commands)")
    print(f"msgd RSS: idle {rss_idle / mb:.0f} MB, max {stats.rss_max / mb:.0f} MB, "
          f"last {(stats.rss_samples or [0])[-1] / mb:.0f} MB; still running at the end: {alive}")
    if args.keep:
        print(f"kept: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
