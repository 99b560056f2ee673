#!/usr/bin/env python3
"""Acceptance rate of mta-in with the mail checks on, against off, in the
same run (issue 16).

Driven by scripts/bench-hygiene.sh (which builds --release first unless
MSGD_BIN is set). For each side, fresh processes: a private slapd
(tests/ldap), one `msgd --role store` and one `msgd --role mta-in` on free
loopback ports (scripts/bench_mta_in.py's cluster), then Postfix's
smtp-source sends N messages over M concurrent sessions to the mta-in and
the script waits until every message is in the store (IMAP STATUS).

  off: `[hygiene]` off, no content filter.
  on:  `[hygiene] enabled` (SPF, DKIM, ARC, DMARC against a private
       dnsmasq on loopback that publishes SPF and DMARC for the sender's
       domain) and `[hygiene.filter]` asking a private rspamd (Debian's
       package; tests/integration/test_content_filter.py's `Rspamd`: its
       own config, no redis, DNS to a dead loopback port) about every
       message.

Prints messages/s accepted (smtp-source's run time: the mta-in answers 250
after the checks and its queue fsync) and stored (end to end) for both
sides, and the ratio on/off. Bounded: BENCH_TIMEOUT seconds per side;
everything started is stopped on exit. Loopback only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_mta_in import RCPT, SENDER, Counter, find_smtp_source, machine, stop_cluster  # noqa: E402
from conftest import free_ports, wait_for_ports  # noqa: E402
from test_content_filter import Rspamd  # noqa: E402
from tiers import DEAD_DNS_PORT, Ldap, Node  # noqa: E402

SENDER_DOMAIN = SENDER.split("@", 1)[1]


def die(msg: str) -> None:
    print(f"bench-hygiene: {msg}", file=sys.stderr)
    sys.exit(1)


class Dns:
    """dnsmasq on a loopback port: SPF and DMARC for the sender's domain."""

    def __init__(self, root: Path):
        binary = "/usr/sbin/dnsmasq" if os.access("/usr/sbin/dnsmasq", os.X_OK) else shutil.which("dnsmasq")
        if not binary:
            die("dnsmasq is missing: install it with scripts/install-test-deps.sh")
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_ports(1)[0]
        self.log_path = root / "dnsmasq.log"
        self.log = open(self.log_path, "wb")
        args = [binary, "--keep-in-foreground", "--conf-file=/dev/null", f"--port={self.port}",
                "--no-resolv", "--no-hosts", "--listen-address=127.0.0.1", "--bind-interfaces",
                "--local=/example/", "--local=/test/", "--pid-file=", "--log-facility=-",
                "--user=root", "--group=root",
                f"--txt-record={SENDER_DOMAIN},v=spf1 ip4:127.0.0.1 -all",
                f"--txt-record=_dmarc.{SENDER_DOMAIN},v=DMARC1; p=none"]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for_ports(self.proc, [self.port], 10, lambda: self.log_path.read_text(errors="replace"), "dnsmasq")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.log.close()


