"""The mmp role end to end with real components: a private slapd
(tests/ldap/base.ldif plus a few entries below), two `msgd --role store`
(store1.test, store2.test), `msgd --role mmp` in front of them, and clients
we did not write: imaplib, poplib, mbsync (isync) and HAProxy.

Layout (all on loopback, free ports):

    client (127.0.0.2) --> mmp "mmp.test"   (login_mode credentials,
                                             STARTTLS to the stores, CA-verified)
                       --> mmp "mmpp.test"  (login_mode proxyauth,
                                             plaintext to the stores)
    client (127.0.0.3) --> haproxy --send-proxy-v2--> mmp h1 / h2
                                  (implicit TLS + PROXY v2 to the stores' imaps/pop3s)

The stores serve imap/pop3 (STARTTLS) for the first two mmps and imaps/pop3s
with `proxy_protocol = true` for the HAProxy pair. A private CA (openssl)
signs every server certificate, so the mmp verifies the stores and the
clients verify the mmp.

Clients connect from 127.0.0.2 (or 127.0.0.3 behind HAProxy) so the test can
tell the real client address apart from the mmp's (127.0.0.1) in the stores'
logs. Tests that stop a component (slapd, a store) start it again before
they end; they run last. MSGD_TEST_KEEP=1 keeps the cluster's folder (logs,
configs, certificates) under /tmp/msgd-mmp-*.
"""

from __future__ import annotations

import base64
import hashlib
import imaplib
import os
import poplib
import shutil
import smtplib
import socket
import ssl
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from conftest import (
    LineClient,
    build_message,
    free_ports,
    port_accepts,
    unique,
    wait_until,
)
from tiers import EXTRA_LDIF, PASSWORDS, Ldap, Node, short_tmpdir

ALICE = "alice@example.test"  # store1
BOB = "bob@example.test"  # store2
FRANK = "frank@example.test"  # store2
MOVER = "mover@example.test"  # store1, moved to store2 by a test
PROXY_LOGIN = "mmpproxy@example.test"  # the proxyauth mmp's own account
PROXY_PASSWORD = "proxy-secret"
MOVER_PASSWORD = "mover-secret"
REMOTE = "sender@remote.example"
CLIENT_IP = "127.0.0.2"  # where the test's clients connect from
HAPROXY_CLIENT_IP = "127.0.0.3"
ADMIN_DN = "cn=admin,dc=example,dc=test"
ADMIN_PASSWORD = "admin-secret"  # tests/ldap/slapd.conf.in rootpw

HAPROXY_INSTALL = "apt-get install -y haproxy (or scripts/install-test-deps.sh)"
ISYNC_INSTALL = "apt-get install -y isync (or scripts/install-test-deps.sh)"
OPENSSL_INSTALL = "apt-get install -y openssl (or scripts/install-test-deps.sh)"
LDAP_UTILS_INSTALL = "apt-get install -y ldap-utils (or scripts/install-test-deps.sh)"


def ssha(password: str) -> str:
    """An OpenLDAP {SSHA} userPassword value."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


MMP_LDIF = textwrap.dedent(f"""\

    # The account the proxyauth mmp logs in as at the stores (listed in
    # their imap/pop3 proxy_users).
    dn: uid=mmpproxy,ou=people,dc=example,dc=test
    objectClass: inetOrgPerson
    objectClass: msgdMailUser
    uid: mmpproxy
    cn: mmp proxy
    sn: proxy
    mail: {PROXY_LOGIN}
    mailHost: store1.test
    userPassword: {ssha(PROXY_PASSWORD)}

    # Starts on store1; test_mailhost_change moves it to store2.
    dn: uid=mover,ou=people,dc=example,dc=test
    objectClass: inetOrgPerson
    objectClass: msgdMailUser
    uid: mover
    cn: Mover Moved
    sn: Moved
    mail: {MOVER}
    mailHost: store1.test
    userPassword: {ssha(MOVER_PASSWORD)}
    """)


def need_tool(name: str, install: str) -> str:
    for d in ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    p = shutil.which(name)
    if p is None:
        pytest.fail(f"{name} is not installed: {install}", pytrace=False)
    return p


# --------------------------------------------------------------------------
# a private CA


class Pki:
    """A CA and server certificates it signs (EC P-256, openssl CLI). Each
    server certificate names its host, localhost (mbsync checks DNS names
    only) and IP 127.0.0.1 (the mmp and the other clients connect to
    addresses)."""

    def __init__(self, root: Path):
        self.openssl = need_tool("openssl", OPENSSL_INSTALL)
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.ca = root / "ca.pem"
        self.ca_key = root / "ca.key"
        self._run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                  "-keyout", self.ca_key, "-out", self.ca, "-days", "2", "-subj", "/CN=msgd mmp test CA",
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def _run(self, *args) -> None:
        res = subprocess.run([self.openssl, *map(str, args)], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, f"openssl {' '.join(map(str, args))} failed:\n{res.stderr}"

    def server(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) for `name` and 127.0.0.1."""
        key, csr, cert, ext = (self.root / f"{name}.{s}" for s in ("key", "csr", "pem", "ext"))
        ext.write_text(f"subjectAltName=DNS:{name},DNS:localhost,IP:127.0.0.1\n"
                       "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
                       "keyUsage=critical,digitalSignature\n")
        self._run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                  "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
        self._run("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key, "-CAcreateserial",
                  "-out", cert, "-days", "2", "-extfile", ext)
        return cert, key

    def client_context(self) -> ssl.SSLContext:
        """Verifies the server's certificate against the CA (and the name
        or address connected to)."""
        return ssl.create_default_context(cafile=str(self.ca))


