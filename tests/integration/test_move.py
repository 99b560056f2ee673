"""`msgd user move USER --to STORE` (issue 14, "Moving and migrating")
with real components: a private slapd, two stores (store1.test,
store2.test) that push to each other over their HTTP listeners with the
shared token key, mta-in delivering by LMTP by mailHost, and an mmp
routing logins by mailHost.

- a user moved from store1 to store2 while mail keeps arriving through
  mta-in and an IMAP session is open on store1: nothing lost, nothing
  doubled, mailHost switched in LDAP, store1 empty for the user, UIDs,
  UIDVALIDITY and flags the same on store2, a login through the mmp
  lands on store2; store1 defers the user's LMTP (451 4.2.1) and logins
  (NO [UNAVAILABLE]) afterwards;
- sessions open on store1 when the hold begins end (IMAP BYE
  [UNAVAILABLE], IDLE too), and a flag change sent meanwhile is either on
  store2 or refused, never silently lost with store1's copy;
- a malformed replica request body is a 400;
- a move to a store that does not answer fails with exit 1 and a clear
  message, and the user stays where it was.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import imaplib
import json
import poplib
import re
import select
import shutil
import socket
import subprocess
import textwrap
import threading
import time

import pytest

from conftest import msgd_bin, msgd_env, unique
from tiers import LDAP_INSTALL, PASSWORDS, Ldap, Node, message_ids, send, wait_for_ids

MOVER = "mover@example.test"
STAYER = "stayer@example.test"
PASSWORD = "frank-secret"
ADMIN_DN = "cn=admin,dc=example,dc=test"
ADMIN_PASSWORD = "admin-secret"  # tests/ldap/slapd.conf.in rootpw

LDIF = textwrap.dedent("""\
    dn: uid=mover,ou=people,dc=example,dc=test
    objectClass: inetOrgPerson
    objectClass: msgdMailUser
    uid: mover
    cn: Mo Ver
    sn: Ver
    mail: mover@example.test
    mailHost: store1.test
    userPassword: {SSHA}54E4mFiOifM43Tws1vSsusotyHD10jSa

    dn: uid=stayer,ou=people,dc=example,dc=test
    objectClass: inetOrgPerson
    objectClass: msgdMailUser
    uid: stayer
    cn: Stay Er
    sn: Er
    mail: stayer@example.test
    mailHost: store1.test
    userPassword: {SSHA}54E4mFiOifM43Tws1vSsusotyHD10jSa

    dn: uid=holder,ou=people,dc=example,dc=test
    objectClass: inetOrgPerson
    objectClass: msgdMailUser
    uid: holder
    cn: Hol Der
    sn: Der
    mail: holder@example.test
    mailHost: store1.test
    userPassword: {SSHA}54E4mFiOifM43Tws1vSsusotyHD10jSa
    """)
PASSWORDS.setdefault(MOVER, PASSWORD)
PASSWORDS.setdefault(STAYER, PASSWORD)
HOLDER = "holder@example.test"
PASSWORDS.setdefault(HOLDER, PASSWORD)


def store_extra(host: str, root, http_ports: dict[str, int]) -> str:
    # Appended right after [directory.ldap]: the first lines belong to it.
    stores = "\n".join(f'"{h}" = "127.0.0.1:{p}"' for h, p in http_ports.items())
    return textwrap.dedent(f"""\
        admin_dn = "{ADMIN_DN}"
        admin_password_file = "{root}/admin-password"

        [store]
        host = "{host}"
        min_free_disk = 1048576

        [http]
        token_key_file = "{root}/token.key"

        [mem]
        store_timeout = 5

        [mem.stores]
        """) + stores + "\n"


class Cluster:
    def __init__(self, root):
        self.root = root
        (root / "admin-password").parent.mkdir(parents=True, exist_ok=True)
        (root / "admin-password").write_text(ADMIN_PASSWORD + "\n")
        (root / "admin-password").chmod(0o600)
        self.ldap = Ldap(root / "ldap", LDIF)
        listeners = ("lmtp", "imap", "pop3", "http")
        # ports first, configs after (each store names the other's port)
        self.s1 = Node(root / "store1", "store", "store1.test", self.ldap, "", listeners=listeners)
        self.s2 = Node(root / "store2", "store", "store2.test", self.ldap, "", listeners=listeners)
        # a store name whose HTTP port refuses connections
        self.dead_port = 9
        http = {"store1.test": self.s1.ports["http"], "store2.test": self.s2.ports["http"],
                "store9.test": self.dead_port}
        for n in (self.s1, self.s2):
            n.extra = store_extra(n.name, root, http)
            n.config_path.write_text(n.config_text())
        hosts = ", ".join(f'"{h}" = "127.0.0.1:{p}"' for h, p in
                          {"store1.test": self.s1.ports["lmtp"], "store2.test": self.s2.ports["lmtp"]}.items())
        self.mta = Node(root / "mta-in", "mta-in", "mx.example.test", self.ldap, textwrap.dedent(f"""
            [mta]
            hosts = {{ {hosts} }}
            delivery_timeout = 10

            [queue]
            retry_base = 1
            retry_max = 2
            lifetime = 3600
            delay_warning = 3600
            """))
        imap = ", ".join(f'"{s.name}" = "127.0.0.1:{s.ports["imap"]}"' for s in (self.s1, self.s2))
        pop3 = ", ".join(f'"{s.name}" = "127.0.0.1:{s.ports["pop3"]}"' for s in (self.s1, self.s2))
        self.mmp = Node(root / "mmp", "mmp", "mmp.test", self.ldap, textwrap.dedent(f"""
            [mmp]
            login_mode = "credentials"
            backend_tls = "none"
            imap_backends = {{ {imap} }}
            pop3_backends = {{ {pop3} }}
            """), cache_ttl=0, listeners=("imap", "pop3"))
        self.nodes = [self.s1, self.s2, self.mta, self.mmp]

    def move(self, store: Node, user: str, to: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([msgd_bin(), "--config", str(store.config_path), "user", "move", user, "--to", to,
                               "--json"], capture_output=True, text=True, timeout=timeout, env=msgd_env(),
                              stdin=subprocess.DEVNULL)

    def logs(self) -> str:
        return "\n".join(n.log(6000) for n in self.nodes)


@pytest.fixture(scope="module")
def cl(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("move"))
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
def logs_on_failure(request, cl):
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before:
        print(cl.logs())


def msg(to: str, n: int) -> tuple[str, bytes]:
    mid = f"<move-{n}-{unique()}@example.test>"
    data = (f"From: sender@remote.example\r\nTo: {to}\r\nSubject: move {n}\r\n"
            f"Message-ID: {mid}\r\nDate: Mon, 1 Jun 2026 10:00:00 +0000\r\n\r\nbody {n}\r\n").encode()
    return mid, data


def mailbox_state(node_or_port, user: str, box: str) -> tuple[int, dict[str, tuple[int, set[str]]]]:
    """(UIDVALIDITY, {message-id: (uid, flags)}) over IMAP."""
    port = node_or_port.ports["imap"]
    m = imaplib.IMAP4("127.0.0.1", port, timeout=20)
    try:
        m.login(user, PASSWORDS[user])
        typ, data = m.select(box, readonly=True)
        assert typ == "OK", data
        n = int(data[0])
        typ, d = m.status(box, "(UIDVALIDITY)")
        uv = int(re.search(rb"UIDVALIDITY (\d+)", d[0]).group(1))
        out = {}
        if n:
            typ, data = m.fetch("1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            for item in data:
                if isinstance(item, tuple):
                    uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
                    flags = set(re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1).decode().split())
                    flags.discard("\\Recent")
                    mid = item[1].decode().split(":", 1)[1].strip()
                    assert mid not in out, f"{mid} twice in {box}"
                    out[mid] = (uid, flags)
        return uv, out
    finally:
        m.logout()


def ldap_mail_host(cl, uid: str) -> str:
    if shutil.which("ldapsearch") is None:
        pytest.fail(f"ldapsearch is not installed: {LDAP_INSTALL}", pytrace=False)
    res = subprocess.run(["ldapsearch", "-x", "-H", cl.ldap.url, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD,
                          "-b", "dc=example,dc=test", "-LLL", f"(uid={uid})", "mailHost"],
                         capture_output=True, text=True, timeout=20)
    assert res.returncode == 0, res.stderr
    return re.search(r"mailHost: (\S+)", res.stdout).group(1)


def jmap_basic(node, user: str, calls: list) -> list:
    """JMAP over the node's HTTP listener with a password (loopback)."""
    using = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail",
             "urn:ietf:params:jmap:vacationresponse"]
    basic = base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()
    c = http.client.HTTPConnection("127.0.0.1", node.ports["http"], timeout=20)
    try:
        c.request("POST", "/jmap/api", body=json.dumps({"using": using, "methodCalls": calls}).encode(),
                  headers={"Authorization": f"Basic {basic}", "Content-Type": "application/json"})
        r = c.getresponse()
        out = r.read()
        assert r.status == 200, (r.status, out)
        return json.loads(out)["methodResponses"]
    finally:
        c.close()


