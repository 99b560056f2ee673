#!/usr/bin/env python3
"""What the mmp costs: the same IMAP workload through `msgd --role mmp`
and straight at the store, logins per second, and resident memory per idle
proxied connection.

Driven by scripts/bench-mmp.sh (which builds --release first). Starts a
private slapd (tests/ldap/slapd.py) holding base.ldif plus `bench001...`
users on store1.test, one `msgd --role store` and one `msgd --role mmp`
(login_mode credentials, plaintext to the store: both paths are plaintext
on loopback, so the difference is the mmp), all on free loopback ports.
The client is this script (asyncio, raw IMAP), on the same machine.

Phases (each bounded by its duration or count; loopback only):

1. workload: `--clients` concurrent sessions, each its own user whose
   INBOX holds `--messages` messages of 4 KiB, repeating for `--duration`
   seconds: LOGIN, SELECT INBOX, FETCH 1:* (UID FLAGS RFC822.SIZE
   BODY.PEEK[HEADER]), FETCH 1:* BODY.PEEK[], STORE 1:* +/-FLAGS.SILENT
   (\\Seen), APPEND (4 KiB), UID STORE <new> +FLAGS.SILENT (\\Deleted),
   UID EXPUNGE <new>, LOGOUT: 9 commands per session. `--rounds` rounds,
   direct then through the mmp in odd rounds, the other way round in even
   ones (a drift of the machine's speed favours neither); the ratio is the median of the
   per-round ratios (neighbours in time: other load on the machine drifts).
   CPU seconds of store, mmp, slapd and this client per phase, from /proc,
   give the CPU cost per session, which other load disturbs less.
   `--haproxy` adds the peer to every round: the same workload through
   HAProxy in TCP mode in front of the store (a relay and nothing else),
   what relaying alone costs on this machine.
   `--mmp-cpus` gives the mmp CPUs of its own (the store, slapd and the
   client get the others, in both modes): the two-tier shape, where the
   mmp runs on machines of its own. Without it every process shares
   every CPU, so the mmp's CPU comes off the store's.
2. logins: `--login-clients` concurrent connect/LOGIN/LOGOUT loops for
   `--login-duration` seconds, direct and through the mmp.
3. idle: `--idle` connections through the mmp, each logged in (LOGIN) and
   then idle; VmRSS of the mmp (and the store) from /proc before and after;
   the difference divided by the count. Capped by the file-descriptor hard
   limit: the mmp holds two descriptors per proxied connection.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import statistics
import smtplib
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from conftest import free_ports, wait_for_ports  # noqa: E402
from tiers import Ldap, Node, short_tmpdir  # noqa: E402  (the two-tier test helpers)

PASSWORD = "bench-secret"
STORE = "store1.test"
TICK = os.sysconf("SC_CLK_TCK")
LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)\]")


def die(msg: str) -> None:
    print(f"bench-mmp: {msg}", file=sys.stderr)
    sys.exit(1)


def ssha(password: str) -> str:
    salt = os.urandom(8)
    return "{SSHA}" + base64.b64encode(hashlib.sha1(password.encode() + salt).digest() + salt).decode()


def users_ldif(n: int) -> str:
    out = []
    for i in range(1, n + 1):
        uid = f"bench{i:03d}"
        out.append(textwrap.dedent(f"""\
            dn: uid={uid},ou=people,dc=example,dc=test
            objectClass: inetOrgPerson
            objectClass: msgdMailUser
            uid: {uid}
            cn: Bench {i}
            sn: Bench
            mail: {uid}@example.test
            mailHost: {STORE}
            userPassword: {ssha(PASSWORD)}
            """))
    return "\n".join(out)


def message(to: str, i: int, size: int = 4096) -> bytes:
    head = (f"From: <bench@remote.example>\r\nTo: <{to}>\r\nSubject: bench message {i}\r\n"
            f"Message-ID: <bench.{i}.{os.urandom(6).hex()}@remote.example>\r\n"
            "Date: Sat, 28 Nov 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n")
    line = "the quick brown fox jumps over the lazy dog 0123456789 abcdefghij\r\n"
    body = line * ((size - len(head)) // len(line) + 1)
    return (head + body).encode()[:size - 2] + b"\r\n"


# --------------------------------------------------------------------------
# /proc


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class CpuMeter:
    def __init__(self, pids: dict[str, int]):
        self.pids = pids

    def snap(self) -> dict[str, float]:
        s = {name: cpu_s(pid) for name, pid in self.pids.items()}
        t = os.times()
        s["client"] = t.user + t.system
        return s


# --------------------------------------------------------------------------
# a small asyncio IMAP client


class Imap:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.r, self.w, self.n = reader, writer, 0

    @classmethod
    async def open(cls, port: int, source: str | None = None) -> "Imap":
        local = (source, 0) if source else None
        r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22, local_addr=local)
        c = cls(r, w)
        greeting = await r.readline()
        if not greeting.startswith(b"* OK"):
            raise RuntimeError(f"greeting {greeting!r}")
        return c

    async def response(self) -> bytes:
        line = await self.r.readline()
        if not line:
            raise EOFError("connection closed")
        while (m := LITERAL.search(line)) is not None:
            line += await self.r.readexactly(int(m.group(1)))
            more = await self.r.readline()
            if not more:
                raise EOFError("connection closed in a literal")
            line += more
        return line

    async def cmd(self, text: str, literal: bytes | None = None) -> bytes:
        """Sends one command; returns its tagged answer, which must be OK."""
        self.n += 1
        tag = f"a{self.n}".encode()
        if literal is None:
            self.w.write(tag + b" " + text.encode() + b"\r\n")
        else:
            self.w.write(tag + b" " + text.encode() + f" {{{len(literal)}}}\r\n".encode())
            await self.w.drain()
            cont = await self.r.readline()
            if not cont.startswith(b"+"):
                raise RuntimeError(f"{text}: no continuation: {cont!r}")
            self.w.write(literal + b"\r\n")
        await self.w.drain()
        while True:
            resp = await self.response()
            if resp.startswith(tag + b" "):
                if not resp.startswith(tag + b" OK"):
                    raise RuntimeError(f"{text.split()[0]}: {resp!r}")
                return resp

    async def close(self) -> None:
        self.w.close()
        try:
            await self.w.wait_closed()
        except OSError:
            pass


async def workload_session(port: int, user: str, append: bytes, flip: bool) -> int:
    c = await Imap.open(port)
    try:
        await c.cmd(f"LOGIN {user} {PASSWORD}")
        await c.cmd("SELECT INBOX")
        await c.cmd("FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER])")
        await c.cmd("FETCH 1:* BODY.PEEK[]")
        await c.cmd(f"STORE 1:* {'+' if flip else '-'}FLAGS.SILENT (\\Seen)")
        tagged = await c.cmd("APPEND INBOX (\\Seen)", append)
        m = APPENDUID.search(tagged)
        if m is None:
            raise RuntimeError(f"APPEND without APPENDUID: {tagged!r}")
        uid = m.group(1).decode()
        await c.cmd(f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)")
        await c.cmd(f"UID EXPUNGE {uid}")
        await c.cmd("LOGOUT")
        return 9
    finally:
        await c.close()


async def run_workload(port: int, users: list[str], duration: float) -> tuple[int, int, float]:
    """Returns (sessions, commands, seconds)."""
    deadline = time.monotonic() + duration
    counts = [0, 0]
    append = message("bench@example.test", 0)

    async def worker(user: str) -> None:
        flip = False
        while time.monotonic() < deadline:
            flip = not flip
            n = await workload_session(port, user, append, flip)  # not `+= await`: lost updates
            counts[1] += n
            counts[0] += 1

    t0 = time.monotonic()
    await asyncio.gather(*(worker(u) for u in users))
    return counts[0], counts[1], time.monotonic() - t0


async def run_logins(port: int, users: list[str], duration: float) -> tuple[int, float, list[float]]:
    deadline = time.monotonic() + duration
    latencies: list[float] = []

    async def worker(user: str) -> None:
        while time.monotonic() < deadline:
            t = time.monotonic()
            c = await Imap.open(port)
            try:
                await c.cmd(f"LOGIN {user} {PASSWORD}")
                await c.cmd("LOGOUT")
            finally:
                await c.close()
            latencies.append(time.monotonic() - t)

    t0 = time.monotonic()
    await asyncio.gather(*(worker(u) for u in users))
    return len(latencies), time.monotonic() - t0, latencies


async def open_idle(port: int, users: list[str], n: int, parallel: int = 64) -> list[Imap]:
    """n logged-in connections (client addresses spread over 127.0.1.x)."""
    sem = asyncio.Semaphore(parallel)
    conns: list[Imap] = []

    async def one(i: int) -> None:
        async with sem:
            c = await Imap.open(port, source=f"127.0.1.{1 + i % 200}")
            await c.cmd(f"LOGIN {users[i % len(users)]} {PASSWORD}")
            conns.append(c)

    await asyncio.gather(*(one(i) for i in range(n)))
    return conns


# --------------------------------------------------------------------------


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of `pid` onto `cpus` (threads made later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass


def cpu_split(spec: str) -> tuple[set[int], set[int]]:
    """`--mmp-cpus`: (the mmp's CPUs, the others' CPUs)."""
    have = os.sched_getaffinity(0)
    try:
        mine = {int(c) for c in spec.split(",")}
    except ValueError:
        die(f"--mmp-cpus {spec!r}: a comma-separated list of CPU numbers")
    rest = have - mine
    if not mine or not mine <= have or not rest:
        die(f"--mmp-cpus {spec}: must name some, not all, of the CPUs {sorted(have)}")
    return mine, rest


def start_on(node: Node, cpus: set[int] | None) -> None:
    """Starts `node` with as many runtime workers as `cpus` has (tokio
    counts the CPUs at start), then puts every thread of it there."""
    if cpus is None:
        node.start()
        return
    os.environ["TOKIO_WORKER_THREADS"] = str(len(cpus))
    try:
        node.start()
    finally:
        del os.environ["TOKIO_WORKER_THREADS"]
    pin(node.proc.pid, cpus)


class Haproxy:
    """HAProxy in TCP mode on a free loopback port, relaying to `target`."""

    def __init__(self, root: Path, target: int, cpus: set[int] | None):
        exe = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
        if exe is None:
            die("--haproxy: haproxy is missing; install it with scripts/install-test-deps.sh "
                "(apt-get install -y haproxy)")
        self.port = free_ports(1)[0]
        cfg = root / "haproxy.cfg"
        # Threads as many as its CPUs (HAProxy's own default), started there.
        threads = len(cpus) if cpus else len(os.sched_getaffinity(0))
        cfg.write_text(textwrap.dedent(f"""\
            global
                maxconn 4000
                nbthread {threads}
            defaults
                mode tcp
                timeout connect 5s
                timeout client 60s
                timeout server 60s
            frontend imap
                bind 127.0.0.1:{self.port}
                default_backend store
            backend store
                server store1 127.0.0.1:{target}
            """))
        self.log = open(root / "haproxy.log", "wb")
        self.proc = subprocess.Popen([exe, "-db", "-f", str(cfg)], stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        self.pid = self.proc.pid
        # Stopped by it if it never listens.
        wait_for_ports(self.proc, [self.port], 10, lambda: (root / "haproxy.log").read_text()[-2000:], "haproxy")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def machine() -> str:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) // 1024} MiB RAM"
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), {mem}, Linux {platform.release()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8, help="concurrent workload sessions (default 8)")
    ap.add_argument("--messages", type=int, default=20, help="messages of 4 KiB per INBOX (default 20)")
    ap.add_argument("--duration", type=float, default=6, help="seconds per workload round and mode (default 6)")
    ap.add_argument("--rounds", type=int, default=4,
                    help="workload rounds, direct then mmp in odd rounds, the other way in even ones; an even "
                         "number balances the order (default 4)")
    ap.add_argument("--login-clients", type=int, default=20, help="concurrent login loops (default 20)")
    ap.add_argument("--login-duration", type=float, default=10, help="seconds per login phase (default 10)")
    ap.add_argument("--idle", type=int, default=10000, help="idle proxied connections (default 10000)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--strace", action="store_true",
                    help="strace -f -c the store (both modes) and the mmp during the workload rounds: syscalls per session (slows them: "
                         "the rates of such a run mean nothing)")
    ap.add_argument("--perf-record", metavar="FILE",
                    help="perf record -g store, mmp and slapd during each workload round into FILE.MODE.ROUND "
                         "(for perf report --pid)")
    ap.add_argument("--mmp-cpus", metavar="LIST",
                    help="CPUs for the mmp alone (e.g. 1 or 2,3), the store, slapd and this client on the others: "
                         "the two-tier shape, where the mmp runs on machines of its own, so its CPU comes off "
                         "nobody's; without it all share every CPU (the mmp's CPU comes off the store's)")
    ap.add_argument("--haproxy", action="store_true",
                    help="the peer: the same workload rounds through HAProxy in TCP mode in front of the store "
                         "(a relay and nothing else: no directory, no login, a new store connection per session), "
                         "what any proxy's relaying costs on this machine")
    args = ap.parse_args()
    if args.rounds % 2:
        print(f"note: {args.rounds} rounds: with an odd number direct goes first once more than the mmp")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by msgd
    idle = args.idle
    cap = (hard - 200) // 2
    if idle > cap:
        print(f"note: open-files hard limit {hard}: the mmp holds 2 descriptors per proxied connection, "
              f"so the idle phase uses {cap} connections instead of {idle}")
        idle = cap

    n_users = max(args.clients, args.login_clients)
    users = [f"bench{i:03d}@example.test" for i in range(1, n_users + 1)]
    root = short_tmpdir("msgd-bench-mmp-")
    ldap = Ldap(root / "ldap", extra_ldif=users_ldif(n_users))
    limits = textwrap.dedent("""\
        [limits]
        max_connections = 30000
        max_connections_per_ip = 30000
        """)
    store = Node(root / "store", "store", STORE, ldap, limits + textwrap.dedent(f"""\
        [store]
        host = "{STORE}"
        min_free_disk = 1048576
        """), ldap_pools=(8, 4), listeners=("lmtp", "imap"))
    mmp = Node(root / "mmp", "mmp", "mmp.test", ldap, limits + textwrap.dedent(f"""\
        [mmp]
        backend_tls = "none"
        imap_backends = {{ "{STORE}" = "127.0.0.1:{store.ports['imap']}" }}
        max_login_failures_per_ip = 0
        max_login_failures_per_user = 0
        """), ldap_pools=(8, 4), listeners=("imap",))
    nodes = [store, mmp]
    haproxy: Haproxy | None = None
    try:
        try:
            ldap.start()
            # With --mmp-cpus: the store on the others' CPUs, the mmp on
            # its own, each with a runtime of that many workers.
            split = cpu_split(args.mmp_cpus) if args.mmp_cpus else None
            start_on(store, split[1] if split else None)
            start_on(mmp, split[0] if split else None)
        except BaseException as e:  # tiers reports with pytest.fail
            die(f"cannot start the servers: {e}")
        print(f"machine: {machine()}")
        print(f"msgd: {os.environ.get('MSGD_BIN')}, folder {root}")

        # fill the INBOXes
        with smtplib.LMTP("127.0.0.1", store.ports["lmtp"], local_hostname="bench.example", timeout=60) as lmtp:
            for u in users[:args.clients]:
                for i in range(args.messages):
                    refused = lmtp.sendmail("bench@remote.example", [u], message(u, i))
                    if refused:
                        die(f"LMTP refused {refused}")
        pids = {"store": store.proc.pid, "mmp": mmp.proc.pid, "slapd": ldap.inst.proc.pid}
        ports = {"direct": store.ports["imap"], "mmp": mmp.ports["imap"]}
        if args.haproxy:
            # A front end too: with --mmp-cpus it gets the mmp's CPUs.
            haproxy = Haproxy(root, store.ports["imap"], split[0] if split else None)
            pids["haproxy"] = haproxy.pid
            ports["haproxy"] = haproxy.port
        if split:
            # slapd and this client (and so perf and strace, started by it)
            # beside the store.
            for pid in (ldap.inst.proc.pid, os.getpid()):
                pin(pid, split[1])
            print(f"CPUs: the mmp (and HAProxy) on {sorted(split[0])}; store, slapd and this client on "
                  f"{sorted(split[1])}, each msgd with as many runtime workers as its CPUs")
        meter = CpuMeter(pids)

        # 1. workload
        modes = ["direct", "mmp"] + (["haproxy"] if args.haproxy else [])
        rates: dict[str, list[float]] = {m: [] for m in modes}
        totals = {m: {"sessions": 0, "commands": 0, "store": 0.0, "mmp": 0.0, "slapd": 0.0, "client": 0.0,
                      "haproxy": 0.0} for m in rates}
        asyncio.run(run_workload(ports["mmp"], users[:args.clients], 2))  # warm-up
        for rnd in range(1, args.rounds + 1):
            # odd rounds direct first, even rounds the mmp first (ABBA):
            # a trend in the machine's speed, or work one mode leaves
            # behind for the next, does not favour either mode
            for mode in (modes if rnd % 2 else modes[::-1]):
                perf = None
                if args.perf_record:
                    perf = subprocess.Popen(["perf", "record", "-g", "-q", "-o", f"{args.perf_record}.{mode}.{rnd}",
                                             "-p", ",".join(str(p) for p in pids.values())],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(0.5)
                traces = []
                if args.strace:
                    # The store in both modes (what the mmp changes for it),
                    # the mmp in its own.
                    who = {"store": store.proc.pid}
                    if mode == "mmp":
                        who["mmp"] = mmp.proc.pid
                    for name, pid in who.items():
                        out = root / f"strace-{name}-{mode}-{rnd}.txt"
                        traces.append((name, out, subprocess.Popen(
                            ["strace", "-f", "-c", "-o", str(out), "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
                    time.sleep(1.0)
                before = meter.snap()
                sessions, cmds, secs = asyncio.run(run_workload(ports[mode], users[:args.clients], args.duration))
                after = meter.snap()
                if perf is not None:
                    perf.send_signal(signal.SIGINT)
                    perf.wait(timeout=60)
                for name, out, trace in traces:
                    trace.send_signal(signal.SIGINT)
                    trace.wait(timeout=60)
                    calls = {}
                    for line in out.read_text().splitlines():
                        f = line.split()
                        if len(f) >= 5 and f[0][0].isdigit() and f[3].isdigit():
                            calls[f[-1]] = int(f[3])
                    top = sorted((k for k in calls if k != "total"), key=lambda k: -calls[k])[:10]
                    print(f"{name} syscalls per session ({mode}, round {rnd}, {sessions} sessions): "
                          + ", ".join(f"{k} {calls.get(k, 0) / max(1, sessions):.1f}" for k in ["total", *top]))
                cpu = {k: after[k] - before[k] for k in after}
                rates[mode].append(cmds / secs)
                totals[mode]["commands"] += cmds
                totals[mode]["sessions"] += sessions
                for k, v in cpu.items():
                    totals[mode][k] += v
                print(f"workload {mode:6} round {rnd}: {sessions} sessions, {cmds} commands in {secs:.1f}s = "
                      f"{cmds / secs:.0f} commands/s, {sessions / secs:.1f} sessions/s; CPU s: "
                      + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
        # rounds alternate, so each ratio compares neighbours in time (the
        # machine's other load drifts)
        ratio = statistics.median(m / d for m, d in zip(rates["mmp"], rates["direct"]))
        direct_rate, mmp_rate = statistics.median(rates["direct"]), statistics.median(rates["mmp"])

        def ms_per_session(mode: str, proc: str) -> float:
            return totals[mode][proc] * 1000 / max(1, totals[mode]["sessions"])

        print(f"workload median commands/s: direct {direct_rate:.0f}, through the mmp {mmp_rate:.0f}; "
              f"median per-round ratio mmp/direct {ratio:.2f}")
        print(f"workload CPU ms per session: direct: store {ms_per_session('direct', 'store'):.2f}, "
              f"slapd {ms_per_session('direct', 'slapd'):.2f}; through the mmp: store "
              f"{ms_per_session('mmp', 'store'):.2f}, mmp {ms_per_session('mmp', 'mmp'):.2f}, "
              f"slapd {ms_per_session('mmp', 'slapd'):.2f}")
        # What a saturated machine would give: the same sessions cost this
        # much CPU in all (servers and this client) each way. Other load
        # slows both modes' processes alike, so this moves less than the
        # rates.
        # With --mmp-cpus the mmp's CPU is its own: what bounds the rest is
        # the CPU of the others.
        shared = ("store", "slapd", "client") if args.mmp_cpus else ("store", "mmp", "haproxy", "slapd", "client")
        cpu_all = {m: sum(ms_per_session(m, p) for p in shared) for m in rates}
        print(f"workload CPU ms per session, {'all but the mmp' if args.mmp_cpus else 'all processes'}: "
              f"direct {cpu_all['direct']:.2f}, through the mmp {cpu_all['mmp']:.2f}; "
              f"CPU-bound ratio mmp/direct {cpu_all['direct'] / max(cpu_all['mmp'], 1e-9):.2f}")
        if args.haproxy:
            h_ratio = statistics.median(h / d for h, d in zip(rates["haproxy"], rates["direct"]))
            print(f"workload through HAProxy (TCP relay): median commands/s {statistics.median(rates['haproxy']):.0f}; "
                  f"median per-round ratio haproxy/direct {h_ratio:.2f}; CPU ms per session: store "
                  f"{ms_per_session('haproxy', 'store'):.2f}, haproxy {ms_per_session('haproxy', 'haproxy'):.2f}, "
                  f"slapd {ms_per_session('haproxy', 'slapd'):.2f}; CPU-bound ratio haproxy/direct "
                  f"{cpu_all['direct'] / max(cpu_all['haproxy'], 1e-9):.2f}")

        # Per command (load-independent, unlike the rates): CPU of each
        # process per 1,000 commands of the workload (LOGIN included).
        for mode in ("direct", "mmp"):
            k = max(1, totals[mode]["commands"]) / 1000
            print(f"workload CPU s per 1,000 commands, {mode}: "
                  + ", ".join(f"{p} {totals[mode][p] / k:.3f}" for p in ("store", "mmp", "slapd")))

        # 2. logins
        login_rates = {}
        for mode in ("direct", "mmp"):
            before = meter.snap()
            n, secs, lat = asyncio.run(run_logins(ports[mode], users[:args.login_clients], args.login_duration))
            after = meter.snap()
            cpu = {k: after[k] - before[k] for k in after}
            login_rates[mode] = n / secs
            print(f"logins {mode:6}: {n} in {secs:.1f}s = {n / secs:.0f} logins/s "
                  f"({args.login_clients} clients; latency p50 {pct(lat, 50) * 1000:.1f} ms, "
                  f"p99 {pct(lat, 99) * 1000:.1f} ms); CPU ms per login: "
                  + ", ".join(f"{k} {v * 1000 / max(1, n):.2f}" for k, v in cpu.items()))

        # 3. idle connections
        time.sleep(2)
        mmp_before, store_before = rss_kib(mmp.proc.pid), rss_kib(store.proc.pid)
        fds_before = fd_count(mmp.proc.pid)
        t0 = time.monotonic()

        async def idle_phase():
            conns = await open_idle(ports["mmp"], users, idle)
            opened = time.monotonic() - t0
            await asyncio.sleep(3)
            mmp_after, store_after = rss_kib(mmp.proc.pid), rss_kib(store.proc.pid)
            fds = fd_count(mmp.proc.pid) - fds_before
            for c in conns:
                c.w.close()
            await asyncio.sleep(3)
            released = rss_kib(mmp.proc.pid), fd_count(mmp.proc.pid) - fds_before
            # a second batch: does the memory of the first get reused (freed
            # to the allocator, which keeps it) or does it grow (a leak)?
            conns = await open_idle(ports["mmp"], users, idle)
            await asyncio.sleep(3)
            again = rss_kib(mmp.proc.pid)
            for c in conns:
                c.w.close()
            await asyncio.sleep(2)
            return opened, mmp_after, store_after, fds, len(conns), released, again

        opened, mmp_after, store_after, fds, n, released, again = asyncio.run(idle_phase())
        per_mmp = (mmp_after - mmp_before) * 1024 / n
        per_store = (store_after - store_before) * 1024 / n
        print(f"idle: {n} logged-in connections through the mmp opened in {opened:.1f}s "
              f"({n / opened:.0f}/s); mmp fds +{fds}")
        print(f"idle: mmp VmRSS {mmp_before} KiB -> {mmp_after} KiB = {per_mmp / 1024:.1f} KiB per connection; "
              f"all closed: {released[0]} KiB (fds +{released[1]}); a second batch of {n}: {again} KiB")
        print(f"idle: store VmRSS {store_before} KiB -> {store_after} KiB = {per_store / 1024:.1f} KiB per "
              f"connection (logged in, nothing selected)")
        print("summary: | {:.0f} | {:.0f} | {:.2f} | {:.2f} | {:.0f} | {:.0f} | {} | {:.1f} | {:.1f} |".format(
            direct_rate, mmp_rate, ratio, ms_per_session("mmp", "mmp"), login_rates["direct"], login_rates["mmp"], n,
            per_mmp / 1024, per_store / 1024))
        for node in nodes:
            node.stop(timeout=60)
    finally:
        if haproxy is not None:
            haproxy.stop()
        for node in nodes:
            node.cleanup()
        if ldap.running:
            ldap.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