# --------------------------------------------------------------------------
# clients that connect from a chosen loopback address


class SrcIMAP4(imaplib.IMAP4):
    def __init__(self, port: int, source: str = CLIENT_IP, timeout: float = 20):
        self._source = source
        super().__init__("127.0.0.1", port, timeout=timeout)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))


class SrcIMAP4_SSL(imaplib.IMAP4_SSL):
    def __init__(self, port: int, ctx: ssl.SSLContext, source: str = CLIENT_IP, timeout: float = 20):
        self._source = source
        super().__init__("127.0.0.1", port, ssl_context=ctx, timeout=timeout)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


class SrcPOP3(poplib.POP3):
    def __init__(self, port: int, source: str = CLIENT_IP, timeout: float = 20):
        self._source = source
        super().__init__("127.0.0.1", port, timeout=timeout)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))


class SrcPOP3_SSL(poplib.POP3_SSL):
    def __init__(self, port: int, ctx: ssl.SSLContext, source: str = CLIENT_IP, timeout: float = 20):
        self._source = source
        super().__init__("127.0.0.1", port, context=ctx, timeout=timeout)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))
        return self.context.wrap_socket(sock, server_hostname=self.host)


class Raw(LineClient):
    """conftest.LineClient from a chosen source address."""

    def __init__(self, port: int, source: str = CLIENT_IP, timeout: float = 15):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0))
        self.buf = b""


def src_port(client) -> int:
    return client.sock.getsockname()[1]


def logout(m) -> None:
    try:
        if isinstance(m, poplib.POP3):
            m.quit()
        else:
            m.logout()
    except (OSError, imaplib.IMAP4.error, poplib.error_proto, EOFError):
        pass


# --------------------------------------------------------------------------
# mail


def deliver(store: Node, rcpt: str, subject: str = "mmp test") -> str:
    """One message by LMTP straight to a store (250 = durable). Returns its
    Message-ID."""
    token = unique("mmp")
    data = build_message(rcpt, subject, f"body of {token}\r\n", msgid=token)
    with smtplib.LMTP("127.0.0.1", store.ports["lmtp"], local_hostname="client.example", timeout=20) as lmtp:
        refused = lmtp.sendmail(REMOTE, [rcpt], data)
    assert refused == {}, f"LMTP to {store.name} refused {refused}"
    return f"<{token}@remote.example>"


def imap_ids(m: imaplib.IMAP4, mailbox: str = "INBOX") -> list[str]:
    """Message-IDs in a mailbox, read-only."""
    typ, data = m.select(mailbox, readonly=True)
    assert typ == "OK", f"EXAMINE {mailbox}: {data}"
    if int(data[0]) == 0:
        return []
    typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    assert typ == "OK", data
    out = []
    for item in data:
        if isinstance(item, tuple):
            value = item[1].decode("utf-8", "replace").split(":", 1)
            out.append(value[1].strip() if len(value) == 2 else "")
    return out


def pop3_ids(p: poplib.POP3) -> list[str]:
    count, _size = p.stat()
    out = []
    for i in range(1, count + 1):
        _resp, lines, _octets = p.top(i, 0)
        for line in lines:
            if line.lower().startswith(b"message-id:"):
                out.append(line.split(b":", 1)[1].strip().decode())
    return out


# --------------------------------------------------------------------------
# logs


def log_lines(node: Node, *needles: str) -> list[str]:
    """Lines of a node's log containing every needle (double quotes in the
    log are ignored: tracing quotes some values, e.g. user="a@b")."""
    try:
        text = node.stderr_path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    text = text.replace('"', "")
    return [line for line in text.splitlines() if all(n in line for n in needles)]


def wait_log(node: Node, *needles: str, timeout: float = 5.0) -> list[str]:
    """Log lines are written right after the event: wait briefly for them."""
    return wait_until(lambda: log_lines(node, *needles), timeout, 0.1)


# --------------------------------------------------------------------------
# the cluster