def jmap_account(user: str) -> str:
    return "a" + base64.urlsafe_b64encode(user.encode()).decode().rstrip("=")


def getacl(node, user: str, box: str) -> dict[str, str]:
    """{identifier: rights} (IMAP GETACL)."""
    m = node.imap(user, PASSWORDS[user])
    try:
        typ, data = m.getacl(f'"{box}"')
        assert typ == "OK", data
        words = [w.strip('"') for w in re.findall(r'"[^"]*"|\S+', data[0].decode())[1:]]
        return dict(zip(words[0::2], words[1::2]))
    finally:
        m.logout()


def test_move_under_concurrent_delivery_and_an_open_session(cl):
    # mail and folders on store1
    seeded = []
    for i in range(15):
        mid, data = msg(MOVER, i)
        send(cl.mta, "sender@remote.example", MOVER, data)
        seeded.append(mid)
    wait_for_ids(cl.s1, MOVER, seeded)
    m = cl.s1.imap(MOVER, PASSWORD)
    m.create("Archive/2026")
    for i in range(3):
        mid, data = msg(MOVER, 100 + i)
        m.append("Archive/2026", r"(\Seen $Work)" if i else r"(\Flagged)", None, data)
    m.select("INBOX")
    m.store("1:3", "+FLAGS", r"(\Seen \Answered)")
    m.store("4", "+FLAGS", r"($Label1)")
    m.store("5", "+FLAGS", r"(\Deleted)")
    m.expunge()
    # beyond mail: an ACL (RFC 4314) and a JMAP vacation response
    typ, data = m.setacl('"Archive/2026"', STAYER, "lr")
    assert typ == "OK", data
    vacation = {"isEnabled": True, "subject": "Moving house", "textBody": "Back soon."}
    r = jmap_basic(cl.s1, MOVER, [["VacationResponse/set", {"accountId": jmap_account(MOVER), "update": {
        "singleton": vacation}}, "0"]])
    assert r[0][0] == "VacationResponse/set" and "singleton" in r[0][1]["updated"], r
    before = {box: mailbox_state(cl.s1, MOVER, box) for box in ("INBOX", "Archive/2026")}
    seeded.remove(next(k for k in seeded if k not in before["INBOX"][1]))

    # deliveries go on while the move runs; the session stays open
    sent, errors = [], []

    def sender():
        try:
            for i in range(25):
                mid, data = msg(MOVER, 200 + i)
                send(cl.mta, "sender@remote.example", MOVER, data)
                sent.append(mid)
                time.sleep(0.08)
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    t = threading.Thread(target=sender)
    t.start()
    time.sleep(0.5)
    res = cl.move(cl.s1, MOVER, "store2.test")
    t.join()
    assert not errors, errors
    assert res.returncode == 0, f"move failed: {res.stdout}\n{res.stderr}"
    assert '"uids_kept":true' in res.stdout, res.stdout
    try:
        m.noop()
    except Exception:
        pass

    # mailHost switched in LDAP
    assert ldap_mail_host(cl, "mover") == "store2.test"
    # everything on store2 exactly once (deferred mail arrives by retry)
    time.sleep(1.2)  # the stores' directory cache (1 s)
    ids = wait_for_ids(cl.s2, MOVER, seeded + sent, timeout=60)
    assert len(ids) == len(set(ids)) == len(seeded) + len(sent), ids
    # same UIDVALIDITY, UIDs and flags as on store1 before the move
    for box, (uv, msgs) in before.items():
        uv2, msgs2 = mailbox_state(cl.s2, MOVER, box)
        assert uv2 == uv, f"{box}: UIDVALIDITY {uv2} != {uv}"
        for mid, (uid, flags) in msgs.items():
            assert msgs2[mid] == (uid, flags), f"{box} {mid}: {msgs2[mid]} != {(uid, flags)}"
    # the ACL and the vacation response came along
    assert getacl(cl.s2, MOVER, "Archive/2026").get(STAYER) == "lr"
    r = jmap_basic(cl.s2, MOVER, [["VacationResponse/get", {"accountId": jmap_account(MOVER)}, "0"]])
    got = r[0][1]["list"][0]
    assert {k: got[k] for k in vacation} == vacation, got
    # store1 holds nothing of the user any more
    exp = subprocess.run([msgd_bin(), "--config", str(cl.s1.config_path), "export", MOVER,
                          str(cl.root / "old-copy"), "--json"], capture_output=True, text=True, timeout=60,
                         env=msgd_env())
    assert exp.returncode == 0 and '"written":0' in exp.stdout, exp.stdout + exp.stderr
    # store1 defers the user for a while (stale caches elsewhere)
    with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
        cl.s1.imap(MOVER, PASSWORD)
    pop = poplib.POP3("127.0.0.1", cl.s1.ports["pop3"], timeout=20)
    pop.user(MOVER)
    with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
        pop.pass_(PASSWORD)
    pop.quit()
    with socket.create_connection(("127.0.0.1", cl.s1.ports["lmtp"]), timeout=10) as s:
        f = s.makefile("rwb")
        f.readline()
        f.write(b"LHLO test\r\n"); f.flush()
        while not f.readline().startswith(b"250 "):
            pass
        f.write(b"MAIL FROM:<x@remote.example>\r\n"); f.flush()
        assert f.readline().startswith(b"250")
        f.write(f"RCPT TO:<{MOVER}>\r\n".encode()); f.flush()
        line = f.readline()
        assert line.startswith(b"451 4.2.1"), line
    # a login through the mmp lands on store2
    p = imaplib.IMAP4("127.0.0.1", cl.mmp.ports["imap"], timeout=20)
    p.login(MOVER, PASSWORD)
    typ, data = p.select("INBOX", readonly=True)
    assert typ == "OK" and int(data[0]) == len(seeded) + len(sent)
    p.logout()
    # no delivery was answered "wrong store" (5.1.6, a bounce) on the way
    for n in (cl.s1, cl.s2):
        assert f"lives on another store rcpt={MOVER}" not in n.stderr_path.read_text(), n.log()
    # the other user of store1 is untouched
    mid, data = msg(STAYER, 1)
    send(cl.mta, "sender@remote.example", STAYER, data)
    wait_for_ids(cl.s1, STAYER, [mid])


