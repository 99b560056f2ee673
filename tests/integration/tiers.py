"""Helpers for the two-tier tests: a restartable private slapd, msgd
processes in one role each (store, mta-in, all-in-one) against it, and a
private Postfix instance.

Every process listens on free loopback ports only and lives in its own
temporary folder. Nothing here touches a system service.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import pwd
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from conftest import (
    CLIENT_HELO,
    LISTENERS,
    REPO_ROOT,
    STOP_TIMEOUT,
    free_ports,
    msgd_bin,
    msgd_env,
    port_accepts,
    wait_for_ports,
)

sys.path.insert(0, str(REPO_ROOT / "tests" / "ldap"))
import slapd as slapd_mod  # noqa: E402  (tests/ldap/slapd.py)

DOMAIN = "example.test"
LDAP_INSTALL = "apt-get install -y slapd ldap-utils (or scripts/install-test-deps.sh)"
POSTFIX_INSTALL = (
    'echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; '
    "DEBIAN_FRONTEND=noninteractive apt-get install -y postfix (or scripts/install-test-deps.sh)"
)
# A loopback UDP port with no DNS server behind it (see Node.config_text).
DEAD_DNS_PORT = 9

# Listener names each role serves; the others are disabled in the config.
ROLE_LISTENERS = {
    "store": ("lmtp", "imap", "pop3"),
    "mta-in": ("smtp",),
    "all-in-one": ("smtp", "lmtp", "imap", "pop3"),
    "mmp": ("imap", "imaps", "pop3", "pop3s"),
}

# Extra directory entries, loaded after tests/ldap/base.ldif.
EXTRA_LDIF = textwrap.dedent("""\
    # mailHost names a store whose LMTP address (in mta-in's hosts map) is
    # really store1: store1 answers 550 5.1.6, a permanent failure.
    dn: uid=misrouted,ou=people,dc=example,dc=test
    objectClass: inetOrgPerson
    objectClass: msgdMailUser
    uid: misrouted
    cn: Mis Routed
    sn: Routed
    mail: misrouted@example.test
    mailHost: store3.test
    userPassword: {SSHA}54E4mFiOifM43Tws1vSsusotyHD10jSa

    # Keeps a copy and forwards to a user on the other store and offsite.
    dn: uid=keeper,ou=people,dc=example,dc=test
    objectClass: inetOrgPerson
    objectClass: msgdMailUser
    uid: keeper
    cn: Keeper Copy
    sn: Copy
    mail: keeper@example.test
    mailForwardingAddress: frank@example.test
    mailForwardingAddress: keeper@elsewhere.test
    mailDeliveryOption: mailbox
    mailDeliveryOption: forward
    mailHost: store1.test
    userPassword: {SSHA}54E4mFiOifM43Tws1vSsusotyHD10jSa
    """)
# Passwords: base.ldif says "<uid>-secret"; frank, nomail and the extra
# entries share frank's hash.
PASSWORDS = {
    "alice@example.test": "alice-secret",
    "bob@example.test": "bob-secret",
    "carol@example.test": "carol-secret",
    "dave@example.test": "dave-secret",
    "erin@example.test": "erin-secret",
    "frank@example.test": "frank-secret",
    "misrouted@example.test": "frank-secret",
    "keeper@example.test": "frank-secret",
}


def short_tmpdir(prefix: str) -> Path:
    """A folder under /tmp with a short path (unix socket paths are limited
    to 107 bytes) that other local users may traverse (Postfix's lmtp client
    runs as user postfix)."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    d.chmod(0o755)
    return d


# --------------------------------------------------------------------------
# LDAP


