"""MTA-STS (RFC 8461) for outbound delivery, end to end.

Real components: the msgd binary, dnsmasq as the pretend Internet's DNS
(MX, TXT `_mta-sts.DOMAIN`, `mta-sts.DOMAIN` -> 127.0.0.1), a small
Python HTTPS server serving the policies with a certificate from a
private CA (msgd trusts it through `mta.tls_ca_file`) on the test-only
`[mta_sts] policy_port`, and two small SMTP servers written here: one on
127.0.0.1 offering STARTTLS with a certificate from the same CA for the
MX names, one on 127.0.0.6 without STARTTLS. Everything is on loopback.

Domains (all policies are served by the HTTPS server):
  enf.test       MX mx.enf.test (TLS, valid cert), enforce mx: mx.enf.test
  wild.test      MX mx1.wild.test (TLS, valid cert), enforce mx: *.wild.test
  badmx.test     MX rogue.badmx.test, enforce mx: mx.badmx.test
  badcert.test   MX mx.badcert.test (TLS, cert not for that name), enforce
  notls.test     MX mx.notls.test (no STARTTLS), enforce
  testing.test   MX rogue.testing.test (no STARTTLS), testing mx: mx.testing.test
  override.test  MX mx.override.test (no STARTTLS), enforce, but
                 `mta.tls_policy` names the domain: the explicit policy wins
  plain.test     MX mx.plain.test (no STARTTLS), enforce; only contacted
                 after the HTTPS server is stopped (nothing cached)
  redirect.test, huge.test, html.test: MX without STARTTLS; the policy
                 host answers a redirect, a body over 64 KiB, or text/html:
                 no policy is taken and mail goes out as before
"""

from __future__ import annotations

import http.server
import re
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import MsgdFactory, free_ports, unique, wait_for_ports, wait_until
from test_mta_out import ALICE, USERS, FakeMta, _dnsmasq_bin, message, submit

TLS_IP, PLAIN_IP = "127.0.0.1", "127.0.0.6"

# domain -> (MX host, its address, policy body)
DOMAINS = {
    "enf.test": ("mx.enf.test", TLS_IP, "enforce", ["mx.enf.test"]),
    "wild.test": ("mx1.wild.test", TLS_IP, "enforce", ["*.wild.test"]),
    "badmx.test": ("rogue.badmx.test", TLS_IP, "enforce", ["mx.badmx.test"]),
    "badcert.test": ("mx.badcert.test", TLS_IP, "enforce", ["mx.badcert.test"]),
    "notls.test": ("mx.notls.test", PLAIN_IP, "enforce", ["mx.notls.test"]),
    "testing.test": ("rogue.testing.test", PLAIN_IP, "testing", ["mx.testing.test"]),
    "override.test": ("mx.override.test", PLAIN_IP, "enforce", ["mx.override.test"]),
    "plain.test": ("mx.plain.test", PLAIN_IP, "enforce", ["mx.plain.test"]),
    # Hostile policy hosts: each would defer if its policy were taken.
    "redirect.test": ("mx.redirect.test", PLAIN_IP, "enforce", ["mx.redirect.test"]),
    "huge.test": ("mx.huge.test", PLAIN_IP, "enforce", ["mx.huge.test"]),
    "html.test": ("mx.html.test", PLAIN_IP, "enforce", ["mx.html.test"]),
}
# Names the fake MTA's certificate covers (not mx.badcert.test).
MX_CERT_NAMES = ["mx.enf.test", "mx1.wild.test", "rogue.badmx.test"]


def policy_text(mode: str, mx: list[str]) -> str:
    return "version: STSv1\r\n" f"mode: {mode}\r\n" + "".join(f"mx: {m}\r\n" for m in mx) + "max_age: 86400\r\n"


# --------------------------------------------------------------------------
# a private CA


def _openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def make_ca(root: Path) -> Path:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-days", "2", "-subj", "/CN=msgd test STS CA", "-keyout", "ca.key", "-out", "ca.pem",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=root)
    return root / "ca.pem"


def make_leaf(root: Path, name: str, sans: list[str]) -> tuple[Path, Path]:
    (root / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=" + ",".join(f"DNS:{s}" for s in sans) + "\n")
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-subj", f"/CN={sans[0]}", "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=root)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext", cwd=root)
    return root / f"{name}.pem", root / f"{name}.key"


# --------------------------------------------------------------------------
# DNS, the policy host, the MTAs