def read_until(f, pred, what: str) -> list[bytes]:
    lines = []
    while True:
        line = f.readline()
        assert line, f"connection closed before {what}: {lines}"
        lines.append(line)
        if pred(line):
            return lines


def test_sessions_open_at_the_hold_end_and_lose_no_change(cl):
    mids = []
    for i in range(3):
        mid, data = msg(HOLDER, 300 + i)
        send(cl.mta, "sender@remote.example", HOLDER, data)
        mids.append(mid)
    wait_for_ids(cl.s1, HOLDER, mids)
    # one session changing flags all along, one in IDLE, both logged in
    # on store1 before the move
    def session():
        sock = socket.create_connection(("127.0.0.1", cl.s1.ports["imap"]), timeout=60)
        rw = sock.makefile("rwb")
        rw.readline()
        rw.write(f'a LOGIN {HOLDER} "{PASSWORD}"\r\n'.encode()); rw.flush()
        assert read_until(rw, lambda l: l.startswith(b"a "), "LOGIN")[-1].startswith(b"a OK")
        rw.write(b"b SELECT INBOX\r\n"); rw.flush()
        read_until(rw, lambda l: l.startswith(b"b OK"), "SELECT")
        return sock, rw

    flagger, m = session()
    idler, f = session()
    f.write(b"c IDLE\r\n"); f.flush()
    read_until(f, lambda l: l.startswith(b"+"), "IDLE")
    # and a JMAP event source
    es = http.client.HTTPConnection("127.0.0.1", cl.s1.ports["http"], timeout=60)
    es.request("GET", "/jmap/eventsource?types=*&closeafter=no&ping=0",
               headers={"Authorization": f"Bearer {token(cl, HOLDER)}"})
    es_resp = es.getresponse()
    assert es_resp.status == 200, es_resp.read()
    assert es_resp.readline().startswith(b"event: state"), "no first state event"
    # and a POP session with a deletion marked (applied only at QUIT)
    pop = socket.create_connection(("127.0.0.1", cl.s1.ports["pop3"]), timeout=60)
    pf = pop.makefile("rwb")
    assert pf.readline().startswith(b"+OK")
    for cmd in (f"USER {HOLDER}", f"PASS {PASSWORD}", "DELE 1"):
        pf.write(cmd.encode() + b"\r\n"); pf.flush()
        line = pf.readline()
        assert line.startswith(b"+OK"), (cmd, line)

    result = {}
    mover = threading.Thread(target=lambda: result.setdefault("res", cl.move(cl.s1, HOLDER, "store2.test")))
    mover.start()
    accepted, ended, last, last_lines = [], None, None, []
    for i in range(600):
        # the server may have said BYE between two commands
        if select.select([flagger], [], [], 0)[0]:
            ended = b"".join(read_until(m, lambda l: l.startswith(b"* BYE"), "BYE")).decode()
            break
        kw = f"$hold{i}"
        try:
            m.write(f"s{i} STORE 1 +FLAGS ({kw})\r\n".encode()); m.flush()
            last_lines = read_until(m, lambda l: l.startswith(f"s{i} ".encode()) or l.startswith(b"* BYE"),
                                    "the STORE's answer")
        except (OSError, AssertionError):
            # closed under the command: the BYE must have come first
            ended = b"".join(last_lines).decode() + " (closed)"
            break
        last = kw
        tagged = last_lines[-1]
        if tagged.startswith(f"s{i} OK".encode()):
            accepted.append(kw)
            time.sleep(0.05)
            continue
        ended = b"".join(last_lines).decode()
        break
    mover.join()
    res = result["res"]
    assert res.returncode == 0, f"move failed: {res.stdout}\n{res.stderr}"
    assert ended is not None, "the session on store1 was never ended nor refused"
    assert "UNAVAILABLE" in ended, ended
    # the idling session was told too, and its IDLE completed
    lines = read_until(f, lambda l: l.startswith(b"c "), "the end of IDLE")
    assert any(l.startswith(b"* BYE [UNAVAILABLE]") for l in lines), lines
    assert lines[-1].startswith(b"c OK"), lines
    # the POP session was closed without UPDATE: its deletion is not lost
    # with store1, it never happened (QUIT now finds the door shut)
    line = pf.readline()
    assert line.startswith(b"-ERR [SYS/TEMP]"), line
    assert pf.readline() == b"", "the POP session stays open"
    # the event source stream was ended (its reconnect gets the 503)
    es_resp.read()  # returns at the end of the stream, else times out
    es.close()
    for sock in (flagger, idler, pop):
        sock.close()
    # every accepted change is on store2; the refused one is nowhere
    time.sleep(1.2)  # the stores' directory cache (1 s)
    wait_for_ids(cl.s2, HOLDER, mids, timeout=60)
    _, msgs = mailbox_state(cl.s2, HOLDER, "INBOX")
    assert len(msgs) == len(mids), msgs
    first = min(msgs.values())[1]
    assert accepted, "no change was made before the hold"
    for kw in accepted:
        assert kw in first, (kw, first)
    # the command under way at the hold was refused (NO [UNAVAILABLE], or
    # BYE before it ran): not applied anywhere
    if last and last not in accepted:
        assert last not in first, (last, ended, first)