def run_side(side: str, smtp_source: str, size: int, count: int, sessions: int, timeout: float,
             log_level: str, dns: Dns | None, rspamd: Rspamd | None, keep: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="msgd-bench-hygiene-"))
    ldap = store = mta = counter = None
    try:
        ldap = Ldap(work / "ldap")
        ldap.start()
        store = Node(work / "store", "store", "store2.test", ldap,
                     '[store]\nhost = "store2.test"\nmin_free_disk = 1048576\n', log_level=log_level,
                     cache_ttl=30)
        mta_toml = (
            f'[mta]\nhosts = {{ "store2.test" = "127.0.0.1:{store.ports["lmtp"]}" }}\n'
            "[queue]\nretry_base = 1\nretry_max = 2\nlifetime = 3600\ndelay_warning = 3600\n"
        )
        if side == "on":
            mta_toml += (
                "[hygiene]\nenabled = true\ntimeout = 10\n"
                "[hygiene.filter]\nenabled = true\nkind = \"rspamd\"\n"
                f'url = "http://127.0.0.1:{rspamd.port}"\ntimeout_ms = 10000\nfail = "closed"\n'
            )
        mta = Node(work / "mta-in", "mta-in", "mx.example.test", ldap, mta_toml, log_level=log_level,
                   cache_ttl=30)
        if side == "on":
            text = mta.config_text().replace(f"127.0.0.1:{DEAD_DNS_PORT}", f"127.0.0.1:{dns.port}")
            mta.config_path.write_text(text)
        store.start()
        mta.start()
        counter = Counter(store)
        before = counter.count()
        cmd = [smtp_source, "-c", "-l", str(size), "-m", str(count), "-s", str(sessions),
               "-f", SENDER, "-t", RCPT, f"127.0.0.1:{mta.ports['smtp']}"]
        t0 = time.monotonic()
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        t_accepted = time.monotonic() - t0
        if res.returncode != 0:
            raise RuntimeError(f"{side}: smtp-source exited {res.returncode}: {res.stderr[-2000:]}")
        while True:
            seen = counter.count() - before
            if seen >= count:
                break
            if time.monotonic() > t0 + timeout:
                raise RuntimeError(f"{side}: only {seen}/{count} messages in the store after {timeout:.0f}s "
                                   f"(mta-in log: {mta.stderr_path})")
            time.sleep(0.1)
        t_stored = time.monotonic() - t0
        return {"side": side, "count": count, "size": size, "sessions": sessions,
                "accepted_rate": count / t_accepted, "rate": count / t_stored, "stored_s": t_stored,
                "cmd": " ".join(cmd)}
    finally:
        if counter is not None:
            counter.close()
        stop_cluster(ldap, store, mta, "bench-hygiene")
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def on_signal(signum, _frame) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    ap = argparse.ArgumentParser(description="mta-in acceptance with verification and rspamd on vs off")
    ap.add_argument("--count", type=int, default=int(os.environ.get("BENCH_COUNT", 1000)), help="messages (N)")
    ap.add_argument("--sessions", type=int, default=10, help="concurrent SMTP sessions (M)")
    ap.add_argument("--size", type=int, default=4096, help="message size in bytes")
    ap.add_argument("--timeout", type=float, default=float(os.environ.get("BENCH_TIMEOUT", 300)))
    ap.add_argument("--log-level", default="warn")
    ap.add_argument("--keep", action="store_true", help="keep the work folders")
    args = ap.parse_args()
    if not os.environ.get("MSGD_BIN"):
        die("set MSGD_BIN (scripts/bench-hygiene.sh does)")
    smtp_source = find_smtp_source()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    work = Path(tempfile.mkdtemp(prefix="msgd-bench-hygiene-"))
    dns = rspamd = None
    try:
        dns = Dns(work / "dns")
        rspamd = Rspamd(work / "rspamd")
        print(f"machine: {machine()}")
        print(f"msgd:    {os.environ['MSGD_BIN']}")
        print(f"date:    {time.strftime('%Y-%m-%d %H:%M %Z')}")
        print("load:    %.2f %.2f %.2f (1/5/15 min, before the runs; other work on the machine skews the figures)"
              % os.getloadavg())
        results = [run_side(side, smtp_source, args.size, args.count, args.sessions, args.timeout,
                            args.log_level, dns, rspamd, args.keep) for side in ("off", "on")]
    finally:
        if rspamd is not None:
            rspamd.stop()
        if dns is not None:
            dns.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("load after: %.2f %.2f %.2f" % os.getloadavg())
    print()
    print(f"{'checks':<7} {'size':>7} {'msgs':>6} {'sess':>4} {'accepted/s':>11} {'stored/s':>9} {'total s':>8}")
    for r in results:
        print(f"{r['side']:<7} {r['size'] // 1024:>5}Ki {r['count']:>6} {r['sessions']:>4} "
              f"{r['accepted_rate']:>11.1f} {r['rate']:>9.1f} {r['stored_s']:>8.2f}")
    off, on = results
    print()
    print(f"on/off: accepted {on['accepted_rate'] / off['accepted_rate']:.2f}x, "
          f"stored {on['rate'] / off['rate']:.2f}x")
    print("on:  [hygiene] enabled (SPF, DKIM, ARC, DMARC against dnsmasq) + [hygiene.filter] rspamd (fail closed)")
    print("off: neither")
    print(f"command (both): {results[0]['cmd']}")


if __name__ == "__main__":
    main()
