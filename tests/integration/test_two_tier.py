"""Two tiers with real components: a private slapd (tests/ldap), two
`msgd --role store` (store1.test, store2.test) and one `msgd --role mta-in`
routing Internet mail to them by LMTP; plus `--role all-in-one` on LDAP, and
Postfix and swaks as LMTP peers we did not write.

The directory is tests/ldap/base.ldif plus two entries (tiers.EXTRA_LDIF):
`misrouted` (mailHost store3.test, which mta-in's hosts map points at
store1's LMTP: a permanent 550 5.1.6) and `keeper` (keeps a copy, forwards to
frank on store2 and to an outside address).

Every message carries a unique Message-ID; "nothing lost, nothing doubled"
is checked by counting those in the mailboxes. Tests that stop a component
restart it before they end, so they can share one set of processes.
"""

from __future__ import annotations

import imaplib
import poplib
import re
import shutil
import subprocess
import time

import pytest

from conftest import LineClient, build_message, unique, wait_until
from tiers import (
    Ldap,
    Node,
    Postfix,
    fetch_all,
    message_ids,
    rcpt_replies,
    send,
    wait_for_ids,
)

REMOTE = "sender@remote.example"
ALICE = "alice@example.test"  # store1
BOB = "bob@example.test"  # store2, partition "secondary"
FRANK = "frank@example.test"  # store2
ERIN = "erin@example.test"  # store1, quota 1024 bytes: only small mail
STORE_TOML = """
[store]
host = "{host}"
min_free_disk = 1048576

[store.partition.secondary]
path = "partition/secondary"
"""


def mta_toml(hosts: dict[str, int]) -> str:
    mapping = ", ".join(f'"{h}" = "127.0.0.1:{p}"' for h, p in hosts.items())
    return f"""
[mta]
hosts = {{ {mapping} }}
delivery_timeout = 10

[queue]
retry_base = 1
retry_max = 2
lifetime = 3600
delay_warning = 3600
cut_through = true
"""


class Cluster:
    def __init__(self, root):
        self.root = root
        self.ldap = Ldap(root / "ldap")
        self.s1 = Node(root / "store1", "store", "store1.test", self.ldap, STORE_TOML.format(host="store1.test"))
        self.s2 = Node(root / "store2", "store", "store2.test", self.ldap, STORE_TOML.format(host="store2.test"))
        hosts = {
            "store1.test": self.s1.ports["lmtp"],
            "store2.test": self.s2.ports["lmtp"],
            # an inconsistency: store3.test's users end up at store1
            "store3.test": self.s1.ports["lmtp"],
        }
        self.mta = Node(root / "mta-in", "mta-in", "mx.example.test", self.ldap, mta_toml(hosts))
        self.nodes = [self.s1, self.s2, self.mta]

    def queued(self, msgid: str) -> bool:
        """Is a message with this Message-ID still in mta-in's queue?"""
        needle = msgid.encode()
        for f in self.mta.queue_files():
            try:
                if needle in f.read_bytes():
                    return True
            except FileNotFoundError:
                pass
        return False

    def logs(self) -> str:
        return "\n".join(n.log(6000) for n in self.nodes)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("two_tier"))
    try:
        c.ldap.start()
        for n in c.nodes:
            n.start()
        yield c
        errors = []
        for n in c.nodes:
            if n.running:
                try:
                    n.stop()
                except BaseException as e:  # pytest.fail is a BaseException
                    errors.append(str(e))
        if errors:
            pytest.fail("\n".join(errors), pytrace=False)
    finally:
        for n in c.nodes:
            n.cleanup()
        if c.ldap.running:
            c.ldap.stop()


@pytest.fixture(autouse=True)
def logs_on_failure(request, cluster):
    """On failure, print the tail of every process's log (shown by pytest
    as captured output of the teardown)."""
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before:
        print(cluster.logs())