class Ldap:
    """A private slapd (tests/ldap/slapd.py) that can be stopped and started
    again on the same port with the same data (base.ldif + EXTRA_LDIF)."""

    def __init__(self, root: Path, extra_ldif: str = EXTRA_LDIF, debug: str = "0"):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.ldif = root / "directory.ldif"
        base = (REPO_ROOT / "tests" / "ldap" / "base.ldif").read_text()
        self.ldif.write_text(base.rstrip("\n") + "\n\n" + extra_ldif)
        self.port = free_ports(1)[0]
        self.debug = debug
        self.inst: slapd_mod.Slapd | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}/"

    def start(self) -> "Ldap":
        assert self.inst is None, "slapd already running"
        inst = slapd_mod.Slapd(str(self.ldif), self.port, debug=self.debug)
        try:
            inst.start()
        except (RuntimeError, FileNotFoundError) as e:
            inst.stop()
            pytest.fail(f"cannot start slapd: {e}\nInstall it with: {LDAP_INSTALL}", pytrace=False)
        except subprocess.CalledProcessError as e:
            inst.stop()
            pytest.fail(f"slapadd failed: {e.stderr!r}", pytrace=False)
        self.inst = inst
        return self

    def stop(self) -> None:
        if self.inst is not None:
            self.inst.stop()
            self.inst = None
        # the port must refuse connections now
        assert not port_accepts(self.port), f"slapd still listening on {self.port}"

    @property
    def running(self) -> bool:
        return self.inst is not None

    def toml(self, cache_ttl: int = 1, pool_size: int = 4, auth_pool_size: int = 2) -> str:
        return textwrap.dedent(f"""\
            [directory]
            backend = "ldap"
            cache_ttl = {cache_ttl}

            [directory.ldap]
            urls = ["{self.url}"]
            base_dn = "{slapd_mod.BASE_DN}"
            bind_dn = "{slapd_mod.BIND_DN}"
            bind_password = "{slapd_mod.BIND_PASSWORD}"
            connect_timeout = 2
            operation_timeout = 5
            health_check_idle = 1
            pool_size = {pool_size}
            auth_pool_size = {auth_pool_size}
            """)


# --------------------------------------------------------------------------
# msgd in one role