def store_toml(host: str, pki: Pki) -> str:
    cert, key = pki.server(host)
    return f"""
[store]
host = "{host}"
min_free_disk = 1048576

[store.partition.secondary]
path = "partition/secondary"

[tls]
cert = "{cert}"
key = "{key}"

[imap]
proxy_users = ["{PROXY_LOGIN}"]

[pop3]
proxy_users = ["{PROXY_LOGIN}"]
"""


def backends_toml(name: str, stores: list[Node], imap_listener: str, pop3_listener: str) -> str:
    imap = ", ".join(f'"{s.name}" = "127.0.0.1:{s.ports[imap_listener]}"' for s in stores)
    pop3 = ", ".join(f'"{s.name}" = "127.0.0.1:{s.ports[pop3_listener]}"' for s in stores)
    return f"{name}imap_backends = {{ {imap} }}\n{name}pop3_backends = {{ {pop3} }}\n"


class Cluster:
    def __init__(self, root: Path):
        self.root = root
        self.pki = Pki(root / "pki")
        self.ldap = Ldap(root / "ldap", extra_ldif=EXTRA_LDIF + MMP_LDIF)
        store_listeners = ("lmtp", "imap", "pop3", "imaps", "pop3s")
        # imaps/pop3s take PROXY v2 from the HAProxy pair of mmps
        # (from loopback only: a PROXY header is trusted from proxy_networks)
        trust = 'proxy_protocol = true\nproxy_networks = ["127.0.0.0/8"]'
        pp = {"imaps": trust, "pop3s": trust}
        self.s1 = Node(root / "store1", "store", "store1.test", self.ldap, store_toml("store1.test", self.pki),
                       listeners=store_listeners, listener_options=pp)
        self.s2 = Node(root / "store2", "store", "store2.test", self.ldap, store_toml("store2.test", self.pki),
                       listeners=store_listeners, listener_options=pp)
        self.stores = [self.s1, self.s2]
        self.mmp = self.make_mmp("mmp", "mmp.test", textwrap.dedent(f"""\
            login_mode = "credentials"
            backend_tls = "starttls"
            backend_ca_file = "{self.pki.ca}"
            """) + backends_toml("", self.stores, "imap", "pop3"))
        self.proxy_password_file = root / "proxy-password"
        self.proxy_password_file.write_text(PROXY_PASSWORD + "\n")
        self.proxy_password_file.chmod(0o600)
        self.mmpp = self.make_mmp("mmpp", "mmpp.test", textwrap.dedent(f"""\
            login_mode = "proxyauth"
            proxy_user = "{PROXY_LOGIN}"
            proxy_password_file = "{self.proxy_password_file}"
            backend_tls = "none"
            """) + backends_toml("", self.stores, "imap", "pop3"), listeners=("imap", "pop3"))
        self.nodes = [self.s1, self.s2, self.mmp, self.mmpp]

    def make_mmp(self, dirname: str, name: str, mmp_toml: str, listeners=None, listener_options=None) -> Node:
        cert, key = self.pki.server(name)
        extra = f"""
[tls]
cert = "{cert}"
key = "{key}"

[mmp]
{mmp_toml}
"""
        # cache_ttl = 0: a mailHost changed in LDAP counts at the next login
        return Node(self.root / dirname, "mmp", name, self.ldap, extra, cache_ttl=0,
                    listeners=listeners, listener_options=listener_options)

    def store_of(self, user: str) -> Node:
        return self.s1 if user in (ALICE, MOVER, PROXY_LOGIN) else self.s2

    def logs(self, nodes=None) -> str:
        return "\n".join(n.log(5000) for n in (nodes or self.nodes))


@pytest.fixture(scope="module")
def cl():
    c = Cluster(short_tmpdir("msgd-mmp-"))
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
        if not os.environ.get("MSGD_TEST_KEEP"):
            shutil.rmtree(c.root, ignore_errors=True)


def mmp_login(cl: Cluster, user: str, password: str | None = None, node: Node | None = None) -> imaplib.IMAP4:
    node = node or cl.mmp
    m = SrcIMAP4(node.ports["imap"])
    try:
        m.login(user, password or PASSWORDS.get(user, ""))
    except imaplib.IMAP4.error as e:
        logout(m)
        pytest.fail(f"login of {user} through {node.name} failed: {e}\n{cl.logs()}", pytrace=False)
    return m


def raw_login(port: int, user: str, password: str, source: str = CLIENT_IP) -> tuple[bytes, float]:
    """IMAP LOGIN on a raw connection; returns the tagged answer and how
    long it took."""
    with Raw(port, source) as c:
        greeting = c.readline()
        assert greeting.startswith(b"* OK"), greeting
        t0 = time.monotonic()
        tagged, _ = c.imap_cmd("a", f'LOGIN "{user}" "{password}"')
        took = time.monotonic() - t0
        c.imap_cmd("z", "LOGOUT")
    return tagged, took


