#!/usr/bin/env bash
# Installs what the tests need: swaks, openssl, slapd and ldap-utils, postfix,
# dnsmasq, haproxy, isync (mbsync), fetchmail, systemd (systemd-analyze), chromium and firefox-esr (apt),
# rspamd and spamd (apt), pytest, playwright and selenium (pip), geckodriver (cargo install).
# Idempotent: does nothing (and touches no network) when everything is present.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
PYTHON="${PYTHON:-python3}"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

missing_apt=()
command -v swaks >/dev/null 2>&1 || missing_apt+=(swaks)
command -v openssl >/dev/null 2>&1 || missing_apt+=(openssl)
# swaks needs Net::SSLeay / IO::Socket::SSL for --tls; Debian ships them as recommends.
dpkg -s libnet-ssleay-perl >/dev/null 2>&1 || missing_apt+=(libnet-ssleay-perl)
dpkg -s libio-socket-ssl-perl >/dev/null 2>&1 || missing_apt+=(libio-socket-ssl-perl)
dpkg -s ca-certificates >/dev/null 2>&1 || missing_apt+=(ca-certificates)
# The LDAP directory tests start their own slapd (tests/ldap); slapadd comes
# with slapd, ldapsearch & co. with ldap-utils. Noninteractive install is fine:
# the tests never use the system instance.
dpkg -s slapd >/dev/null 2>&1 || missing_apt+=(slapd)
dpkg -s ldap-utils >/dev/null 2>&1 || missing_apt+=(ldap-utils)
# Real clients for tests/integration/test_clients.py (mbsync: see below).
command -v fetchmail >/dev/null 2>&1 || missing_apt+=(fetchmail)
# Postfix: the two-tier test runs a private instance as an LMTP client of the
# store, and scripts/bench-mta-in.sh sends with its smtp-source. Preseeded to
# "No configuration": the package then sets up no system mail service.
postfix_missing=0
dpkg -s postfix >/dev/null 2>&1 || { missing_apt+=(postfix); postfix_missing=1; }
# The mta-out tests run dnsmasq as the DNS server of a pretend Internet;
# test_resolver.py as the site's DNS server naming a store.
[ -x /usr/sbin/dnsmasq ] || missing_apt+=(dnsmasq-base)
# The mmp tests put HAProxy (send-proxy-v2) in front of two mmps and sync
# with mbsync (isync), as test_clients.py does. Both run privately; no
# system service is used.
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing_apt+=(haproxy)
command -v mbsync >/dev/null 2>&1 || missing_apt+=(isync)
# test_mem.py speaks HTTP with requests.
"$PYTHON" -c 'import requests' >/dev/null 2>&1 || missing_apt+=(python3-requests)
# test_roles.py starts each role in a private network namespace
# (unshare from util-linux, `ip link set lo up` from iproute2).
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing_apt+=(iproute2)
command -v unshare >/dev/null 2>&1 || missing_apt+=(util-linux)
# test_systemd.py checks the units with `systemd-analyze verify` (no
# running systemd needed).
command -v systemd-analyze >/dev/null 2>&1 || missing_apt+=(systemd)
# test_webmail_browser.py drives Debian's Chromium with Playwright (PyPI);
# Playwright's own browser download is never used.
[ -x /usr/bin/chromium ] || missing_apt+=(chromium)
# test_webmail_firefox.py drives Debian's firefox-esr with Selenium (PyPI)
# through geckodriver, built from crates.io below.
[ -x /usr/bin/firefox-esr ] || missing_apt+=(firefox-esr)
# test_sieve.py uploads Sieve scripts with a real ManageSieve client.
command -v sieve-connect >/dev/null 2>&1 || missing_apt+=(sieve-connect)
# test_content_filter.py runs a private rspamd (Debian's 3.4) as the
# content filter; no redis (it is only a recommends) and no system service.
command -v rspamd >/dev/null 2>&1 || missing_apt+=(rspamd)
# ... and a private spamd (SpamAssassin 4.0), the filter's other kind.
[ -x /usr/sbin/spamd ] || command -v spamd >/dev/null 2>&1 || missing_apt+=(spamd)

if [ "${#missing_apt[@]}" -gt 0 ]; then
    echo "install-test-deps: installing apt packages: ${missing_apt[*]}" >&2
    $SUDO apt-get update -qq
    if [ "$postfix_missing" -eq 1 ]; then
        echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    fi
    $SUDO apt-get install -y -qq --no-install-recommends "${missing_apt[@]}" >/dev/null
fi

if ! "$PYTHON" -c 'import pytest' >/dev/null 2>&1; then
    echo "install-test-deps: installing pytest with $PYTHON -m pip" >&2
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check pytest
fi