class Dns:
    def __init__(self, root: Path):
        self.port = free_ports(1)[0]
        self.log_path = root / "dnsmasq.log"
        args = [
            _dnsmasq_bin(), "--keep-in-foreground", "--conf-file=/dev/null", f"--port={self.port}",
            "--no-resolv", "--no-hosts", "--listen-address=127.0.0.1", "--bind-interfaces",
            "--local=/test/", "--pid-file=", "--log-facility=-", "--user=root", "--group=root",
        ]
        for i, (domain, (mx, ip, _, _)) in enumerate(DOMAINS.items()):
            args += [f"--mx-host={domain},{mx},10", f"--host-record={mx},{ip}",
                     f"--host-record=mta-sts.{domain},127.0.0.1",
                     f"--txt-record=_mta-sts.{domain},v=STSv1; id={i}x1;"]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for_ports(self.proc, [self.port], 10, lambda: self.log_path.read_text(errors="replace"), "dnsmasq")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.log.close()


class PolicyServer:
    """HTTPS on 127.0.0.1:<port>; answers by Host header."""

    def __init__(self, root: Path, port: int):
        cert, key = make_leaf(root, "policy", [f"mta-sts.{d}" for d in DOMAINS])
        self.fetches: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                host = (self.headers.get("Host") or "").split(":")[0]
                domain = host.removeprefix("mta-sts.")
                outer.fetches.append(domain)
                if self.path != "/.well-known/mta-sts.txt" or domain not in DOMAINS:
                    self.send_error(404)
                    return
                _, _, mode, mx = DOMAINS[domain]
                body = policy_text(mode, mx).encode()
                if domain == "redirect.test":
                    self.send_response(301)
                    self.send_header("Location", "https://mta-sts.enf.test/.well-known/mta-sts.txt")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if domain == "huge.test":
                    body += b"x-padding: " + b"y" * (70 * 1024) + b"\r\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/html" if domain == "html.test" else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("mta_sts_world")
    ca = make_ca(root)
    cert, key = make_leaf(root, "mx", MX_CERT_NAMES)
    mx_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    mx_ctx.load_cert_chain(str(cert), str(key))
    dns = Dns(root)
    smtp_port, policy_port = free_ports(2)
    tls_mta = FakeMta(smtp_port, mx_ctx, TLS_IP)
    plain_mta = FakeMta(smtp_port, None, PLAIN_IP)
    https = PolicyServer(root, policy_port)
    factory = MsgdFactory(tmp_path_factory, "mta_sts")
    inst = factory(users=USERS, start=False)
    inst.dns_nameserver = f"127.0.0.1:{dns.port}"
    inst.config_path.write_text(
        inst.config_text()
        + f'\n[mta]\nsmtp_port = {smtp_port}\ndelivery_timeout = 20\ntls_ca_file = "{ca}"\n'
        + '\n[mta.tls_policy]\n"override.test" = "opportunistic"\n'
        + "\n[queue]\nretry_base = 1\nretry_max = 2\n"
        + f"\n[mta_sts]\nenabled = true\ntimeout = 5\npolicy_port = {policy_port}\n")
    inst.start()
    wait_for_ports(inst.proc, [inst.ports["submission"]], 10, inst.log)
    yield {"inst": inst, "tls": tls_mta, "plain": plain_mta, "https": https, "root": root}
    factory.cleanup()
    tls_mta.stop()
    plain_mta.stop()
    https.stop()
    dns.stop()


def queue_error(inst, rcpt: str) -> str | None:
    """The last error the queue shows for `rcpt`, once it has one."""
    res = inst.cli("queue", "list")
    assert res.returncode == 0, res.stderr
    m = re.search(r"(?m)^    " + re.escape(rcpt) + r" \S+ attempts=[1-9]\d* \((.*)\)$", res.stdout)
    return m.group(1) if m else None


def send(inst, domain: str) -> str:
    rcpt = f"{unique('u')}@{domain}"
    assert submit(inst, [rcpt], message(rcpt, unique("sts"))) == {}
    return rcpt


def assert_deferred(w, rcpt: str, code: str) -> str:
    inst = w["inst"]
    err = wait_until(lambda: queue_error(inst, rcpt), 30, 0.5)
    assert err, f"no deferral shown for {rcpt}:\n{inst.cli('queue', 'list').stdout}\n{inst.log(6000)}"
    assert err.startswith("4") and code in err, err
    assert not w["tls"].for_rcpt(rcpt) and not w["plain"].for_rcpt(rcpt), "must not be delivered"
    return err


# --------------------------------------------------------------------------
# tests