def pop3_login_error(port: int, user: str, password: str) -> str:
    """USER/PASS that must fail; returns the -ERR line."""
    p = SrcPOP3(port)
    try:
        p.user(user)
        with pytest.raises(poplib.error_proto) as e:
            p.pass_(password)
        return e.value.args[0].decode("utf-8", "replace")
    finally:
        logout(p)


# --------------------------------------------------------------------------
# logging in, both stores, both protocols


@pytest.mark.parametrize("user", [ALICE, BOB])
def test_imap_login_reaches_own_store(cl, user):
    """imaplib through the mmp (plain LOGIN on loopback): each user sees the
    mail delivered to their own store, not the other user's."""
    mine = deliver(cl.store_of(user), user, "own mail")
    other_user = BOB if user == ALICE else ALICE
    theirs = deliver(cl.store_of(other_user), other_user, "not yours")
    m = mmp_login(cl, user)
    try:
        ids = imap_ids(m)
    finally:
        logout(m)
    assert mine in ids, f"{user} through the mmp: {mine} not in {ids}\n{cl.logs()}"
    assert theirs not in ids
    store = cl.store_of(user)
    assert wait_log(cl.mmp, "logged in; relaying", f"user={user}", f"store={store.name}"), cl.mmp.log()
    assert wait_log(store, "imap login", f"user={user}"), store.log()


@pytest.mark.parametrize("user", [ALICE, BOB])
def test_pop3_login_reaches_own_store(cl, user):
    mine = deliver(cl.store_of(user), user, "pop3 mail")
    p = SrcPOP3(cl.mmp.ports["pop3"])
    try:
        p.user(user)
        p.pass_(PASSWORDS[user])
        ids = pop3_ids(p)
        # a whole message comes back through the relay
        _resp, lines, _octets = p.retr(ids.index(mine) + 1)
        assert any(b"body of" in line for line in lines), lines
    finally:
        logout(p)
    assert mine in ids, f"{user} POP3 through the mmp: {mine} not in {ids}\n{cl.logs()}"
    assert wait_log(cl.store_of(user), "pop3 login", f"user={user}"), cl.store_of(user).log()


def test_imap_starttls_and_implicit_tls(cl):
    """STARTTLS on the imap port and TLS on the imaps port, the mmp's
    certificate verified against the test CA."""
    ctx = cl.pki.client_context()
    mid = deliver(cl.s2, BOB, "over tls")
    m = SrcIMAP4(cl.mmp.ports["imap"])
    try:
        typ, caps = m.capability()
        assert b"STARTTLS" in caps[0], caps
        typ, _ = m.starttls(ssl_context=ctx)
        assert typ == "OK"
        assert m.sock.version() is not None  # TLS is on
        m.login(BOB, PASSWORDS[BOB])
        assert mid in imap_ids(m)
    finally:
        logout(m)
    m = SrcIMAP4_SSL(cl.mmp.ports["imaps"], ctx)
    try:
        m.login(BOB, PASSWORDS[BOB])
        assert mid in imap_ids(m)
    finally:
        logout(m)
    assert wait_log(cl.mmp, "mmp session closed", f"user={BOB}", "tls=true"), cl.mmp.log()


def test_pop3_stls_and_implicit_tls(cl):
    ctx = cl.pki.client_context()
    mid = deliver(cl.s1, ALICE, "pop3 over tls")
    p = SrcPOP3(cl.mmp.ports["pop3"])
    try:
        assert "STLS" in p.capa(), p.capa()
        p.stls(context=ctx)
        p.user(ALICE)
        p.pass_(PASSWORDS[ALICE])
        assert mid in pop3_ids(p)
    finally:
        logout(p)
    p = SrcPOP3_SSL(cl.mmp.ports["pop3s"], ctx)
    try:
        p.user(ALICE)
        p.pass_(PASSWORDS[ALICE])
        assert mid in pop3_ids(p)
    finally:
        logout(p)


def test_authenticate_plain_and_sasl_ir(cl):
    """AUTHENTICATE PLAIN with an initial response (RFC 4959) and with a
    continuation; POP3 AUTH PLAIN (RFC 5034)."""
    plain = base64.b64encode(f"\0{ALICE}\0{PASSWORDS[ALICE]}".encode()).decode()
    with Raw(cl.mmp.ports["imap"]) as c:
        c.readline()
        tagged, _ = c.imap_cmd("a", f"AUTHENTICATE PLAIN {plain}")
        assert tagged.startswith(b"a OK"), tagged
        tagged, _ = c.imap_cmd("b", "SELECT INBOX")
        assert tagged.startswith(b"b OK"), tagged
        c.imap_cmd("z", "LOGOUT")
    with Raw(cl.mmp.ports["imap"]) as c:
        c.readline()
        c.send("a AUTHENTICATE PLAIN\r\n")
        assert c.readline().startswith(b"+"), "no continuation for AUTHENTICATE PLAIN"
        c.send(plain + "\r\n")
        tagged, _ = c.imap_until_tagged("a")
        assert tagged.startswith(b"a OK"), tagged
        c.imap_cmd("z", "LOGOUT")
    with Raw(cl.mmp.ports["pop3"]) as c:
        assert c.readline().startswith(b"+OK")
        c.send(f"AUTH PLAIN {plain}\r\n")
        line = c.readline()
        assert line.startswith(b"+OK"), line
        c.send("STAT\r\n")
        assert c.readline().startswith(b"+OK")
        c.send("QUIT\r\n")