class Node:
    """One `msgd --role ROLE --config F` process with its own data folder and
    free loopback ports for the listeners its role serves."""

    def __init__(self, root: Path, role: str, name: str, ldap: Ldap | None, extra: str = "",
                 log_level: str | None = None, cache_ttl: int = 1,
                 listeners: tuple[str, ...] | None = None,
                 listener_options: dict[str, str] | None = None,
                 ldap_pools: tuple[int, int] | None = None):
        """`listeners`: the listeners to enable (default: ROLE_LISTENERS of
        the role); `listener_options`: extra TOML lines per listener name,
        e.g. {"imap": "proxy_protocol = true"}; `ldap_pools`: LDAP
        (pool_size, auth_pool_size), default (4, 2)."""
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.role = role
        self.name = name
        self.ldap = ldap
        self.data_dir = root / "data"
        self.config_path = root / "msgd.toml"
        self.stderr_path = root / "msgd.stderr.log"
        wanted = tuple(listeners) if listeners is not None else ROLE_LISTENERS[role]
        self.listener_options = dict(listener_options or {})
        ports = free_ports(len(wanted) + 1)
        self.ports = dict(zip(wanted, ports))
        # The admin listener (/metrics, /health), one per process.
        self.admin_port = ports[-1]
        # unix sockets need a short path
        self.sock_dir = short_tmpdir(f"msgd-{name}-") if "lmtp" in wanted else None
        self.lmtp_socket = self.sock_dir / "lmtp.sock" if self.sock_dir else None
        self.extra = extra
        self.cache_ttl = cache_ttl
        self.ldap_pools = ldap_pools or (4, 2)
        self.log_level = log_level or os.environ.get("MSGD_TEST_LOG_LEVEL", "info")
        self.proc: subprocess.Popen | None = None
        self.config_path.write_text(self.config_text())

    def config_text(self) -> str:
        lines = [
            "[server]",
            f'hostname = "{self.name}"',
            f'data_dir = "{self.data_dir}"',
            f'domain = "{DOMAIN}"',
            "shutdown_grace = 5",
            "",
            "[log]",
            f'level = "{self.log_level}"',
            'format = "text"',
            "",
        ]
        for listener in LISTENERS:
            lines.append(f"[listener.{listener}]")
            if listener in self.ports:
                lines += [f'bind = ["127.0.0.1:{self.ports[listener]}"]', "enabled = true"]
                if listener == "lmtp":
                    lines.append(f'unix = "{self.lmtp_socket}"')
                if listener in self.listener_options:
                    lines.append(self.listener_options[listener])
            else:
                lines += ["enabled = false", 'unix = ""']
            lines.append("")
        # Never ask a name server off this machine: MX lookups (forwards to
        # other domains) go to a loopback port where nothing answers, so such
        # mail is deferred and waits in the queue.
        lines += ["[dns]", f'nameservers = ["127.0.0.1:{DEAD_DNS_PORT}"]', "timeout = 1", ""]
        lines += ["[admin]", f'bind = ["127.0.0.1:{self.admin_port}"]', ""]
        text = "\n".join(lines) + "\n"
        if self.ldap is not None:
            text += self.ldap.toml(self.cache_ttl, *self.ldap_pools) + "\n"
        return text + textwrap.dedent(self.extra)

    # -- process

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 20.0) -> "Node":
        assert not self.running, f"{self.name} already running"
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [msgd_bin(), "--role", self.role, "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                cwd=self.root,
                env=msgd_env(),
            )
        wait_for_ports(self.proc, list(self.ports.values()), timeout, self.log, f"msgd --role {self.role} ({self.name})")
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM; asserts a clean exit (status 0) in time."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        rc = proc.poll()
        if rc is not None:
            pytest.fail(f"{self.name} had already exited (status {rc})\n{self.log()}", pytrace=False)
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"{self.name} did not exit within {timeout:.0f}s of SIGTERM\n{self.log()}", pytrace=False)
        assert rc == 0, f"{self.name} exited with status {rc} after SIGTERM\n{self.log()}"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.kill()
        if self.sock_dir is not None:
            shutil.rmtree(self.sock_dir, ignore_errors=True)

    def log(self, tail: int = 12000) -> str:
        try:
            text = self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return f"--- {self.name} ({self.role}) log tail ---\n" + text[-tail:]

    # -- clients

    def smtp(self, timeout: float = 20) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.ports["smtp"], local_hostname=CLIENT_HELO, timeout=timeout)

    def imap(self, address: str, password: str | None = None, timeout: float = 20) -> imaplib.IMAP4:
        m = imaplib.IMAP4("127.0.0.1", self.ports["imap"], timeout=timeout)
        m.login(address, password or PASSWORDS[address])
        return m

    def stored_files_with(self, needle: str) -> list[Path]:
        """Message files (`*.msg` in any partition) containing `needle`:
        whatever a client could or could not see, the store's disk says
        whether a message reached it."""
        out = []
        for f in self.data_dir.glob("partition/**/*.msg"):
            try:
                if needle.encode() in f.read_bytes():
                    out.append(f)
            except FileNotFoundError:
                pass
        return out

    def queue_files(self) -> list[Path]:
        q = self.data_dir / "queue"
        return sorted(q.glob("*.q")) if q.is_dir() else []


@contextlib.contextmanager
def running(ldap: Ldap, *nodes: Node):
    """Starts slapd, then the nodes in order, for the length of a `with`.
    After a body that ended normally every node still running is stopped
    (which checks it exits cleanly); whatever happened, every node is
    cleaned up (killed if need be) and slapd stopped, also when a start
    failed."""
    try:
        ldap.start()
        for n in nodes:
            n.start()
        yield nodes
        for n in nodes:
            if n.running:
                n.stop()
    finally:
        for n in nodes:
            n.cleanup()
        if ldap.running:
            ldap.stop()


def last_header(node: Node, address: str, subject: str, mailbox: str = "INBOX") -> bytes | None:
    """The header of the newest message in `mailbox` whose Subject contains
    `subject`; None if there is none (or no such mailbox)."""
    m = node.imap(address)
    try:
        typ, _ = m.select(f'"{mailbox}"', readonly=True)
        if typ != "OK":
            return None
        typ, data = m.search(None, "HEADER", "Subject", subject)
        ids = data[0].split()
        if not ids:
            return None
        typ, msg = m.fetch(ids[-1], "(BODY.PEEK[HEADER])")
        return msg[0][1]
    finally:
        m.logout()