def msg(to: str, subject: str, sender: str = REMOTE, body: str = "two-tier test\r\n") -> tuple[str, bytes]:
    """A small message with a unique Message-ID; returns (id, bytes)."""
    local = unique("tt")
    data = build_message(to, subject, body, sender=sender, msgid=local)
    mid = f"<{local}@remote.example>"  # build_message's form
    assert mid.encode() in data
    return mid, data


def assert_once(node: Node, address: str, mid: str, timeout: float = 20.0) -> None:
    ids = wait_for_ids(node, address, [mid], timeout)
    assert ids.count(mid) == 1, f"{address} on {node.name}: {mid} delivered {ids.count(mid)} times"


def assert_absent(node: Node, address: str, mid: str) -> None:
    ids = message_ids(node, address)
    assert mid not in ids, f"{mid} for {address} wrongly landed on {node.name}"


def assert_not_stored(node: Node, mid: str) -> None:
    files = node.stored_files_with(mid)
    assert not files, f"{mid} wrongly stored on {node.name}: {files}"


# --------------------------------------------------------------------------
# routing


def test_each_user_lands_on_own_store(cluster):
    mid, data = msg(f"{ALICE}, {BOB}", "routing")
    send(cluster.mta, REMOTE, [ALICE, BOB], data)
    assert_once(cluster.s1, ALICE, mid)
    assert_once(cluster.s2, BOB, mid)
    # one copy on each store's disk, none on the other
    assert len(cluster.s1.stored_files_with(mid)) == 1
    assert len(cluster.s2.stored_files_with(mid)) == 1
    # bob's mailbox is in his mailMessageStore partition on store2
    assert list((cluster.s2.data_dir / "partition" / "secondary").rglob("*")), "nothing in store2's secondary partition"
    wait_until(lambda: not cluster.queued(mid), 10)
    assert not cluster.queued(mid), "delivered message still in mta-in's queue"


def test_cut_through_copies_are_stored_before_the_250_and_never_queued(cluster):
    """queue.cut_through (on in this cluster): mta-in hands the message to both
    stores before it answers DATA, so when swaks/smtplib gets its 250 the
    copies are already in the mailboxes, and no queue file was written."""
    files_before = {f.name for f in cluster.mta.queue_files()}
    mid, data = msg(f"{ALICE}, {BOB}", "cut-through")
    send(cluster.mta, REMOTE, [ALICE, BOB], data)
    # no waiting: durable in both stores when the 250 came
    assert message_ids(cluster.s1, ALICE).count(mid) == 1
    assert message_ids(cluster.s2, BOB).count(mid) == 1
    assert not cluster.queued(mid), "a cut-through message was written to the queue"
    assert {f.name for f in cluster.mta.queue_files()} <= files_before
    log = cluster.mta.log(100000)
    assert "delivered (cut-through)" in log, log[-3000:]


def test_delivered_copy_has_trace_headers_and_exact_body(cluster):
    mid, data = msg(BOB, "trace")
    send(cluster.mta, REMOTE, BOB, data)
    assert_once(cluster.s2, BOB, mid)
    copies = [m for m in fetch_all(cluster.s2, BOB) if mid.encode() in m]
    assert len(copies) == 1
    raw = copies[0]
    head, _, _ = raw.partition(b"\r\n\r\n")
    assert raw.endswith(data.split(b"\r\n\r\n", 1)[1]), "body changed on the way through mta-in and LMTP"
    assert f"Return-Path: <{REMOTE}>".encode() in head, head[:400]
    received = re.findall(rb"(?im)^Received:.*(?:\r\n[ \t].*)*", head)
    assert len(received) >= 2, f"want a Received from mta-in and one from the store, got {received}"


def test_group_lands_on_both_stores(cluster):
    # staff: alice (store1), bob (store2), team -> erin (store1, tiny quota),
    # a nonexistent DN, and partner@elsewhere.test (outside: waits for a relay)
    mid, data = msg("staff@example.test", "group")
    send(cluster.mta, REMOTE, "staff@example.test", data)
    assert_once(cluster.s1, ALICE, mid)
    assert_once(cluster.s2, BOB, mid)
    assert_once(cluster.s1, ERIN, mid)
    # carol is only in deep6, below group_max_depth: not reached
    assert_absent(cluster.s1, "carol@example.test", mid)


