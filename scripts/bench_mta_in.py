#!/usr/bin/env python3
"""Throughput of mta-in -> LMTP -> store with the LDAP directory, side by
side with Postfix on the same path.

Driven by scripts/bench-mta-in.sh (which builds --release first unless
MSGD_BIN is set). Starts a private slapd (tests/ldap/slapd.py, operations
logged at `stats` level), one `msgd --role store` (store.host = store2.test,
where frank lives: no quota) and one `msgd --role mta-in` on free loopback
ports, then for each scenario runs Postfix's smtp-source with 10 concurrent
sessions against mta-in and waits until every message is in frank's INBOX
(IMAP STATUS).

Postfix side (unless --no-postfix; needs root): for the same scenario, fresh
slapd and store again, and instead of mta-in a private Postfix instance
(tests/integration/tiers.py `Postfix`: its own config, queue and data
folders in a temp dir, smtpd on a free 127.0.0.1 port, example.test relayed
with `relay_transport = lmtp:inet:127.0.0.1:<store's LMTP port>`). Both paths
end in the same kind of store with the same durability: Postfix's cleanup
fsyncs the queue file before smtpd's 250, msgd's mta-in fsyncs its queue file
and folder; the store fsyncs before its LMTP 250 either way. The same
smtp-source command (sizes, counts, sessions) runs against each.

The store runs with its defaults; `--store-sync files|filesystem` sets
its `store.sync` (docs/store.md "Write path"), for both sides.

msgd's mta-in runs with its defaults (cut-through: the store's copy
durable before the 250, no queue file when the store takes it);
`--queue-first` adds the side "msgd-queue" with `queue.cut_through =
false` (every message fsynced into the mta-in's queue before the 250,
then delivered from there, as Postfix does).

Per scenario and side it prints: messages/s end to end (first SMTP
connection to last message in the store), messages/s accepted (smtp-source's
own run time), LDAP operations per message counted from slapd's log (SRCH
lines; msgd keeps cache counters but does not expose them), messages left in
the queue, and the ratios msgd/Postfix.

Per-operation figures (`--syscalls`, msgd side only; these do not depend
on the machine's other load, unlike the rates): CPU seconds of mta-in and
store per 1,000 messages (utime + stime from /proc/PID/stat around the run),
and, with strace attached to both processes (`strace -f -c`: this slows
them down, so the rates of such a run mean nothing), syscalls per message
for each process: fsync, fdatasync, sync_file_range, and all syscalls.

Where: by default (as root) every folder of the run (slapd, stores, mta-in
queue, Postfix's instance) is on a fresh ext4 filesystem with its journal
(mkfs.ext4 defaults, a sparse 8 GiB image on a loop device, unmounted and
deleted at the end): the same for both sides, what a mail server runs on,
and no state left over from earlier runs. `--fs tmp` runs in /tmp as it is
(this machine's root is ext4 without a journal; see below).

Work folders (the stores' mailboxes, the queues, Postfix's instance) are
removed only after the last scenario: removing thousands of files makes
creating files slow for the next ~30 s on ext4 without a journal (its
inode allocator skips inodes freed in the last 30 s), which would handicap
whichever side runs next.

Bounded: every scenario has a deadline (BENCH_TIMEOUT seconds, default 300)
and fails rather than hanging; everything started is stopped on exit
(`postfix -c DIR stop`, then `abort` and SIGKILL if the master is still
there after 15 s), also on SIGTERM/SIGHUP. Loopback only.
"""

from __future__ import annotations

import argparse
import imaplib
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

import tiers  # noqa: E402
from tiers import Ldap, Node, Postfix  # noqa: E402  (reuses the two-tier test helpers)

RCPT = "frank@example.test"
PASSWORD = "frank-secret"
SENDER = "bench@remote.example"
SMTP_SOURCE_INSTALL = (
    'echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; '
    "DEBIAN_FRONTEND=noninteractive apt-get install -y postfix"
)