def test_capability_after_login_is_the_stores(cl):
    """Before login the mmp answers CAPABILITY itself (no CONDSTORE);
    after login CAPABILITY goes to the store, and the LOGIN OK carries the
    store's capabilities."""
    m = SrcIMAP4(cl.mmp.ports["imap"])
    try:
        typ, pre = m.capability()
        pre_caps = pre[0].split()
        assert b"CONDSTORE" not in pre_caps and b"QRESYNC" not in pre_caps, pre_caps
        typ, data = m.login(ALICE, PASSWORDS[ALICE])
        assert typ == "OK"
        assert b"CONDSTORE" in data[0] and b"QRESYNC" in data[0], data
        typ, post = m.capability()
        post_caps = post[0].split()
        for ext in (b"CONDSTORE", b"QRESYNC", b"IMAP4rev2", b"MOVE", b"UIDPLUS"):
            assert ext in post_caps, f"{ext} not in the store's capabilities through the mmp: {post_caps}"
        # and they work: CONDSTORE's HIGHESTMODSEQ on SELECT
        typ, _ = m.select("INBOX")
        assert typ == "OK"
        assert m.untagged_responses.get("OK") and any(
            b"HIGHESTMODSEQ" in r for r in m.untagged_responses["OK"] if r), m.untagged_responses
    finally:
        logout(m)


# --------------------------------------------------------------------------
# mbsync, IDLE


def test_mbsync_through_mmp(cl, tmp_path):
    """mbsync (isync) over STARTTLS through the mmp: pulls new mail, pushes
    a flag change and a new message; the store (asked directly) has both."""
    mbsync = need_tool("mbsync", ISYNC_INSTALL)
    first = deliver(cl.s2, FRANK, "for mbsync 1")
    maildir = tmp_path / "mail"
    maildir.mkdir()
    cfg = tmp_path / "mbsyncrc"
    cfg.write_text(textwrap.dedent(f"""\
        IMAPAccount mmp
        Host localhost
        Port {cl.mmp.ports["imap"]}
        User {FRANK}
        Pass {PASSWORDS[FRANK]}
        SSLType STARTTLS
        CertificateFile {cl.pki.ca}
        AuthMechs LOGIN

        IMAPStore remote
        Account mmp

        MaildirStore local
        Path {maildir}/
        Inbox {maildir}/INBOX
        SubFolders Verbatim

        Channel frank
        Far :remote:
        Near :local:
        Patterns INBOX
        Create Near
        Sync All
        SyncState *
        """))

    def run():
        res = subprocess.run([mbsync, "-c", str(cfg), "frank"], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "HOME": str(tmp_path)})
        assert res.returncode == 0, (f"mbsync exited {res.returncode}\nstdout: {res.stdout}\n"
                                     f"stderr: {res.stderr}\n{cl.logs([cl.mmp, cl.s2])}")
        return res

    def local_files():
        return [f for sub in ("cur", "new") for f in (maildir / "INBOX" / sub).glob("*")]

    def local_with(msgid):
        return [f for f in local_files() if msgid.encode() in f.read_bytes()]

    run()
    got = local_with(first)
    assert len(got) == 1, f"mbsync did not pull {first}: {[f.name for f in local_files()]}"
    # new mail on the store: the next sync pulls it
    second = deliver(cl.s2, FRANK, "for mbsync 2")
    run()
    assert len(local_with(second)) == 1, "mbsync did not pull the second message"
    # flag the first message locally (maildir info ":2,F..."), add a new one
    f = local_with(first)[0]
    base, _, flags = f.name.partition(":2,")
    f.rename(f.parent.parent / "cur" / f"{base}:2,{''.join(sorted(set(flags + 'F')))}")
    token = unique("push")
    pushed = f"<{token}@remote.example>"
    new = maildir / "INBOX" / "new" / f"{int(time.time())}.{token}.client"
    new.write_bytes(build_message(FRANK, "pushed by mbsync", "from the client\r\n", sender=FRANK, msgid=token))
    run()
    # check on the store directly (frank is on store2)
    m = imaplib.IMAP4("127.0.0.1", cl.s2.ports["imap"], timeout=20)
    try:
        m.login(FRANK, PASSWORDS[FRANK])
        ids = imap_ids(m)
        assert pushed in ids, f"mbsync did not APPEND {pushed} through the mmp: {ids}"
        n = ids.index(first) + 1
        typ, data = m.fetch(str(n), "(FLAGS)")
        assert typ == "OK" and b"\\Flagged" in data[0], f"flag change not pushed: {data}"
    finally:
        logout(m)