def test_alternate_and_equivalent_addresses_deliver_to_user(cluster):
    mids = []
    for alias in ("alice.smith@example.test", "alice@second.test", "ALICE@Example.Test"):
        mid, data = msg(alias, f"alias {alias}")
        send(cluster.mta, REMOTE, alias, data)
        mids.append(mid)
    ids = wait_for_ids(cluster.s1, ALICE, mids)
    for mid in mids:
        assert ids.count(mid) == 1, f"{mid}: {ids.count(mid)} copies"


def test_unknown_and_outside_recipients_refused_at_rcpt(cluster):
    r = rcpt_replies(cluster.mta, REMOTE, [
        "nobody@example.test",
        "ghost@example.test",
        "nomail@example.test",
        "someone@elsewhere.test",
        "alice@notmail.example.test",
        ALICE,
    ])
    for addr in ("nobody@example.test", "ghost@example.test", "nomail@example.test"):
        assert r[addr][0] == 550 and r[addr][1].startswith("5.1.1"), f"{addr}: {r[addr]}"
    for addr in ("someone@elsewhere.test", "alice@notmail.example.test"):
        assert r[addr][0] == 550 and r[addr][1].startswith("5.7.1"), f"{addr} (relaying): {r[addr]}"
    assert r[ALICE][0] == 250, r[ALICE]


def test_inactive_user_refused(cluster):
    r = rcpt_replies(cluster.mta, REMOTE, ["dave@example.test"])
    code, text = r["dave@example.test"]
    assert code == 550 and text.startswith("5.2.1"), f"dave (mailUserStatus: Disabled): {code} {text}"
    # the store's LMTP says the same
    with LineClient(cluster.s2.ports["lmtp"]) as c:
        assert c.smtp_reply()[0] == 220
        assert c.smtp_cmd("LHLO mx.example.test")[0] == 250
        assert c.smtp_cmd(f"MAIL FROM:<{REMOTE}>")[0] == 250
        code, text = c.smtp_cmd("RCPT TO:<dave@example.test>")
        assert code == 550 and "5.2.1" in text, text
        c.smtp_cmd("QUIT")


def test_store_serves_only_its_own_users(cluster):
    """IMAP and POP3 on store2 refuse store1's alice (temporarily: the mmp
    is what routes clients) rather than show her an empty mailbox."""
    with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
        cluster.s2.imap(ALICE)
    p = poplib.POP3("127.0.0.1", cluster.s2.ports["pop3"], timeout=20)
    try:
        p.user(ALICE)
        with pytest.raises(poplib.error_proto, match="SYS/TEMP"):
            p.pass_("alice-secret")
    finally:
        p.close()
    # her own store lets her in
    cluster.s1.imap(ALICE).logout()


def test_store_refuses_lmtp_for_users_of_another_store(cluster):
    """LMTP straight to store2 for store1's alice: 550 5.1.6, per recipient."""
    with LineClient(cluster.s2.ports["lmtp"]) as c:
        assert c.smtp_reply()[0] == 220
        assert c.smtp_cmd("LHLO mx.example.test")[0] == 250
        assert c.smtp_cmd(f"MAIL FROM:<{REMOTE}>")[0] == 250
        code, text = c.smtp_cmd(f"RCPT TO:<{ALICE}>")
        assert code == 550 and "5.1.6" in text, f"alice at store2: {code} {text}"
        code, text = c.smtp_cmd(f"RCPT TO:<{FRANK}>")
        assert code == 250, f"frank at store2: {code} {text}"
        c.smtp_cmd("RSET")
        c.smtp_cmd("QUIT")