def rcpt_replies(node: Node, sender: str, rcpts: list[str]) -> dict[str, tuple[int, str]]:
    """MAIL FROM then RCPT TO each address; returns {address: (code, text)}.
    Ends with RSET/QUIT: nothing is sent."""
    out = {}
    with node.smtp() as s:
        s.ehlo()
        code, msg = s.mail(sender)
        assert code == 250, f"MAIL FROM:<{sender}> got {code} {msg!r}"
        for r in rcpts:
            code, msg = s.rcpt(r)
            out[r] = (code, msg.decode("utf-8", "replace"))
        s.rset()
    return out


def send(node: Node, sender: str, rcpts, data: bytes) -> None:
    """Sends one message through mta-in; asserts every RCPT and the DATA were
    accepted (250 means: durable in mta-in's queue)."""
    if isinstance(rcpts, str):
        rcpts = [rcpts]
    with node.smtp() as s:
        s.ehlo()
        refused = s.sendmail(sender, list(rcpts), data)
    assert refused == {}, f"recipients refused: {refused}"


def message_ids(node: Node, address: str, mailbox: str = "INBOX") -> list[str]:
    """Message-IDs of every message in a mailbox (duplicates kept)."""
    m = node.imap(address)
    try:
        typ, data = m.select(mailbox, readonly=True)
        assert typ == "OK", f"EXAMINE {mailbox} for {address} on {node.name}: {data}"
        if int(data[0]) == 0:
            return []
        typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        assert typ == "OK", f"FETCH Message-ID for {address} on {node.name}: {data}"
        ids = []
        for item in data:
            if isinstance(item, tuple):
                value = item[1].decode("utf-8", "replace").split(":", 1)
                ids.append(value[1].strip() if len(value) == 2 else "")
        return ids
    finally:
        try:
            m.logout()
        except Exception:
            pass


def fetch_all(node: Node, address: str, mailbox: str = "INBOX") -> list[bytes]:
    m = node.imap(address)
    try:
        typ, data = m.select(mailbox, readonly=True)
        assert typ == "OK", data
        if int(data[0]) == 0:
            return []
        typ, data = m.fetch("1:*", "(BODY.PEEK[])")
        assert typ == "OK", data
        return [item[1] for item in data if isinstance(item, tuple)]
    finally:
        try:
            m.logout()
        except Exception:
            pass


def wait_for_ids(node: Node, address: str, want: list[str], timeout: float = 20.0,
                 mailbox: str = "INBOX") -> list[str]:
    """Polls until every Message-ID in `want` is in the mailbox; returns the
    mailbox's ids. Fails naming what is missing."""
    deadline = time.monotonic() + timeout
    while True:
        ids = message_ids(node, address, mailbox)
        missing = [w for w in want if w not in ids]
        if not missing:
            return ids
        if time.monotonic() >= deadline:
            pytest.fail(f"{address} on {node.name}: {missing} not delivered within {timeout:.0f}s; "
                        f"mailbox holds {ids}", pytrace=False)
        time.sleep(0.25)


# --------------------------------------------------------------------------
# Postfix


def postfix_tool(name: str) -> str:
    for d in ("/usr/sbin", "/usr/bin"):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    p = shutil.which(name)
    if p is None:
        pytest.fail(f"{name} (Postfix) is not installed: {POSTFIX_INSTALL}", pytrace=False)
    return p


