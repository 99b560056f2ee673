"""ManageSieve through the mmp (issue 16; docs/mmp.md, docs/sieve.md).

Two tiers with real components: a private slapd (tests/ldap/base.ldif plus
test_mmp's entries), two `msgd --role store` with their ManageSieve
listeners (store1.test: alice, store2.test: bob), and two `msgd --role mmp`
in front of them, serving only ManageSieve:

    sieve-connect --> mmp  "mmp.test"  (login_mode credentials, STARTTLS to
                                        the stores, CA-verified)
                  --> mmpp "mmpp.test" (login_mode proxyauth, plaintext to
                                        the stores)

Scripts are uploaded and activated with a client we did not write
(sieve-connect, which uses STARTTLS when offered); a delivery by LMTP to the
user's store then shows the script's effect over IMAP at that store.
"""

from __future__ import annotations

import base64
import imaplib
import os
import shutil
import socket
import ssl
import subprocess
import textwrap
import time

import pytest

from conftest import wait_until
from test_mmp import (
    ALICE,
    BOB,
    MMP_LDIF,
    PROXY_LOGIN,
    PROXY_PASSWORD,
    Pki,
    deliver,
    store_toml,
)
from tiers import EXTRA_LDIF, PASSWORDS, Ldap, Node, short_tmpdir

SIEVE_INSTALL = "apt-get install -y sieve-connect (or scripts/install-test-deps.sh)"


def add_managesieve(node: Node, port: int) -> None:
    """tiers.Node writes only conftest's listeners: ManageSieve is added."""
    node.ports["managesieve"] = port
    with open(node.config_path, "a") as f:
        f.write(f'\n[listener.managesieve]\nbind = ["127.0.0.1:{port}"]\nenabled = true\n')


class Cluster:
    def __init__(self, root):
        from conftest import free_ports

        self.root = root
        self.pki = Pki(root / "pki")
        self.ldap = Ldap(root / "ldap", extra_ldif=EXTRA_LDIF + MMP_LDIF)
        self.stores = {}
        for name in ("store1.test", "store2.test"):
            n = Node(root / name.split(".")[0], "store", name, self.ldap, store_toml(name, self.pki),
                     listeners=("lmtp", "imap"))
            add_managesieve(n, free_ports(1)[0])
            self.stores[name] = n
        backends = ", ".join(f'"{name}" = "127.0.0.1:{n.ports["managesieve"]}"'
                             for name, n in self.stores.items())
        self.proxy_password_file = root / "proxy-password"
        self.proxy_password_file.write_text(PROXY_PASSWORD + "\n")
        self.proxy_password_file.chmod(0o600)
        self.mmp = self.make_mmp("mmp", "mmp.test", textwrap.dedent(f"""\
            login_mode = "credentials"
            backend_tls = "starttls"
            backend_ca_file = "{self.pki.ca}"
            """) + f"sieve_backends = {{ {backends} }}\n")
        self.mmpp = self.make_mmp("mmpp", "mmpp.test", textwrap.dedent(f"""\
            login_mode = "proxyauth"
            proxy_user = "{PROXY_LOGIN}"
            proxy_password_file = "{self.proxy_password_file}"
            backend_tls = "none"
            """) + f"sieve_backends = {{ {backends} }}\n")
        self.nodes = [*self.stores.values(), self.mmp, self.mmpp]

    def make_mmp(self, dirname: str, name: str, mmp_toml: str) -> Node:
        from conftest import free_ports

        cert, key = self.pki.server(name)
        extra = f'\n[tls]\ncert = "{cert}"\nkey = "{key}"\n\n[mmp]\n{mmp_toml}'
        n = Node(self.root / dirname, "mmp", name, self.ldap, extra, cache_ttl=0, listeners=())
        add_managesieve(n, free_ports(1)[0])
        return n

    def store_of(self, user: str) -> Node:
        return self.stores["store1.test" if user == ALICE else "store2.test"]

    def logs(self) -> str:
        return "\n".join(n.log(4000) for n in self.nodes)


@pytest.fixture(scope="module")
def cl():
    c = Cluster(short_tmpdir("msgd-mmpsieve-"))
    try:
        c.ldap.start()
        for n in c.nodes:
            n.start()
        yield c
        for n in c.nodes:
            n.stop()
    finally:
        for n in c.nodes:
            n.cleanup()
        if c.ldap.running:
            c.ldap.stop()
        if not os.environ.get("MSGD_TEST_KEEP"):
            shutil.rmtree(c.root, ignore_errors=True)


def sieve_connect(cl: Cluster, node: Node, user: str, *args: str, password: str | None = None):
    exe = shutil.which("sieve-connect")
    if exe is None:
        pytest.fail(f"sieve-connect is missing: {SIEVE_INSTALL}", pytrace=False)
    return subprocess.run(
        [exe, "--server", "127.0.0.1", "--port", str(node.ports["managesieve"]), "--user", user,
         "--tlscafile", str(cl.pki.ca), "--tlshostname", "127.0.0.1",
         "--authmech", "PLAIN", "--passwordfd", "0", *args],
        input=(password or PASSWORDS[user]) + "\n", capture_output=True, text=True, timeout=30,
    )


def upload(cl: Cluster, node: Node, user: str, name: str, script: str, tmp_path) -> None:
    f = tmp_path / f"{name}.sieve"
    f.write_text(script)
    res = sieve_connect(cl, node, user, "--localsieve", str(f), "--remotesieve", name, "--upload")
    assert res.returncode == 0, f"upload: {res.stdout}\n{res.stderr}\n{cl.logs()}"
    res = sieve_connect(cl, node, user, "--remotesieve", name, "--activate")
    assert res.returncode == 0, f"activate: {res.stdout}\n{res.stderr}\n{cl.logs()}"


