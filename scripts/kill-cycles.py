#!/usr/bin/env python3
"""Kill -9 cycles of a two-tier site under load, for the record (issue 11:
0 lost and 0 doubled over 100 cycles of either tier). Not run by the test
suite; tests/integration/test_dupsupp.py runs the same harness with 8.

Each cycle kills the mta-in with SIGKILL and starts it again, then the
store, while sender threads keep sending over SMTP. At the end the queue
drains and every mailbox is counted by Message-ID over IMAP.

Usage: scripts/kill-cycles.py [--cycles 100] [--threads 4] [--seed 11]
Needs slapd (scripts/install-test-deps.sh) and a built msgd
(target/debug/msgd, or MSGD_BIN). Exit status 0 only with nothing lost
and nothing doubled.
"""

import argparse
import random
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from killcycles import Load, Site, check  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--keep", action="store_true", help="keep the site's folder")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="msgd-kill-cycles-"))
    site = Site(root)
    try:
        site.start()
        load = Load(site.mta, threads=args.threads, seed=args.seed).start()
        try:
            site.cycles(args.cycles, load, random.Random(args.seed),
                        report=lambda i, acked: print(f"cycle {i}/{args.cycles}: {acked} acknowledged",
                                                      flush=True))
        finally:
            load.stop()
        if not site.drain(300):
            print(f"mta-in queue did not drain: {len(site.mta.queue_files())} files left")
            return 1
        lost, doubled = check(load, site.counts())
        print(f"cycles: {args.cycles} (each: kill -9 of the mta-in, then of the store)")
        print(f"sent: {len(load.tried)}, acknowledged: {len(load.acked)}")
        print(f"repeats suppressed by the store: {site.suppressed()}")
        print(f"lost: {len(lost)}, doubled: {len(doubled)}")
        for line in (lost + doubled)[:20]:
            print("  " + line)
        for n in site.nodes:
            n.stop()
        return 0 if not lost and not doubled else 1
    finally:
        site.cleanup()
        if args.keep:
            print(f"site kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