def die(msg: str) -> None:
    print(f"bench-mta-in: {msg}", file=sys.stderr)
    sys.exit(1)


def find_smtp_source() -> str:
    for p in ("/usr/sbin/smtp-source", "/usr/bin/smtp-source"):
        if os.access(p, os.X_OK):
            return p
    p = shutil.which("smtp-source")
    if p is None:
        die(f"smtp-source (package postfix) is missing: {SMTP_SOURCE_INSTALL}")
    return p


class Counter:
    """One IMAP session to the store (one login: its LDAP searches do not
    blur the per-message count), polled with STATUS."""

    def __init__(self, store: Node):
        self.m = imaplib.IMAP4("127.0.0.1", store.ports["imap"], timeout=30)
        self.m.login(RCPT, PASSWORD)

    def count(self) -> int:
        typ, data = self.m.status("INBOX", "(MESSAGES)")
        if typ != "OK":
            raise RuntimeError(f"STATUS failed: {data}")
        return int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))

    def close(self) -> None:
        try:
            self.m.logout()
        except Exception:
            pass


def ldap_ops(ldap: Ldap) -> dict[str, int]:
    """Operations slapd has logged so far (stats level)."""
    log = Path(ldap.inst.dir) / "slapd.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return {
        "search": len(re.findall(r" SRCH base=", text)),
        "bind": len(re.findall(r" BIND dn=", text)),
        "whoami": len(re.findall(r" EXT oid=1\.3\.6\.1\.4\.1\.4203\.1\.11\.3", text)),
        "connections": len(re.findall(r" ACCEPT from ", text)),
    }


# `store.sync` for the store of every side (None: msgd's default); --store-sync
STORE_SYNC: str | None = None


def start_cluster(work: Path, cache_ttl: int, log_level: str, with_mta: bool = True,
                  cut_through: bool = True):
    """slapd + store, and mta-in unless `with_mta` is false (the Postfix
    side: Postfix takes mta-in's place). Returns (ldap, store, mta or None).
    `cut_through` false: side msgd-queue (`queue.cut_through`)."""
    ldap = Ldap(work / "ldap", debug="stats")
    ldap.start()
    store_toml = (
        '[store]\nhost = "store2.test"\nmin_free_disk = 1048576\n'
        + (f'sync = "{STORE_SYNC}"\n' if STORE_SYNC else "")
        + '[store.partition.secondary]\npath = "partition/secondary"\n'
    )
    store = Node(work / "store", "store", "store2.test", ldap, store_toml, log_level=log_level,
                 cache_ttl=cache_ttl)
    mta_toml = (
        f'[mta]\nhosts = {{ "store2.test" = "127.0.0.1:{store.ports["lmtp"]}" }}\n'
        "[queue]\nretry_base = 1\nretry_max = 2\nlifetime = 3600\ndelay_warning = 3600\n"
        f"cut_through = {'true' if cut_through else 'false'}\n"
    )
    mta = Node(work / "mta-in", "mta-in", "mx.example.test", ldap, mta_toml, log_level=log_level,
               cache_ttl=cache_ttl)
    store.start()
    if not with_mta:
        return ldap, store, None
    mta.start()
    return ldap, store, mta


# Postfix's queue folders that hold messages not yet delivered
POSTFIX_QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")


def start_postfix(store: Node) -> Postfix:
    """A private Postfix relaying example.test to the store by LMTP. The
    tiers helper turns LMTP connection caching off for its test; the
    benchmark gives Postfix its default (cache on demand) so both sides may
    reuse connections."""
    pf = Postfix(f"lmtp:inet:127.0.0.1:{store.ports['lmtp']}")
    with open(pf.config_dir / "main.cf", "a") as f:
        f.write("lmtp_connection_cache_on_demand = yes\n")
    return pf


def postfix_queue_left(pf: Postfix) -> int:
    n = 0
    for q in POSTFIX_QUEUES:
        for _dirpath, _dirs, files in os.walk(pf.queue_dir / q):
            n += len(files)
    return n


