#!/usr/bin/env python3
"""Checks the layers of msgd's import graph over `crate::` paths.

Run from the repository root: `python3 scripts/check-imports.py`. Exit 0
when every rule holds, 1 otherwise (each offending file and path printed).

Layers, bottom up. A module below the protocols (base, config, below) may
use its own layer and the ones under it, never a protocol or the top.
Protocols and the top may use anything (a protocol session receives
`Services`, which holds every role's shared state).

  base      netaddr, redact, fsutil, budget, proxyproto, metrics, roles
            (the Role enum in roles/mod.rs only)
  config    config
  below     everything a protocol builds on: header (a message's header
            fields, decoded values, message ids, base subject), logging, tls, loginlimit, authcache, dns,
            directory, store, login, net, net_unix, hygiene (mail checks on the MTAs)
  protocol  smtp, imap, pop3, mmp, queue, deliver, sieve (Sieve and ManageSieve), http (the HTTP server),
            jmap (the API on the store), mem (the webmail front end), ops
            (operator commands run on a store), provision (users, groups and
            domains: docs/admin.md)
  top       services (holds every role's shared state), roles/run, cli,
            main, stress, fuzz, admin (the admin listener reads every role)

Test code (from a `#[cfg(test)]` line that opens a module to the end of the
file, and files named tests*.rs or under tests/) is not checked: a test may
drive a module from above.

Role state lives in `Services` (issue 11): outside test code and the
fuzzing harness (src/fuzz/, the `msgd fuzz` targets), no module keeps
mutable process-wide state in a static (atomics, locks, once-cells,
`static mut`, thread_local!). Immutable statics (tables, constants) are
fine. The allocator set-up in main.rs is a call, not a static.

KNOWN lists imports that break a rule today and are left for a later step
(see docs/status.md, issue 11); a file listed there must not gain others,
and an entry that no longer occurs is reported so the list shrinks.
"""

import pathlib
import re
import sys

BASE = {"netaddr", "redact", "fsutil", "budget", "proxyproto", "roles", "memory", "metrics"}
CONFIG = {"config"}
BELOW = {"header", "logging", "tls", "loginlimit", "authcache", "directory", "dns", "store", "login", "net", "net_unix", "hygiene"}
PROTOCOL = {"smtp", "imap", "pop3", "mmp", "queue", "deliver", "http", "jmap", "mem", "ops", "provision", "sieve"}
TOP = {"services", "cli", "main", "stress", "fuzz", "lib", "admin"}

RANK = {}
for rank, names in enumerate([BASE, CONFIG, BELOW, PROTOCOL, TOP]):
    for n in names:
        RANK[n] = rank

# (file, imported top-level module) pairs that break a rule today: none
# left (the last ones went in the seventeenth session).
KNOWN: set[tuple[str, str]] = set()

USE = re.compile(r"crate::([a-z_0-9]+)")
MUTABLE_STATIC = re.compile(
    r"^\s*(?:pub(?:\([^)]*\))?\s+)?static\s+(?:mut\s+\w+|ref\s+\w+|\w+\s*:[^=]*"
    r"(?:Atomic|Mutex|RwLock|Condvar|Semaphore|Once\b|OnceLock|OnceCell|LazyLock|Lazy<|Cell<|Notify))"
    r"|^\s*(?:std::)?thread_local!",
    re.M,
)
# An inline test module (`#[cfg(test)] mod tests {`) runs to the end of the
# file; a declaration (`#[cfg(test)] mod tests;`) does not cut anything.
TEST_MOD = re.compile(r"^\s*#\[cfg\(test\)\]\s*\n\s*(pub(\([a-z]+\))? )?mod \w+\s*\{", re.M)


def module_of(path: pathlib.Path) -> str:
    parts = path.relative_to("src").parts
    if parts[0] == "roles" and parts[-1] != "mod.rs":
        return "services"  # roles/run.rs and friends: the top layer
    name = parts[0]
    return name[:-3] if name.endswith(".rs") else name


def non_test_text(path: pathlib.Path) -> str:
    text = path.read_text()
    m = TEST_MOD.search(text)
    return text[: m.start()] if m else text


def main() -> int:
    bad = []
    seen = set()
    for path in sorted(pathlib.Path("src").rglob("*.rs")):
        if path.name.startswith("tests") or "tests" in path.parts:
            continue
        me = module_of(path)
        if me not in RANK:
            bad.append(f"{path}: module '{me}' has no layer in scripts/check-imports.py")
            continue
        if "fuzz" not in path.parts:
            text = non_test_text(path)
            for m in MUTABLE_STATIC.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                bad.append(f"{path}:{line}: process-wide mutable state in a static (put it in Services)")
        if RANK[me] >= RANK["smtp"]:
            continue
        for used in sorted(set(USE.findall(non_test_text(path)))):
            if used == me or used not in RANK:
                continue
            if RANK[used] > RANK[me]:
                if (str(path), used) in KNOWN:
                    seen.add((str(path), used))
                else:
                    bad.append(f"{path}: uses crate::{used} (a higher layer)")
    for stale in sorted(KNOWN - seen):
        bad.append(f"scripts/check-imports.py: KNOWN entry {stale} no longer occurs; remove it")
    for line in bad:
        print(line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
