"""Kill -9 cycles of a two-tier site under load (issue 11: no doubles after
kill -9). Used by tests/integration/test_dupsupp.py (a few cycles) and by
scripts/kill-cycles.py (100 cycles, for the record).

A site: slapd, one store (store1.test: alice, grace), one mta-in whose
queue delivers to it over LMTP. Sender threads keep sending to the mta-in
over SMTP, each message with a fresh Message-ID, and remember which ones
were acknowledged (250 after DATA). A message whose 250 was lost (the
mta-in was killed) is never sent again: an SMTP client's retry of such a
message is a second message, a duplicate no server can tell apart.

Each cycle kills the mta-in with SIGKILL and starts it again, then the
store. At the end the queue drains and every mailbox is counted by
Message-ID over IMAP: every acknowledged message exactly once, every
other at most once.
"""

from __future__ import annotations

import random
import smtplib
import threading
import time
from collections import Counter
from pathlib import Path

from conftest import REMOTE_SENDER, build_message, unique
from tiers import EXTRA_LDIF, PASSWORDS, Ldap, Node, message_ids

ALICE = "alice@example.test"
GRACE = "grace@example.test"
RCPTS = (ALICE, GRACE)

# A second plain user on store1 (carol forwards, erin's quota is tiny).
GRACE_LDIF = """
dn: uid=grace,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
objectClass: msgdMailUser
uid: grace
cn: Grace Hopper
sn: Hopper
mail: grace@example.test
mailHost: store1.test
userPassword: {SSHA}54E4mFiOifM43Tws1vSsusotyHD10jSa
"""
PASSWORDS.setdefault(GRACE, "frank-secret")

STORE_TOML = """
[store]
host = "store1.test"
min_free_disk = 1048576
"""


def mta_toml(lmtp_port: int) -> str:
    return f"""
[mta]
hosts = {{ "store1.test" = "127.0.0.1:{lmtp_port}" }}
delivery_timeout = 10

[queue]
retry_base = 1
retry_max = 2
lifetime = 3600
delay_warning = 3600
"""


class Load:
    """Sender threads: one SMTP connection each, many messages per
    connection, reconnecting after any failure (the mta-in was killed)."""

    def __init__(self, mta: Node, threads: int = 4, seed: int = 1):
        self.mta = mta
        self.threads = threads
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        # Message-ID -> recipients, for every message whose DATA was sent.
        self.tried: dict[str, tuple[str, ...]] = {}
        self.acked: set[str] = set()
        self.stop_flag = threading.Event()
        self.workers: list[threading.Thread] = []

    def start(self) -> "Load":
        for k in range(self.threads):
            t = threading.Thread(target=self._run, args=(k,), daemon=True)
            t.start()
            self.workers.append(t)
        return self

    def stop(self) -> None:
        self.stop_flag.set()
        for t in self.workers:
            t.join(30)
        assert not any(t.is_alive() for t in self.workers), "a sender thread hangs"

    def _message(self) -> tuple[str, tuple[str, ...], bytes]:
        with self.lock:
            r = self.rng.random()
        # Some messages go to both users (a recipient index > 0 in the
        # mta-in's queue entry).
        rcpts = RCPTS if r < 0.3 else (RCPTS[0] if r < 0.65 else RCPTS[1],)
        local = unique("dup")
        data = build_message(", ".join(rcpts), "kill -9 load", "kill cycles\r\n", msgid=local)
        return f"<{local}@remote.example>", rcpts, data

    def _run(self, k: int) -> None:
        while not self.stop_flag.is_set():
            try:
                port = self.mta.ports["smtp"]
                with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=15) as s:
                    s.ehlo()
                    while not self.stop_flag.is_set():
                        mid, rcpts, data = self._message()
                        with self.lock:
                            self.tried[mid] = rcpts
                        refused = s.sendmail(REMOTE_SENDER, list(rcpts), data)
                        if refused:
                            continue
                        with self.lock:
                            self.acked.add(mid)
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)


class Site:
    def __init__(self, root: Path):
        self.root = root
        self.ldap = Ldap(root / "ldap", extra_ldif=EXTRA_LDIF + GRACE_LDIF)
        self.store = Node(root / "store1", "store", "store1.test", self.ldap, STORE_TOML)
        self.mta = Node(root / "mta-in", "mta-in", "mx.example.test", self.ldap,
                        mta_toml(self.store.ports["lmtp"]))
        self.nodes = [self.store, self.mta]

    def start(self) -> "Site":
        self.ldap.start()
        for n in self.nodes:
            n.start()
        return self

    def cleanup(self) -> None:
        for n in self.nodes:
            n.cleanup()
        if self.ldap.running:
            self.ldap.stop()

    def logs(self) -> str:
        return "\n".join(n.log(6000) for n in self.nodes)

    def restart_killed(self, node: Node) -> None:
        node.kill()  # SIGKILL
        node.start()

    def cycles(self, n: int, load: Load, rng: random.Random, report=None) -> None:
        """n cycles: under load, kill -9 the mta-in and start it again,
        then the same for the store."""
        for i in range(n):
            for node in (self.mta, self.store):
                time.sleep(rng.uniform(0.4, 1.2))
                self.restart_killed(node)
            if report:
                report(i + 1, len(load.acked))

    def drain(self, timeout: float) -> bool:
        """Waits until the mta-in's queue is empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.mta.queue_files():
                return True
            time.sleep(0.25)
        return False

    def counts(self) -> dict[str, Counter]:
        return {r: Counter(message_ids(self.store, r)) for r in RCPTS}

    def suppressed(self) -> int:
        """How many repeats the store answered without storing (its log)."""
        try:
            text = self.store.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return text.count("repeated delivery id")


def check(load: Load, counts: dict[str, Counter]) -> tuple[list[str], list[str]]:
    """(lost, doubled): acknowledged copies missing, and copies stored more
    than once (acknowledged or not)."""
    lost, doubled = [], []
    for mid, rcpts in load.tried.items():
        for r in rcpts:
            n = counts[r][mid]
            if n > 1:
                doubled.append(f"{mid} -> {r}: {n} copies")
            if mid in load.acked and n != 1:
                lost.append(f"{mid} -> {r}: {n} copies")
    for r, c in counts.items():
        for mid in c:
            if mid not in load.tried:
                doubled.append(f"{mid} -> {r}: never sent")
    return lost, doubled