def scratch_fs() -> tuple[Path, Path]:
    """A fresh journaled ext4 on a loop device (module doc); returns the
    mount point and the folder holding it and the image."""
    holder = Path(tempfile.mkdtemp(prefix="msgd-bench-fs-", dir="/tmp"))
    holder.chmod(0o755)  # Postfix runs as user postfix
    image, mnt = holder / "fs.img", holder / "m"
    mnt.mkdir()
    subprocess.run(["truncate", "-s", "8G", str(image)], check=True)
    # Inode tables and journal initialised now, not by a kernel thread
    # writing them during the first scenario.
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image)],
                   check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    mnt.chmod(0o755)
    return mnt, holder


def drop_scratch_fs(mnt: Path, holder: Path) -> None:
    r = subprocess.run(["umount", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    shutil.rmtree(holder, ignore_errors=True)


def use_folder(base: Path) -> None:
    """Every work folder of this run (ours and the tiers helpers') under `base`."""
    tempfile.tempdir = str(base)

    def short_tmpdir(prefix: str) -> Path:
        d = Path(tempfile.mkdtemp(prefix=prefix, dir=str(base)))
        d.chmod(0o755)
        return d

    tiers.short_tmpdir = short_tmpdir


# Folders to remove after the last scenario (module doc).
REMOVE_AT_END: list[Path] = []


def remove_at_end() -> None:
    while REMOVE_AT_END:
        shutil.rmtree(REMOVE_AT_END.pop(), ignore_errors=True)


def stop_postfix(pf: Postfix, keep: bool) -> None:
    """`postfix stop` (bounded inside Postfix.stop), then `postfix abort`
    and SIGKILL to the master if it is still there; removes its folders
    unless `keep`."""
    pid_file = pf.queue_dir / "pid" / "master.pid"
    pid = None
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        pass
    try:
        pf.stop()
    except BaseException as e:  # tiers uses pytest.fail; TimeoutExpired
        print(f"bench-mta-in: postfix stop: {e}", file=sys.stderr)
    if pid is not None and pid_alive(pid):
        print(f"bench-mta-in: postfix master {pid} still running after stop; aborting", file=sys.stderr)
        try:
            pf.run("abort", check=False)
        except BaseException as e:
            print(f"bench-mta-in: postfix abort: {e}", file=sys.stderr)
        deadline = time.monotonic() + 5
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    if keep:
        print(f"bench-mta-in: kept the Postfix folders in {pf.root}", file=sys.stderr)
    else:
        REMOVE_AT_END.append(pf.root)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


TICK = os.sysconf("SC_CLK_TCK")
COUNTED = ("fsync", "fdatasync", "sync_file_range", "openat", "write", "writev", "read", "sendto", "recvfrom",
           "futex", "epoll_wait")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def start_strace(pid: int, out: Path) -> subprocess.Popen:
    if shutil.which("strace") is None:
        die("strace is missing: apt-get install -y strace")
    p = subprocess.Popen(["strace", "-f", "-c", "-o", str(out), "-p", str(pid)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached to every thread before the run starts
    return p


def stop_strace(p: subprocess.Popen, out: Path) -> dict[str, int]:
    """Calls per syscall name from `strace -c`'s table (and "total")."""
    p.send_signal(signal.SIGINT)
    p.wait(timeout=30)
    calls: dict[str, int] = {}
    for line in out.read_text().splitlines():
        f = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(f) >= 5 and f[0][0].isdigit() and f[3].isdigit():
            calls[f[-1]] = int(f[3])
    return calls


def run_scenario(side: str, smtp_source: str, size: int, count: int, sessions: int, cache_ttl: int,
                 timeout: float, log_level: str, keep: bool, syscalls: bool = False) -> dict:
    """One scenario with fresh processes. side "msgd": smtp-source -> mta-in
    -> LMTP -> store as shipped (cut-through: the store's copy before the
    250, the queue only for what it did not take); "msgd-queue": the same
    with `queue.cut_through = false` (queued first); "postfix":
    smtp-source -> Postfix -> LMTP -> store."""
    work = Path(tempfile.mkdtemp(prefix="msgd-bench-"))
    ldap = store = mta = pf = counter = None
    try:
        ldap, store, mta = start_cluster(work, cache_ttl, log_level, with_mta=(side != "postfix"),
                                         cut_through=(side != "msgd-queue"))
        if side == "postfix":
            pf = start_postfix(store)
            pf.start()
            port = pf.port
        else:
            port = mta.ports["smtp"]
        counter = Counter(store)
        before_count = counter.count()
        ops_before = ldap_ops(ldap)
        cmd = [smtp_source, "-c", "-l", str(size), "-m", str(count), "-s", str(sessions),
               "-f", SENDER, "-t", RCPT, f"127.0.0.1:{port}"]
        procs = {"store": store.proc.pid}
        if mta is not None:
            procs["mta-in"] = mta.proc.pid
        traces = {}
        if syscalls:
            traces = {name: (start_strace(pid, work / f"strace-{name}.txt"), work / f"strace-{name}.txt")
                      for name, pid in procs.items()}
        cpu_before = {name: cpu_s(pid) for name, pid in procs.items()}
        t0 = time.monotonic()
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        t_accepted = time.monotonic() - t0
        if res.returncode != 0:
            raise RuntimeError(f"{side}: smtp-source exited {res.returncode}: {res.stderr[-2000:]}")
        deadline = t0 + timeout
        seen = before_count
        while True:
            seen = counter.count() - before_count
            if seen >= count:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{side}: only {seen}/{count} messages in the store after {timeout:.0f}s")
            time.sleep(0.1)
        t_stored = time.monotonic() - t0
        time.sleep(1.0)  # the queue removes the last files after the store's 250
        cpu = {name: cpu_s(pid) - cpu_before[name] for name, pid in procs.items()}
        calls = {name: stop_strace(p, out) for name, (p, out) in traces.items()}
        ops_after = ldap_ops(ldap)
        ops = {k: ops_after[k] - ops_before[k] for k in ops_after}
        queue_left = postfix_queue_left(pf) if pf is not None else len(mta.queue_files())
        return {
            "side": side,
            "size": size,
            "count": count,
            "sessions": sessions,
            "cache_ttl": cache_ttl,
            "accepted_s": t_accepted,
            "stored_s": t_stored,
            "accepted_rate": count / t_accepted,
            "rate": count / t_stored,
            "stored": seen,
            "queue_left": queue_left,
            "ldap": ops,
            "cmd": " ".join(cmd),
            "cpu": cpu,
            "calls": calls,
        }
    finally:
        if counter is not None:
            counter.close()
        if pf is not None:
            stop_postfix(pf, keep)
        stop_cluster(ldap, store, mta, "bench-mta-in")
        if not keep:
            REMOVE_AT_END.append(work)


def stop_cluster(ldap, store, mta, who: str) -> None:
    """Stops what start_cluster started (any of them may be None); a node
    that fails to stop is reported, the others are still stopped."""
    for n in (mta, store):
        if n is not None:
            try:
                n.stop()
            except BaseException as e:  # tiers uses pytest.fail
                print(f"{who}: stopping {n.name}: {e}", file=sys.stderr)
            n.cleanup()
    if ldap is not None and ldap.running:
        ldap.stop()


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f"{kb / 1048576:.1f} GiB RAM"
    except (OSError, AttributeError):
        pass
    return f"{os.cpu_count()} cores ({cpu}), {mem}, Linux {platform.release()}"


def on_signal(signum, _frame) -> None:
    """SIGTERM/SIGHUP: unwind through the finally blocks that stop
    everything this script started."""
    raise SystemExit(128 + signum)


def main() -> None:
    ap = argparse.ArgumentParser(description="mta-in -> LMTP -> store throughput with LDAP, beside Postfix")
    ap.add_argument("--count-4k", type=int, default=int(os.environ.get("BENCH_COUNT_4K", 2000)))
    ap.add_argument("--count-64k", type=int, default=int(os.environ.get("BENCH_COUNT_64K", 1000)))
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=float(os.environ.get("BENCH_TIMEOUT", 300)))
    ap.add_argument("--cache-ttl", type=int, default=30, help="directory.cache_ttl (msgd's default: 30)")
    ap.add_argument("--no-uncached", action="store_true", help="skip the extra 4 KiB run with cache_ttl = 0")
    ap.add_argument("--no-warmup", action="store_true",
                    help="skip the unrecorded warm-up run on the fresh ext4 image")
    ap.add_argument("--queue-first", action="store_true",
                    help="also run msgd with queue.cut_through = false (side msgd-queue: every message "
                         "queued and fsynced before the 250, then delivered from the queue)")
    ap.add_argument("--no-postfix", action="store_true",
                    help="skip the Postfix side (smtp-source -> Postfix -> LMTP -> store)")
    ap.add_argument("--fs", choices=("ext4-image", "tmp"), default=None,
                    help="where the run's folders live: a fresh journaled ext4 on a loop device (default as root) "
                         "or /tmp as it is")
    ap.add_argument("--store-sync", choices=("files", "filesystem"), default=None,
                    help="store.sync of the store (both sides use the same store set-up); default: msgd's")
    ap.add_argument("--log-level", default="warn")
    ap.add_argument("--keep", action="store_true", help="keep the work folders")
    ap.add_argument("--syscalls", action="store_true",
                    help="msgd only: strace -f -c on mta-in and store, syscalls per message (slows them: "
                         "the rates of such a run mean nothing)")
    args = ap.parse_args()
    global STORE_SYNC
    STORE_SYNC = args.store_sync
    if args.syscalls:
        args.no_postfix = True
    if not os.environ.get("MSGD_BIN"):
        die("set MSGD_BIN (scripts/bench-mta-in.sh does)")
    smtp_source = find_smtp_source()
    sides = ["msgd"] + (["msgd-queue"] if args.queue_first else [])
    if not args.no_postfix:
        if os.geteuid() != 0:
            die("the Postfix side runs a private Postfix instance and needs root (or pass --no-postfix)")
        for tool in ("postfix", "postconf"):
            if not any(os.access(os.path.join(d, tool), os.X_OK) for d in ("/usr/sbin", "/usr/bin")) \
                    and shutil.which(tool) is None:
                die(f"{tool} (package postfix) is missing: {SMTP_SOURCE_INSTALL}")
        sides.append("postfix")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    scenarios = [(4096, args.count_4k, args.cache_ttl), (65536, args.count_64k, args.cache_ttl)]
    if not args.no_uncached:
        scenarios.append((4096, args.count_4k, 0))
    print(f"machine: {machine()}")
    print(f"msgd:    {os.environ['MSGD_BIN']}")
    print(f"store:   sync = {STORE_SYNC or 'default'} (both sides)")
    if "postfix" in sides:
        print(f"postfix: {postfix_version()}")
    print(f"date:    {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print("load:    %.2f %.2f %.2f (1/5/15 min, before the runs; other work on the machine skews the figures)"
          % os.getloadavg())
    header = (f"{'side':<12} {'size':>7} {'msgs':>6} {'sess':>4} {'ttl':>4} {'accepted/s':>11} {'stored/s':>9} "
              f"{'total s':>8} {'SRCH':>6} {'SRCH/msg':>9} {'BIND':>5} {'left':>5}")
    fs = args.fs or ("ext4-image" if os.geteuid() == 0 else "tmp")
    scratch = None
    if fs == "ext4-image":
        if os.geteuid() != 0:
            die("--fs ext4-image mounts a loop device and needs root (or pass --fs tmp)")
        scratch = scratch_fs()
        use_folder(scratch[0])
    print(f"folders: {'a fresh journaled ext4 image (loop device)' if scratch else '/tmp'}")
    print()
    results = []
    try:
        if scratch is not None and not args.no_warmup:
            # The first scenario on a fresh image ran up to 2x slower than
            # the same one run next (tenth session: the loop file's blocks
            # are allocated on the host as they are first written), which
            # handicapped whichever side ran first. A short unrecorded run
            # takes that first.
            print("warm-up: 1,000 x 4 KiB through msgd (not recorded)")
            run_scenario("msgd", smtp_source, 4096, 1000, args.sessions, args.cache_ttl, args.timeout,
                         args.log_level, False)
        for size, count, ttl in scenarios:
            for side in sides:
                r = run_scenario(side, smtp_source, size, count, args.sessions, ttl, args.timeout,
                                 args.log_level, args.keep, syscalls=args.syscalls and side != "postfix")
                results.append(r)
    finally:
        remove_at_end()
        if scratch is not None:
            drop_scratch_fs(*scratch)
    print("load after: %.2f %.2f %.2f" % os.getloadavg())
    print(header)
    for r in results:
        print(f"{r['side']:<12} {r['size'] // 1024:>5}Ki {r['count']:>6} {r['sessions']:>4} {r['cache_ttl']:>4} "
              f"{r['accepted_rate']:>11.1f} {r['rate']:>9.1f} {r['stored_s']:>8.2f} "
              f"{r['ldap']['search']:>6} {r['ldap']['search'] / r['count']:>9.3f} "
              f"{r['ldap']['bind']:>5} {r['queue_left']:>5}")
    if "postfix" in sides:
        print()
        print("msgd/Postfix (same scenario, same smtp-source command, same store):")
        print(f"{'size':>7} {'msgs':>6} {'ttl':>4} {'accepted':>9} {'stored':>7}")
        n = len(sides)
        for k in range(0, len(results), n):
            p = results[k + n - 1]
            for m in results[k:k + n - 1]:
                print(f"{m['size'] // 1024:>5}Ki {m['count']:>6} {m['cache_ttl']:>4} "
                      f"{m['accepted_rate'] / p['accepted_rate']:>8.2f}x {m['rate'] / p['rate']:>6.2f}x"
                      f"  ({m['side']})")
    print()
    print("per message (not load-dependent): CPU ms of each process; with --syscalls, calls per message")
    for r in results:
        if r["side"] == "postfix":
            continue
        n = r["count"]
        line = f"{r['side']:<12} {r['size'] // 1024:>5}Ki {n:>6}: CPU ms/msg " + ", ".join(
            f"{k} {v * 1000 / n:.3f}" for k, v in r["cpu"].items())
        print(line)
        for name, calls in r["calls"].items():
            print(f"        {name}: total {calls.get('total', 0) / n:.1f}; " + ", ".join(
                f"{k} {calls.get(k, 0) / n:.2f}" for k in COUNTED))
    print()
    print("accepted/s: messages / smtp-source run time (mta-in or Postfix answered 250 after its queue fsync)")
    print("stored/s:   messages / time until the last one was in the store's INBOX (end to end)")
    print("SRCH/msg:   LDAP searches slapd logged during the run, per message (mta-in and store")
    print("            together; Postfix itself asks no directory: only the store's LMTP RCPT")
    print("            checks; the IMAP session polling the count logged in before the run)")
    print("left:       messages still in mta-in's or Postfix's queue when the last one was stored")
    for r in results:
        print(f"command ({r['side']}): {r['cmd']}")


def postfix_version() -> str:
    try:
        res = subprocess.run(["postconf", "-h", "-d", "mail_version"], capture_output=True, text=True, timeout=10,
                             env={**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin"})
        return f"Postfix {res.stdout.strip()}" if res.returncode == 0 else "Postfix (version unknown)"
    except (OSError, subprocess.TimeoutExpired):
        return "Postfix (version unknown)"


if __name__ == "__main__":
    main()