def test_move_to_a_store_that_does_not_answer_fails_and_the_user_stays(cl):
    mid, data = msg(STAYER, 2)
    send(cl.mta, "sender@remote.example", STAYER, data)
    wait_for_ids(cl.s1, STAYER, [mid])
    res = cl.move(cl.s1, STAYER, "store9.test")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "store9.test" in res.stderr or "127.0.0.1:9" in res.stderr, res.stderr
    assert ldap_mail_host(cl, "stayer") == "store1.test"
    assert mid in message_ids(cl.s1, STAYER)
    # unknown user, and a move to the store itself
    res = cl.move(cl.s1, "nobody@example.test", "store2.test")
    assert res.returncode == 1 and "no such user" in res.stderr, res.stderr
    res = cl.move(cl.s1, STAYER, "store1.test")
    assert res.returncode == 1 and "is this store" in res.stderr, res.stderr


def token(cl, subject: str, ttl: int = 300) -> str:
    """A bearer token as src/http/token.rs makes them, with the shared key."""
    key = bytes.fromhex((cl.root / "token.key").read_text().strip())
    b64 = lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")  # noqa: E731
    body = f"msgd1.{b64(subject.encode())}.{int(time.time()) + ttl}"
    return body + "." + b64(hmac.new(key, body.encode(), hashlib.sha256).digest())