def test_forwarding_user_keeps_local_copy(cluster):
    # keeper: mailbox + forward to frank (store2) and keeper@elsewhere.test
    mid, data = msg("keeper@example.test", "forward keep")
    send(cluster.mta, REMOTE, "keeper@example.test", data)
    assert_once(cluster.s1, "keeper@example.test", mid)
    assert_once(cluster.s2, FRANK, mid)
    # the outside copy goes by MX (no mta.relay); the test's DNS never
    # answers, so it is deferred and waits in the queue, and the log says so
    assert cluster.queued(mid), "the copy for keeper@elsewhere.test should wait in mta-in's queue"
    assert wait_until(
        lambda: any("deferred" in l and "keeper@elsewhere.test" in l
                    for l in cluster.mta.log(50000).splitlines()), 15), cluster.mta.log()


def test_forward_only_user_gets_no_local_copy(cluster):
    # carol: mailDeliveryOption forward only, to carol@elsewhere.test
    mid, data = msg("carol@example.test", "forward only")
    send(cluster.mta, REMOTE, "carol@example.test", data)
    assert cluster.queued(mid), "carol's forward should wait in mta-in's queue"
    time.sleep(1.5)
    assert_absent(cluster.s1, "carol@example.test", mid)


# --------------------------------------------------------------------------
# failures


def test_permanent_failure_bounces_to_local_sender(cluster):
    """misrouted's mailHost (store3.test) leads to store1, which answers
    550 5.1.6: mta-in bounces an RFC 3464 report to the sender, alice, whose
    store is store1."""
    mid, data = msg("misrouted@example.test", "will bounce", sender=ALICE)
    send(cluster.mta, ALICE, "misrouted@example.test", data)

    def dsn():
        for m in fetch_all(cluster.s1, ALICE):
            if b"multipart/report" in m and b"misrouted@example.test" in m and mid.encode() in m:
                return m
        return None

    report = wait_until(dsn, 20, 0.5)
    assert report, f"no delivery status notification for {mid} in alice's INBOX\n{cluster.mta.log()}"
    head = report.split(b"\r\n\r\n", 1)[0]
    assert re.search(rb"(?i)^Return-Path: <>", head, re.M), f"a DSN has a null sender: {head[:500]!r}"
    assert b"report-type=delivery-status" in report
    assert b"Final-Recipient: rfc822; misrouted@example.test" in report, report[:2000]
    assert b"Action: failed" in report
    assert b"Status: 5.1.6" in report, report[:2000]
    assert wait_until(lambda: not cluster.queued(mid), 10), "bounced message still queued"
    reports = [m for m in fetch_all(cluster.s1, ALICE) if b"multipart/report" in m and mid.encode() in m]
    assert len(reports) == 1, f"{len(reports)} reports for one failure"


def test_store_down_mail_queued_then_delivered_once(cluster):
    """store2 stopped: mta-in still accepts (250 after the queue fsync) and
    keeps retrying; mta-in itself crashes and restarts meanwhile; store2
    back: every message lands exactly once."""
    s2 = cluster.s2
    s2.stop()
    try:
        only_bob = []
        for i in range(5):
            mid, data = msg(BOB, f"while store2 is down {i}")
            send(cluster.mta, REMOTE, BOB, data)  # 250: durable in mta-in's queue
            only_bob.append(mid)
        both, data = msg(f"{ALICE}, {BOB}", "half delivered")
        send(cluster.mta, REMOTE, [ALICE, BOB], data)
        # alice's store is up: hers goes through at once
        assert_once(cluster.s1, ALICE, both)
        # a few retries against the dead store
        time.sleep(3)
        for mid in only_bob + [both]:
            assert cluster.queued(mid), f"{mid} left the queue while store2 was down"
        log = cluster.mta.log(100000)
        assert "cannot connect" in log or "store unreachable" in log, log
        # mta-in crashes (SIGKILL) with the messages queued, and comes back:
        # the queue is reloaded from disk
        cluster.mta.kill()
        cluster.mta.start()
        for mid in only_bob + [both]:
            assert cluster.queued(mid), f"{mid} lost across an mta-in crash"
    finally:
        if not cluster.mta.running:
            cluster.mta.start()
        s2.start()
    ids = wait_for_ids(s2, BOB, only_bob + [both], timeout=30)
    for mid in only_bob + [both]:
        assert ids.count(mid) == 1, f"{mid} delivered {ids.count(mid)} times to bob"
    # alice's copy was not sent again by the retries for bob
    assert message_ids(cluster.s1, ALICE).count(both) == 1
    assert wait_until(lambda: not any(cluster.queued(m) for m in only_bob + [both]), 10)