if ! "$PYTHON" -c 'import playwright.sync_api' >/dev/null 2>&1; then
    echo "install-test-deps: installing playwright with $PYTHON -m pip (no browser download)" >&2
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check playwright
fi
if ! "$PYTHON" -c 'import selenium.webdriver' >/dev/null 2>&1; then
    echo "install-test-deps: installing selenium with $PYTHON -m pip" >&2
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check selenium
fi
# geckodriver from crates.io (no prebuilt download), built without
# optimisation (--debug: a few minutes instead of half an hour on 2 cores;
# its speed does not matter to the tests); once: it stays in ~/.cargo/bin.
if ! command -v geckodriver >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/geckodriver" ]; then
    echo "install-test-deps: building geckodriver with cargo install (takes a while)" >&2
    cargo install geckodriver --locked --debug --quiet
fi
# jmapc: a JMAP client the project did not write (test_jmap_submission.py).
if ! "$PYTHON" -c 'import jmapc' >/dev/null 2>&1; then
    echo "install-test-deps: installing jmapc with $PYTHON -m pip" >&2
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check 'jmapc==0.4.0'
fi
# dkimpy (with authres for its ARC signer): DKIM and ARC signatures the
# project did not make (test_mail_auth.py).
if ! "$PYTHON" -c 'import dkim, authres' >/dev/null 2>&1; then
    echo "install-test-deps: installing dkimpy and authres with $PYTHON -m pip" >&2
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check dkimpy authres
fi
# prometheus-client: a Prometheus text parser the project did not write
# (test_metrics.py parses /metrics with it).
if ! "$PYTHON" -c 'import prometheus_client.parser' >/dev/null 2>&1; then
    echo "install-test-deps: installing prometheus-client with $PYTHON -m pip" >&2
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check 'prometheus-client'
fi
# dkimpy: a DKIM signer and verifier the project did not write (issue 16:
# test_dkim_sign.py); PyNaCl for its ed25519-sha256.
if ! "$PYTHON" -c 'import dkim' >/dev/null 2>&1; then
    echo "install-test-deps: installing dkimpy with $PYTHON -m pip" >&2
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check dkimpy
fi
if ! "$PYTHON" -c 'import nacl.signing' >/dev/null 2>&1; then
    echo "install-test-deps: installing pynacl with $PYTHON -m pip" >&2
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check pynacl
fi
# moto's server mode: a local S3-compatible object store (with boto3) for
# test_backup_s3.py.
if ! "$PYTHON" -c 'import moto.server, boto3' >/dev/null 2>&1; then
    echo "install-test-deps: installing moto[server] with $PYTHON -m pip" >&2
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check 'moto[server]'
fi

# Final check: fail loudly if anything is still missing.
command -v swaks >/dev/null 2>&1 || { echo "install-test-deps: swaks still missing" >&2; exit 1; }
command -v fetchmail >/dev/null 2>&1 || { echo "install-test-deps: fetchmail still missing" >&2; exit 1; }
[ -x /usr/sbin/dnsmasq ] || { echo "install-test-deps: dnsmasq still missing" >&2; exit 1; }
[ -x /usr/sbin/slapd ] || command -v slapd >/dev/null 2>&1 || { echo "install-test-deps: slapd still missing" >&2; exit 1; }
[ -x /usr/sbin/postfix ] && [ -x /usr/sbin/smtp-source ] || { echo "install-test-deps: postfix (smtp-source) still missing" >&2; exit 1; }
[ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null 2>&1 || { echo "install-test-deps: haproxy still missing" >&2; exit 1; }
command -v mbsync >/dev/null 2>&1 || { echo "install-test-deps: mbsync (isync) still missing" >&2; exit 1; }
command -v rspamd >/dev/null 2>&1 || { echo "install-test-deps: rspamd still missing" >&2; exit 1; }
[ -x /usr/sbin/spamd ] || command -v spamd >/dev/null 2>&1 || { echo "install-test-deps: spamd still missing" >&2; exit 1; }
"$PYTHON" -c 'import pytest' || { echo "install-test-deps: pytest still missing" >&2; exit 1; }
[ -x /usr/bin/chromium ] || { echo "install-test-deps: chromium still missing" >&2; exit 1; }
"$PYTHON" -c 'import playwright.sync_api' || { echo "install-test-deps: playwright still missing" >&2; exit 1; }
"$PYTHON" -c 'import requests' || { echo "install-test-deps: python3-requests still missing" >&2; exit 1; }
"$PYTHON" -c 'import jmapc' || { echo "install-test-deps: jmapc still missing" >&2; exit 1; }
"$PYTHON" -c 'import prometheus_client.parser' || { echo "install-test-deps: prometheus-client still missing" >&2; exit 1; }
"$PYTHON" -c 'import moto.server, boto3' || { echo "install-test-deps: moto[server] still missing" >&2; exit 1; }