def test_idle_through_mmp_wakes_on_delivery(cl):
    """IDLE (RFC 2177) on a raw connection through the mmp: a delivery by
    LMTP to the store shows up as EXISTS without any command."""
    with Raw(cl.mmp.ports["imap"], timeout=20) as c:
        c.readline()
        tagged, _ = c.imap_cmd("a", f'LOGIN "{BOB}" "{PASSWORDS[BOB]}"')
        assert tagged.startswith(b"a OK"), tagged
        tagged, untagged = c.imap_cmd("b", "SELECT INBOX")
        assert tagged.startswith(b"b OK"), tagged
        exists = [int(u.split()[1]) for u in untagged if u.endswith(b" EXISTS\r\n")]
        assert exists, untagged
        c.send("c IDLE\r\n")
        cont = c.readline()
        assert cont.startswith(b"+"), cont
        t0 = time.monotonic()
        deliver(cl.s2, BOB, "wake up")
        c.sock.settimeout(15)
        seen = []
        while True:
            line = c.readline()
            assert line, f"connection closed during IDLE; got {seen}"
            seen.append(line)
            if line.endswith(b" EXISTS\r\n"):
                assert int(line.split()[1]) == exists[0] + 1, seen
                break
        took = time.monotonic() - t0
        c.send("DONE\r\n")
        tagged, _ = c.imap_until_tagged("c")
        assert tagged.startswith(b"c OK"), tagged
        c.imap_cmd("z", "LOGOUT")
    assert took < 10, f"EXISTS came {took:.1f}s after the delivery"


# --------------------------------------------------------------------------
# failures


def test_bad_password_and_unknown_user(cl):
    """Wrong password and unknown user get the same answer, after a delay
    (no user enumeration): IMAP NO [AUTHENTICATIONFAILED], POP3 -ERR [AUTH]."""
    port = cl.mmp.ports["imap"]
    for user, password in ((ALICE, "wrong-password"), ("nobody-here@example.test", "whatever")):
        tagged, took = raw_login(port, user, password)
        assert tagged.startswith(b"a NO [AUTHENTICATIONFAILED]"), f"{user}: {tagged!r}"
        assert took >= 0.9, f"{user}: failed login answered after {took:.2f}s, without a delay"
    for user, password in ((ALICE, "wrong-password"), ("nobody-here@example.test", "whatever")):
        err = pop3_login_error(cl.mmp.ports["pop3"], user, password)
        assert err.startswith("-ERR [AUTH]"), f"{user}: {err}"
    assert wait_log(cl.mmp, "authentication failed", "login=nobody-here@example.test"), cl.mmp.log()
    # the store never saw the wrong password: the mmp stopped it
    assert not log_lines(cl.s1, "imap login failed"), cl.s1.log()
    # passwords never reach the log
    text = cl.mmp.stderr_path.read_text(errors="replace")
    for secret in ("wrong-password", PASSWORDS[ALICE], PASSWORDS[BOB]):
        assert secret not in text, f"a password is in the mmp's log: {secret}"


def test_client_address_reaches_store_log(cl):
    """The store logs the real client (ID x-originating-ip from the mmp),
    not the mmp's address."""
    m = mmp_login(cl, ALICE)
    port = src_port(m)
    logout(m)
    lines = wait_log(cl.s1, "imap login", f"user={ALICE}", f"client={CLIENT_IP}")
    assert lines, f"store1 did not log client={CLIENT_IP}:\n{cl.s1.log()}"
    # the mmp itself saw the client
    assert wait_log(cl.mmp, f"peer={CLIENT_IP}:{port}", "logged in; relaying"), cl.mmp.log()


def test_proxyauth_mode(cl):
    """login_mode = "proxyauth": the mmp checks the user's password itself,
    then logs in at the store as its own account on the user's behalf
    (SASL PLAIN with an authorization identity)."""
    node = cl.mmpp
    for user in (ALICE, BOB):
        mid = deliver(cl.store_of(user), user, "via proxyauth")
        m = mmp_login(cl, user, node=node)
        try:
            assert mid in imap_ids(m)
        finally:
            logout(m)
        store = cl.store_of(user)
        lines = wait_log(store, "imap login", f"user={user}", f"via={PROXY_LOGIN}")
        assert lines, f"{store.name} has no proxy login of {user} by {PROXY_LOGIN}:\n{store.log()}"
        assert f"client={CLIENT_IP}" in lines[-1], lines[-1]
        p = SrcPOP3(node.ports["pop3"])
        try:
            p.user(user)
            p.pass_(PASSWORDS[user])
            assert mid in pop3_ids(p)
        finally:
            logout(p)
        assert wait_log(store, "proxy login", f"proxy={PROXY_LOGIN}", f"user={user}"), store.log()
    # a wrong password never gets as far as the proxy credentials
    tagged, _ = raw_login(node.ports["imap"], ALICE, "wrong-password")
    assert tagged.startswith(b"a NO [AUTHENTICATIONFAILED]"), tagged
    err = pop3_login_error(node.ports["pop3"], BOB, "wrong-password")
    assert err.startswith("-ERR [AUTH]"), err