def test_enforce_with_valid_tls_delivers(world):
    rcpt = send(world["inst"], "enf.test")
    assert wait_until(lambda: world["tls"].for_rcpt(rcpt), 30, 0.3), world["inst"].log(6000)
    assert world["tls"].for_rcpt(rcpt)[0]["tls"] is True
    assert "enf.test" in world["https"].fetches
    # The policy is cached durably under data_dir.
    cached = world["inst"].data_dir / "mta-sts" / "enf.test.json"
    assert cached.exists() and '"enforce"' in cached.read_text()


def test_enforce_wildcard_mx_delivers(world):
    rcpt = send(world["inst"], "wild.test")
    assert wait_until(lambda: world["tls"].for_rcpt(rcpt), 30, 0.3), world["inst"].log(6000)
    assert world["tls"].for_rcpt(rcpt)[0]["tls"] is True


def test_enforce_mx_not_in_policy_is_deferred(world):
    rcpt = send(world["inst"], "badmx.test")
    err = assert_deferred(world, rcpt, "4.7.5")
    assert "MTA-STS" in err


def test_enforce_certificate_not_for_the_mx_is_deferred(world):
    rcpt = send(world["inst"], "badcert.test")
    assert_deferred(world, rcpt, "4.7.5")


def test_enforce_without_starttls_is_deferred(world):
    rcpt = send(world["inst"], "notls.test")
    assert_deferred(world, rcpt, "4.7.4")


def test_testing_mode_delivers_and_logs(world):
    rcpt = send(world["inst"], "testing.test")
    assert wait_until(lambda: world["plain"].for_rcpt(rcpt), 30, 0.3), world["inst"].log(6000)
    assert world["plain"].for_rcpt(rcpt)[0]["tls"] is False
    assert wait_until(lambda: "MTA-STS testing" in world["inst"].log(), 10, 0.3)


def test_explicit_tls_policy_wins_over_mta_sts(world):
    rcpt = send(world["inst"], "override.test")
    assert wait_until(lambda: world["plain"].for_rcpt(rcpt), 30, 0.3), world["inst"].log(6000)
    assert "override.test" not in world["https"].fetches, "an explicit tls_policy skips MTA-STS"


@pytest.mark.parametrize("domain", ["redirect.test", "huge.test", "html.test"])
def test_hostile_policy_host_gives_no_policy(world, domain):
    rcpt = send(world["inst"], domain)
    assert wait_until(lambda: world["plain"].for_rcpt(rcpt), 30, 0.3), world["inst"].log(6000)
    assert domain in world["https"].fetches
    assert not (world["inst"].data_dir / "mta-sts" / f"{domain}.json").exists()


def test_cached_policy_survives_restart_without_the_policy_host(world):
    """Last: stops the HTTPS server. notls.test's policy was cached by
    test_enforce_without_starttls_is_deferred; plain.test's never was."""
    inst = world["inst"]
    assert (inst.data_dir / "mta-sts" / "notls.test.json").exists()
    inst.stop()
    world["https"].stop()
    inst.start()
    wait_for_ports(inst.proc, [inst.ports["submission"]], 10, inst.log)
    # Control: with the policy host down and nothing cached there is no
    # policy, and mail goes out in plain text as before MTA-STS.
    rcpt = send(inst, "plain.test")
    assert wait_until(lambda: world["plain"].for_rcpt(rcpt), 30, 0.3), inst.log(6000)
    # The cached enforce policy still holds: deferred again.
    rcpt = send(inst, "notls.test")
    assert_deferred(world, rcpt, "4.7.4")


def test_tlsrpt_report_files(world):
    """TLS-RPT (RFC 8460) aggregate files, written at shutdown (and every
    10 minutes) under data_dir/tlsrpt/<day>/; counts survive the restart."""
    import json
    inst = world["inst"]
    inst.stop()
    days = sorted((inst.data_dir / "tlsrpt").iterdir())
    assert days, "no report folder"
    def rep(domain):
        return json.loads((days[-1] / f"{domain}.json").read_text())["policies"][0]
    notls = rep("notls.test")
    assert notls["policy"]["policy-type"] == "sts"
    assert notls["policy"]["policy-string"][1] == "mode: enforce"
    # Deferred before and after the restart: both runs are counted.
    fails = notls["failure-details"]
    assert fails and fails[0]["result-type"] == "starttls-not-supported", fails
    assert notls["summary"]["total-failure-session-count"] >= 2
    assert rep("enf.test")["summary"]["total-successful-session-count"] >= 1
    kinds = {d["result-type"] for d in rep("badcert.test")["failure-details"]}
    assert kinds == {"certificate-host-mismatch"}, kinds
    kinds = {d["result-type"] for d in rep("badmx.test")["failure-details"]}
    assert kinds == {"validation-failure"}, kinds
