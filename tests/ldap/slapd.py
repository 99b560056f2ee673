#!/usr/bin/env python3
"""A private slapd for msgd's tests.

Starts OpenLDAP's slapd on a free loopback port, in a temporary folder, with
tests/ldap/slapd.conf.in, the Debian schemas (core, cosine, inetorgperson,
nis), tests/ldap/msgd.schema and tests/ldap/base.ldif (loaded with slapadd
before the start). Never touches a system slapd.

As a library (pytest):

    from slapd import Slapd
    with Slapd() as ldap:
        ldap.url          # ldap://127.0.0.1:PORT/
        ldap.base_dn      # dc=example,dc=test
        ldap.bind_dn, ldap.bind_password   # the service account

    # or: ldap = Slapd().start(); ...; ldap.stop()

From a shell (prints the URL, runs until Ctrl-C / SIGTERM):

    python3 tests/ldap/slapd.py [--ldif FILE] [--port N]

Needs: apt-get install -y slapd ldap-utils
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA_DIR = "/etc/ldap/schema"
INSTALL_HINT = "apt-get install -y slapd ldap-utils"

BASE_DN = "dc=example,dc=test"
BIND_DN = "cn=msgd,ou=services,dc=example,dc=test"
BIND_PASSWORD = "service-secret"


def _find(name):
    for d in ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    p = shutil.which(name)
    if p is None:
        raise RuntimeError(f"{name} not found: install it with `{INSTALL_HINT}`")
    return p


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Slapd:
    def __init__(self, ldif=None, port=None, debug="0"):
        self.ldif = ldif or os.path.join(HERE, "base.ldif")
        # slapd -d level: "0" is quiet; "stats" (256) logs every operation
        # (SRCH, BIND, ...) to slapd.log, e.g. to count lookups.
        self.debug = str(debug)
        self.port = port or free_port()
        self.url = f"ldap://127.0.0.1:{self.port}/"
        self.base_dn = BASE_DN
        self.bind_dn = BIND_DN
        self.bind_password = BIND_PASSWORD
        self.dir = None
        self.proc = None

    def start(self, timeout=20.0):
        slapd = _find("slapd")
        slapadd = _find("slapadd")
        if not os.path.exists(os.path.join(SCHEMA_DIR, "core.schema")):
            raise RuntimeError(f"{SCHEMA_DIR}/core.schema missing: `{INSTALL_HINT}`")
        self.dir = tempfile.mkdtemp(prefix="msgd-slapd-")
        os.mkdir(os.path.join(self.dir, "db"))
        with open(os.path.join(HERE, "slapd.conf.in")) as f:
            conf = (
                f.read()
                .replace("@SCHEMADIR@", SCHEMA_DIR)
                .replace("@MSGDSCHEMA@", os.path.join(HERE, "msgd.schema"))
                .replace("@DIR@", self.dir)
                .replace("@TLS@", "")
            )
        conf_path = os.path.join(self.dir, "slapd.conf")
        with open(conf_path, "w") as f:
            f.write(conf)
        subprocess.run(
            [slapadd, "-q", "-f", conf_path, "-l", self.ldif],
            check=True,
            capture_output=True,
        )
        self.log = open(os.path.join(self.dir, "slapd.log"), "wb")
        self.proc = subprocess.Popen(
            [slapd, "-f", conf_path, "-h", self.url, "-d", self.debug],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited: see {self.dir}/slapd.log")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("slapd did not start listening in time")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ldif", help="LDIF to load (default: tests/ldap/base.ldif)")
    ap.add_argument("--port", type=int, help="port (default: a free one)")
    args = ap.parse_args()
    s = Slapd(args.ldif, args.port).start()
    print(f"LDAP_URL={s.url}", flush=True)
    print(f"LDAP_BASE_DN={s.base_dn}", flush=True)
    print(f"LDAP_BIND_DN={s.bind_dn}", flush=True)
    print(f"LDAP_BIND_PASSWORD={s.bind_password}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        s.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        s.stop()


if __name__ == "__main__":
    main()