def test_ldap_down_gives_451_and_queued_mail_waits(cluster):
    """With store1 down a message is accepted and queued; then slapd stops:
    RCPT gets 451 4.4.3 and the queued message stays queued (even once
    store1 is back: its users cannot be looked up); slapd back: delivered,
    once."""
    s1, ldap = cluster.s1, cluster.ldap
    s1.stop()
    try:
        mid, data = msg(ALICE, "accepted before the directory went away")
        send(cluster.mta, REMOTE, ALICE, data)
        assert cluster.queued(mid)
        ldap.stop()
        try:
            time.sleep(1.2)  # past directory.cache_ttl
            for rcpt in (ALICE, BOB, "nobody@example.test"):
                r = rcpt_replies(cluster.mta, REMOTE, [rcpt])
                code, text = r[rcpt]
                assert code == 451 and text.startswith("4.4.3"), f"{rcpt} with the directory down: {code} {text}"
            s1.start()
            time.sleep(4)  # several retry rounds against a dead directory
            assert cluster.queued(mid), "queued message lost while the directory was down"
            # the store's LMTP also answers 451 for a user it cannot look up
            with LineClient(s1.ports["lmtp"]) as c:
                c.smtp_reply()
                c.smtp_cmd("LHLO mx.example.test")
                c.smtp_cmd(f"MAIL FROM:<{REMOTE}>")
                code, text = c.smtp_cmd(f"RCPT TO:<{ALICE}>")
                assert code == 451 and "4.4.3" in text, f"store1 RCPT with the directory down: {code} {text}"
                c.smtp_cmd("QUIT")
        finally:
            if not ldap.running:
                ldap.start()
    finally:
        if not s1.running:
            s1.start()
    assert_once(s1, ALICE, mid, timeout=30)
    assert wait_until(lambda: not cluster.queued(mid), 10)
    # and new mail flows again through the pooled connections
    mid2, data2 = msg(BOB, "after the directory came back")
    send(cluster.mta, REMOTE, BOB, data2)
    assert_once(cluster.s2, BOB, mid2)


# --------------------------------------------------------------------------
# other LMTP peers: swaks, Postfix


def swaks(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("swaks")
    if exe is None:
        pytest.fail("swaks is not installed: apt-get install -y swaks (or scripts/install-test-deps.sh)",
                    pytrace=False)
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)