def replica_status(cl, method: str, path: str, auth: str | None, body: bytes = b"") -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", cl.s2.ports["http"], timeout=20)
    try:
        headers = {"Authorization": f"Bearer {auth}"} if auth else {}
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_replica_routes_want_a_replica_token_for_that_user(cl):
    path = f"/msgd/v1/replica/{STAYER}"
    assert replica_status(cl, "GET", path, None)[0] == 401
    # a webmail token (plain user name) is no replica token
    assert replica_status(cl, "GET", path, token(cl, STAYER))[0] == 401
    # a replica token for another user
    assert replica_status(cl, "GET", path, token(cl, f"replica/{MOVER}"))[0] == 401
    # expired
    assert replica_status(cl, "GET", path, token(cl, f"replica/{STAYER}", ttl=-5))[0] == 401
    # the right one answers; a body that is no backup stream is refused
    code, body = replica_status(cl, "GET", path, token(cl, f"replica/{STAYER}"))
    assert code == 200 and b'"mailboxes"' in body, body
    code, body = replica_status(cl, "POST", path, token(cl, f"replica/{STAYER}"), b"\x00garbage" * 100)
    assert code == 400 and b"not a backup stream" in body, body
    # empty, and cut short after a valid start: the caller's fault too (400, not 500)
    code, body = replica_status(cl, "POST", path, token(cl, f"replica/{STAYER}"), b"")
    assert code == 400 and b"not a backup stream" in body, body
    code, body = replica_status(cl, "POST", path, token(cl, f"replica/{STAYER}"),
                                b"MSGD-BACKUP-STREAM 1\n" + b"\xff" * 64)
    assert code == 400, (code, body)
    # nothing was created for the user on store2
    code, body = replica_status(cl, "GET", path, token(cl, f"replica/{STAYER}"))
    assert code == 200 and json.loads(body)["mailboxes"] == {}, body