class Postfix:
    """A private Postfix instance: its own config, queue and data folders,
    smtpd on a free loopback port, mail for example.test relayed to
    `transport` (e.g. lmtp:inet:127.0.0.1:PORT or lmtp:unix:/path)."""

    def __init__(self, transport: str):
        if os.geteuid() != 0:
            pytest.fail("the Postfix test runs a private Postfix instance and needs root", pytrace=False)
        self.postfix = postfix_tool("postfix")
        self.postconf = postfix_tool("postconf")
        self.root = short_tmpdir("msgd-postfix-")
        self.config_dir = self.root / "etc"
        self.queue_dir = self.root / "spool"
        self.data_dir = self.root / "lib"
        self.log_path = self.root / "maillog"
        self.port = free_ports(1)[0]
        self.transport = transport
        self.started = False
        for d in (self.config_dir, self.queue_dir, self.data_dir):
            d.mkdir()
        # postfix check wants its data folder owned by mail_owner
        pw = pwd.getpwnam("postfix")
        os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        self._write_config()

    def _write_config(self) -> None:
        daemon_dir = subprocess.run([self.postconf, "-h", "-d", "daemon_directory"], capture_output=True,
                                    text=True).stdout.strip() or "/usr/lib/postfix/sbin"
        meta_dir = "/etc/postfix"
        main = textwrap.dedent(f"""\
            compatibility_level = 3.6
            config_directory = {self.config_dir}
            queue_directory = {self.queue_dir}
            data_directory = {self.data_dir}
            daemon_directory = {daemon_dir}
            meta_directory = {meta_dir}
            mail_owner = postfix
            setgid_group = postdrop
            myhostname = postfix.test
            mydomain = postfix.test
            myorigin = postfix.test
            mydestination =
            mynetworks = 127.0.0.0/8
            inet_interfaces = 127.0.0.1
            inet_protocols = ipv4
            relay_domains = {DOMAIN}
            relay_transport = {self.transport}
            default_transport = error:no outbound mail from this test instance
            smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
            smtp_dns_support_level = disabled
            disable_dns_lookups = yes
            lmtp_host_lookup = native
            alias_maps =
            alias_database =
            local_recipient_maps =
            maillog_file = {self.log_path}
            maillog_file_prefixes = {self.root}
            biff = no
            smtputf8_enable = no
            queue_run_delay = 1s
            minimal_backoff_time = 1s
            maximal_backoff_time = 2s
            lmtp_connection_cache_on_demand = no
            import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C
            """)
        (self.config_dir / "main.cf").write_text(main)
        master = textwrap.dedent(f"""\
            127.0.0.1:{self.port} inet n - n - - smtpd
            pickup    unix  n       -       n       60      1       pickup
            cleanup   unix  n       -       n       -       0       cleanup
            qmgr      unix  n       -       n       300     1       qmgr
            tlsmgr    unix  -       -       n       1000?   1       tlsmgr
            rewrite   unix  -       -       n       -       -       trivial-rewrite
            bounce    unix  -       -       n       -       0       bounce
            defer     unix  -       -       n       -       0       bounce
            trace     unix  -       -       n       -       0       bounce
            verify    unix  -       -       n       -       1       verify
            flush     unix  n       -       n       1000?   0       flush
            proxymap  unix  -       -       n       -       -       proxymap
            smtp      unix  -       -       n       -       -       smtp
            relay     unix  -       -       n       -       -       smtp
            showq     unix  n       -       n       -       -       showq
            error     unix  -       -       n       -       -       error
            retry     unix  -       -       n       -       -       error
            discard   unix  -       -       n       -       -       discard
            lmtp      unix  -       -       n       -       -       lmtp
            anvil     unix  -       -       n       -       1       anvil
            scache    unix  -       -       n       -       1       scache
            postlog   unix-dgram n  -       n       -       1       postlogd
            """)
        (self.config_dir / "master.cf").write_text(master)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAIL_")}
        res = subprocess.run([self.postfix, "-c", str(self.config_dir), *args], capture_output=True, text=True,
                             timeout=60, env=env)
        if check and res.returncode != 0:
            pytest.fail(f"`postfix -c {self.config_dir} {' '.join(args)}` exited {res.returncode}\n"
                        f"stdout: {res.stdout}\nstderr: {res.stderr}\nlog: {self.log()}", pytrace=False)
        return res

    def start(self) -> "Postfix":
        self.run("check")
        self.run("start")
        self.started = True
        deadline = time.monotonic() + 20
        while not port_accepts(self.port):
            if time.monotonic() > deadline:
                pytest.fail(f"postfix smtpd did not listen on {self.port}\n{self.log()}", pytrace=False)
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.started:
            self.run("stop", check=False)
            self.started = False
            # master exits asynchronously; wait for its pid file to go
            pid_file = self.queue_dir / "pid" / "master.pid"
            deadline = time.monotonic() + 15
            while pid_file.exists() and time.monotonic() < deadline:
                try:
                    pid = int(pid_file.read_text().strip())
                    os.kill(pid, 0)
                except (ValueError, ProcessLookupError, FileNotFoundError):
                    break
                time.sleep(0.1)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        try:
            return "--- postfix maillog ---\n" + self.log_path.read_text(errors="replace")[-8000:]
        except FileNotFoundError:
            return "(no postfix maillog)"