def test_swaks_lmtp_over_tcp_and_unix_socket(cluster):
    mid_tcp = f"<{unique('swt')}@swaks.test>"
    r = swaks("--protocol", "LMTP", "--server", "127.0.0.1", "--port", str(cluster.s2.ports["lmtp"]),
              "--from", REMOTE, "--to", f"{FRANK},{ALICE}", "--header", f"Message-Id: {mid_tcp}")
    # alice refused at RCPT (550 5.1.6); after the data one reply, for frank
    assert re.search(r"(?m)^<\*\* 550 5\.1\.6 ", r.stdout), r.stdout
    after_data = r.stdout.split("\n -> .\n", 1)[1]
    assert re.match(r"<-  250 2\.\d\.\d .*\n -> QUIT", after_data), r.stdout
    assert_once(cluster.s2, FRANK, mid_tcp)

    mid_unix = f"<{unique('swu')}@swaks.test>"
    r = swaks("--protocol", "LMTP", "--socket", str(cluster.s1.lmtp_socket),
              "--from", REMOTE, "--to", ALICE, "--header", f"Message-Id: {mid_unix}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert_once(cluster.s1, ALICE, mid_unix)


@pytest.fixture
def postfix(cluster):
    """A private Postfix: example.test by lmtp:inet to store1, second.test
    by lmtp:unix to store1's socket (transport_maps)."""
    pf = Postfix(f"lmtp:inet:127.0.0.1:{cluster.s1.ports['lmtp']}")
    (pf.config_dir / "transport").write_text(f"second.test lmtp:unix:{cluster.s1.lmtp_socket}\n")
    with open(pf.config_dir / "main.cf", "a") as f:
        f.write(f"transport_maps = texthash:{pf.config_dir}/transport\n")
        f.write("relay_domains = example.test, second.test\n")
    try:
        pf.start()
        yield pf
    finally:
        pf.cleanup()


def test_postfix_delivers_by_lmtp_inet_and_unix(cluster, postfix):
    inet_id = f"<{unique('pfi')}@postfix.test>"
    unix_id = f"<{unique('pfu')}@postfix.test>"
    # alice (store1) and frank (store2: store1 must refuse him, 5.1.6)
    r = swaks("--server", "127.0.0.1", "--port", str(postfix.port), "--from", REMOTE,
              "--to", f"{ALICE},{FRANK}", "--header", f"Message-Id: {inet_id}")
    assert r.returncode == 0, r.stdout + r.stderr
    r = swaks("--server", "127.0.0.1", "--port", str(postfix.port), "--from", REMOTE,
              "--to", "alice@second.test", "--header", f"Message-Id: {unix_id}")
    assert r.returncode == 0, r.stdout + r.stderr
    ids = wait_for_ids(cluster.s1, ALICE, [inet_id, unix_id], timeout=30)
    assert ids.count(inet_id) == 1 and ids.count(unix_id) == 1, ids

    def log_has_all():
        log = postfix.log()
        return ("to=<alice@example.test>" in log and "to=<alice@second.test>" in log
                and "to=<frank@example.test>" in log and "status=bounced" in log)

    assert wait_until(log_has_all, 20), postfix.log()
    log = postfix.log()
    lines = log.splitlines()
    alice = next(li for li in lines if "postfix/lmtp" in li and "to=<alice@example.test>" in li)
    assert "status=sent" in alice and f"127.0.0.1]:{cluster.s1.ports['lmtp']}" in alice, alice
    second = next(li for li in lines if "postfix/lmtp" in li and "to=<alice@second.test>" in li)
    assert "status=sent" in second and str(cluster.s1.lmtp_socket) in second, second
    frank = next(li for li in lines if "postfix/lmtp" in li and "to=<frank@example.test>" in li)
    assert "status=bounced" in frank and "5.1.6" in frank, frank


# --------------------------------------------------------------------------
# all-in-one on LDAP


def test_all_in_one_with_ldap(cluster, tmp_path):
    """One process with every role, users from LDAP: store.host = store1.test
    makes alice local; bob (store2.test) goes by LMTP to store2."""
    extra = STORE_TOML.format(host="store1.test") + mta_toml({"store2.test": cluster.s2.ports["lmtp"]})
    aio = Node(tmp_path / "aio", "all-in-one", "aio.example.test", cluster.ldap, extra)
    try:
        aio.start()
        mid, data = msg(f"{ALICE}, {BOB}", "all-in-one")
        send(aio, REMOTE, [ALICE, BOB], data)
        assert_once(aio, ALICE, mid)
        assert_once(cluster.s2, BOB, mid)
        r = rcpt_replies(aio, REMOTE, ["dave@example.test", "nobody@example.test", "x@elsewhere.test"])
        assert r["dave@example.test"][0] == 550 and r["dave@example.test"][1].startswith("5.2.1"), r
        assert r["nobody@example.test"][0] == 550 and r["nobody@example.test"][1].startswith("5.1.1"), r
        assert r["x@elsewhere.test"][0] == 550 and r["x@elsewhere.test"][1].startswith("5.7.1"), r
        # a wrong password is refused by the LDAP bind
        with pytest.raises(imaplib.IMAP4.error):
            aio.imap(ALICE, "wrong-password")
        aio.stop()
    finally:
        aio.cleanup()