def http_request(node, method: str, path: str, auth: str, body: bytes = b"") -> tuple[int, dict, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", node.ports["http"], timeout=20)
    try:
        headers = {"Authorization": f"Bearer {auth}", "Content-Type": "application/json"}
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def test_jmap_requests_of_a_moved_user_get_503_with_retry_after(cl):
    # HOLDER was moved to store2 above: store1 defers it for a while
    if ldap_mail_host(cl, "holder") != "store2.test":
        res = cl.move(cl.s1, HOLDER, "store2.test")
        assert res.returncode == 0, res.stdout + res.stderr
    api = json.dumps({"using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
                      "methodCalls": [["Mailbox/get", {"accountId": HOLDER}, "0"]]}).encode()
    for method, path, body in (("POST", "/jmap/api", api), ("GET", "/jmap/session", b""),
                               ("GET", "/jmap/eventsource?types=*&closeafter=state&ping=0", b""),
                               ("GET", f"/jmap/download/{HOLDER}/x/y", b"")):
        code, headers, out = http_request(cl.s1, method, path, token(cl, HOLDER), body)
        assert code == 503, (path, code, out)
        assert headers.get("retry-after") == "30", (path, headers)
        assert b"moved" in out, out
    # with a password too (loopback: Basic without TLS is allowed)
    c = http.client.HTTPConnection("127.0.0.1", cl.s1.ports["http"], timeout=20)
    basic = base64.b64encode(f"{HOLDER}:{PASSWORD}".encode()).decode()
    c.request("GET", "/jmap/session", headers={"Authorization": f"Basic {basic}"})
    r = c.getresponse()
    assert r.status == 503 and r.getheader("Retry-After") == "30", (r.status, r.read())
    c.close()
    # the user is served on store2, and store1's other users as before
    code, _, out = http_request(cl.s2, "GET", "/jmap/session", token(cl, HOLDER))
    assert code == 200, out
    code, _, out = http_request(cl.s1, "GET", "/jmap/session", token(cl, STAYER))
    assert code == 200, out