def test_mailhost_change_reaches_new_store(cl):
    """ldapmodify moves a user to the other store: the next login through
    the mmp lands there; the old store now refuses the user."""
    ldapmodify = need_tool("ldapmodify", LDAP_UTILS_INSTALL)
    old = deliver(cl.s1, MOVER, "before the move")
    m = mmp_login(cl, MOVER, MOVER_PASSWORD)
    try:
        assert old in imap_ids(m)
    finally:
        logout(m)
    ldif = textwrap.dedent("""\
        dn: uid=mover,ou=people,dc=example,dc=test
        changetype: modify
        replace: mailHost
        mailHost: store2.test
        """)
    res = subprocess.run([ldapmodify, "-x", "-H", cl.ldap.url, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD],
                         input=ldif, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, f"ldapmodify failed: {res.stdout}{res.stderr}"
    # the stores cache lookups for 1 s (tiers default), the mmp not at all
    time.sleep(1.2)
    new = deliver(cl.s2, MOVER, "after the move")
    m = mmp_login(cl, MOVER, MOVER_PASSWORD)
    try:
        ids = imap_ids(m)
    finally:
        logout(m)
    assert new in ids and old not in ids, f"after the move the mmp did not reach store2: {ids}\n{cl.logs()}"
    assert wait_log(cl.mmp, "logged in; relaying", f"user={MOVER}", "store=store2.test"), cl.mmp.log()
    # store1 no longer serves the user (RFC 5530 UNAVAILABLE)
    with Raw(cl.s1.ports["imap"]) as c:
        c.readline()
        tagged, _ = c.imap_cmd("a", f'LOGIN "{MOVER}" "{MOVER_PASSWORD}"')
        assert tagged.startswith(b"a NO [UNAVAILABLE]"), tagged


# --------------------------------------------------------------------------
# HAProxy in front of two mmps


def test_haproxy_send_proxy_v2_to_two_mmps(cl, tmp_path):
    """HAProxy (mode tcp, roundrobin, send-proxy-v2) in front of two mmps
    whose listeners take PROXY headers; those mmps reach the stores with
    implicit TLS and a PROXY v2 header of their own. The client address and
    source port survive both hops into the store's log."""
    haproxy = need_tool("haproxy", HAPROXY_INSTALL)
    trust = 'proxy_protocol = true\nproxy_networks = ["127.0.0.0/8"]'
    pp = {"imap": trust, "pop3": trust}
    mmp_toml = textwrap.dedent(f"""\
        backend_tls = "implicit"
        backend_ca_file = "{cl.pki.ca}"
        backend_proxy_protocol = true
        """) + backends_toml("", cl.stores, "imaps", "pop3s")
    h1 = cl.make_mmp("h1", "h1.test", mmp_toml, listeners=("imap", "pop3"), listener_options=pp)
    h2 = cl.make_mmp("h2", "h2.test", mmp_toml, listeners=("imap", "pop3"), listener_options=pp)
    imap_port, pop3_port = free_ports(2)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(textwrap.dedent(f"""\
        global
            maxconn 256

        defaults
            mode tcp
            timeout connect 5s
            timeout client 60s
            timeout server 60s

        frontend imap
            bind 127.0.0.1:{imap_port}
            default_backend mmps_imap

        backend mmps_imap
            balance roundrobin
            server h1 127.0.0.1:{h1.ports["imap"]} send-proxy-v2
            server h2 127.0.0.1:{h2.ports["imap"]} send-proxy-v2

        frontend pop3
            bind 127.0.0.1:{pop3_port}
            default_backend mmps_pop3

        backend mmps_pop3
            balance roundrobin
            server h1 127.0.0.1:{h1.ports["pop3"]} send-proxy-v2
            server h2 127.0.0.1:{h2.ports["pop3"]} send-proxy-v2
        """))
    check = subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, f"haproxy -c: {check.stdout}{check.stderr}"
    hlog = tmp_path / "haproxy.log"
    proc = None
    try:
        h1.start()
        h2.start()
        with open(hlog, "wb") as out:
            proc = subprocess.Popen([haproxy, "-f", str(cfg), "-db"], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=out)
        ok = wait_until(lambda: proc.poll() is not None or (port_accepts(imap_port) and port_accepts(pop3_port)),
                        15, 0.1)
        assert ok and proc.poll() is None, f"haproxy did not start: {hlog.read_text(errors='replace')}"

        logins = []  # (user, source port)
        # roundrobin alternates: this order gives each mmp users of both stores
        for i, user in enumerate((ALICE, ALICE, BOB, BOB, ALICE, BOB)):
            m = SrcIMAP4(imap_port, source=HAPROXY_CLIENT_IP)
            try:
                m.login(user, PASSWORDS[user])
                typ, _ = m.select("INBOX", readonly=True)
                assert typ == "OK"
                logins.append((user, src_port(m)))
            except imaplib.IMAP4.error as e:
                pytest.fail(f"IMAP login {i} of {user} through HAProxy failed: {e}\n"
                            f"{cl.logs([h1, h2, cl.s1, cl.s2])}", pytrace=False)
            finally:
                logout(m)
        p = SrcPOP3(pop3_port, source=HAPROXY_CLIENT_IP)
        try:
            p.user(BOB)
            p.pass_(PASSWORDS[BOB])
            p.stat()
            pop_port = src_port(p)
        finally:
            logout(p)

        # both mmps served logins
        for h in (h1, h2):
            users = {u for u in (ALICE, BOB) if log_lines(h, "logged in; relaying", f"user={u}")}
            assert users == {ALICE, BOB}, f"{h.name} served {users}, not users of both stores\n{h.log()}"
        for user, port in logins:
            peer = f"peer={HAPROXY_CLIENT_IP}:{port}"
            # the mmp learnt the client from HAProxy's PROXY v2 header
            assert log_lines(h1, peer) or log_lines(h2, peer), f"no mmp logged {peer}"
            # ... and the store from the mmp's PROXY v2 header and ID
            store = cl.store_of(user)
            lines = wait_log(store, "imap login", f"user={user}", peer)
            assert lines, f"{store.name} did not log {peer} for {user}:\n{store.log()}"
            assert f"client={HAPROXY_CLIENT_IP}" in lines[-1], lines[-1]
        peer = f"peer={HAPROXY_CLIENT_IP}:{pop_port}"
        assert wait_log(cl.s2, "pop3 login", f"user={BOB}", peer), f"store2 did not log {peer}:\n{cl.s2.log()}"
        # a wrong password behind HAProxy: the limiter and the answer are per client
        tagged, _ = raw_login(imap_port, ALICE, "wrong-password", source=HAPROXY_CLIENT_IP)
        assert tagged.startswith(b"a NO [AUTHENTICATIONFAILED]"), tagged
        h1.stop()
        h2.stop()
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        h1.cleanup()
        h2.cleanup()


# --------------------------------------------------------------------------
# a component down (these stop and restart processes: keep them last)


def test_store_down(cl):
    """A stopped store: NO [UNAVAILABLE] / -ERR [SYS/TEMP], and the mmp's
    log names the store; users of the other store are unaffected."""
    cl.s2.stop()
    try:
        tagged, _ = raw_login(cl.mmp.ports["imap"], BOB, PASSWORDS[BOB])
        assert tagged.startswith(b"a NO [UNAVAILABLE]"), tagged
        err = pop3_login_error(cl.mmp.ports["pop3"], BOB, PASSWORDS[BOB])
        assert err.startswith("-ERR [SYS/TEMP]"), err
        lines = wait_log(cl.mmp, "store=store2.test", "cannot connect to the mail store")
        assert lines, f"the mmp's log does not name store2.test:\n{cl.mmp.log()}"
        m = mmp_login(cl, ALICE)
        logout(m)
    finally:
        cl.s2.start()
    m = mmp_login(cl, BOB)
    logout(m)


def test_directory_down(cl):
    """slapd stopped: NO [UNAVAILABLE] / -ERR [SYS/TEMP] (never
    AUTHENTICATIONFAILED); logins work again once it is back."""
    cl.ldap.stop()
    try:
        tagged, _ = raw_login(cl.mmp.ports["imap"], ALICE, PASSWORDS[ALICE])
        assert tagged.startswith(b"a NO [UNAVAILABLE]"), tagged
        err = pop3_login_error(cl.mmp.ports["pop3"], ALICE, PASSWORDS[ALICE])
        assert err.startswith("-ERR [SYS/TEMP]"), err
        assert wait_log(cl.mmp, "directory unavailable during login"), cl.mmp.log()
    finally:
        cl.ldap.start()

    def works():
        tagged, _ = raw_login(cl.mmp.ports["imap"], ALICE, PASSWORDS[ALICE])
        return tagged.startswith(b"a OK")

    assert wait_until(works, 20, 0.5), f"logins do not work again after slapd restarted\n{cl.mmp.log()}"