def listed(cl: Cluster, node: Node, user: str) -> str:
    res = sieve_connect(cl, node, user, "--list")
    assert res.returncode == 0, f"list: {res.stdout}\n{res.stderr}\n{cl.logs()}"
    return res.stdout


def count(store: Node, user: str, mailbox: str) -> int:
    m = imaplib.IMAP4("127.0.0.1", store.ports["imap"], timeout=20)
    try:
        m.login(user, PASSWORDS[user])
        typ, data = m.select(f'"{mailbox}"', readonly=True)
        return int(data[0]) if typ == "OK" else -1
    finally:
        try:
            m.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def read_caps(f) -> bytes:
    out = b""
    while True:
        line = f.readline()
        assert line, f"eof after {out!r}"
        out += line
        if line.startswith((b"OK", b"NO", b"BYE")):
            return out


@pytest.mark.parametrize("user", [ALICE, BOB])
def test_rfc5804_script_uploaded_through_the_mmp_takes_effect_on_the_users_store(cl, user, tmp_path):
    """alice lives on store1, bob on store2: each script lands on the
    user's own store (by mailHost) and files the next delivery there."""
    store = cl.store_of(user)
    other = next(n for n in cl.stores.values() if n is not store)
    name = f"filing-{user.split('@')[0]}"
    upload(cl, cl.mmp, user, name,
           'require ["fileinto", "mailbox"];\r\n'
           'if header :contains "Subject" "report" { fileinto :create "Reports"; }\r\n', tmp_path)
    # Listed through the mmp and at the user's store; the other store has
    # no scripts for this user (a login there is refused: wrong store).
    assert name in listed(cl, cl.mmp, user)
    assert name in listed(cl, store, user)
    res = sieve_connect(cl, other, user, "--list")
    assert name not in res.stdout
    deliver(store, user, "Weekly report")
    assert wait_until(lambda: count(store, user, "Reports") == 1, 15, 0.2), cl.logs()
    deliver(store, user, "Lunch")
    time.sleep(0.5)
    assert count(store, user, "Reports") == 1


def test_proxyauth_mmp_logs_in_as_its_proxy_user_for_the_user(cl, tmp_path):
    upload(cl, cl.mmpp, ALICE, "via-proxy", "keep;\r\n", tmp_path)
    assert "via-proxy" in listed(cl, cl.stores["store1.test"], ALICE)
    store_log = cl.stores["store1.test"].stderr_path.read_text(errors="replace").replace('"', "")
    lines = [line for line in store_log.splitlines()
             if "proxy login" in line and "protocol=managesieve" in line
             and f"proxy={PROXY_LOGIN}" in line and f"user={ALICE}" in line]
    assert lines, store_log[-3000:]


def plain(user: str, password: str) -> bytes:
    return base64.b64encode(f"\0{user}\0{password}".encode())


def auth_failures(node: Node, protocol: str) -> int:
    text = node.stderr_path.read_text(errors="replace").replace('"', "")
    return sum(1 for line in text.splitlines()
               if "authentication failed" in line and f"protocol={protocol}" in line)


def test_wrong_password_is_refused_and_reaches_no_store(cl):
    before = [auth_failures(n, "managesieve") for n in cl.stores.values()]
    with socket.create_connection(("127.0.0.1", cl.mmp.ports["managesieve"]), timeout=20) as s:
        f = s.makefile("rb")
        caps = read_caps(f)
        assert b'"IMPLEMENTATION" "msgd-mmp"' in caps and b'"STARTTLS"' in caps, caps
        assert b"fileinto" in caps and b'"VERSION" "1.0"' in caps, caps
        s.sendall(b'LISTSCRIPTS\r\n')
        assert f.readline().startswith(b"NO"), "commands before login are refused"
        s.sendall(b'AUTHENTICATE "PLAIN" "' + plain(ALICE, "wrong") + b'"\r\n')
        assert f.readline() == b'NO "Authentication failed"\r\n'
        s.sendall(b"LOGOUT\r\n")
        assert f.readline().startswith(b"OK")
    # The mmp checked the password itself (the directory); no store saw it.
    assert auth_failures(cl.mmp, "mmp managesieve") >= 1, cl.mmp.log()
    assert [auth_failures(n, "managesieve") for n in cl.stores.values()] == before


def test_rfc5804_starttls_then_login_and_a_command_relayed(cl):
    ctx = ssl.create_default_context(cafile=str(cl.pki.ca))
    with socket.create_connection(("127.0.0.1", cl.mmp.ports["managesieve"]), timeout=20) as raw:
        f = raw.makefile("rb")
        read_caps(f)
        raw.sendall(b"STARTTLS\r\n")
        assert f.readline().startswith(b"OK")
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            f = s.makefile("rb")
            caps = read_caps(f)
            assert b'"SASL" "PLAIN"' in caps and b"STARTTLS" not in caps, caps
            s.sendall(b'AUTHENTICATE "PLAIN" {%d+}\r\n' % len(plain(BOB, PASSWORDS[BOB]))
                      + plain(BOB, PASSWORDS[BOB]) + b"\r\n")
            assert f.readline().startswith(b"OK"), cl.logs()
            # Now the store answers: its OWNER capability names bob.
            s.sendall(b"CAPABILITY\r\n")
            caps = read_caps(f)
            assert b'"OWNER" "bob@example.test"' in caps, caps
            s.sendall(b"LOGOUT\r\n")
            assert f.readline().startswith(b"OK")
