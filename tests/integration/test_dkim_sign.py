"""Outbound DKIM signing (issue 16) end to end, checked by a verifier the
project did not write (dkimpy, with PyNaCl for ed25519-sha256).

`msgd dkim keygen` makes an RSA and an Ed25519 key for the test domain and
prints the TXT records; dkimpy gets those records from a DNS function
(the records exactly as printed, so what an operator would publish is what
is checked). Mail is submitted (587, STARTTLS, AUTH) to a domain of the
pretend Internet (dnsmasq MX -> the fake MTA of test_mta_out.py) and the
bytes the MTA received are verified.
"""

from __future__ import annotations

import re

import pytest

from conftest import DOMAIN, MsgdFactory, free_ports, unique, wait_until
from test_mta_out import ALICE, Dns, FakeMta, message, self_signed_ctx, start_msgd, submit

try:
    import dkim  # dkimpy
    import nacl.signing  # noqa: F401  (dkimpy's ed25519 needs it)
except ImportError:  # pragma: no cover
    dkim = None


def _need_dkimpy():
    if dkim is None:
        pytest.fail("dkimpy / PyNaCl missing: run scripts/install-test-deps.sh "
                    "(python3 -m pip install dkimpy pynacl)", pytrace=False)


RECORD = re.compile(r'^(\S+)\._domainkey\.(\S+)\. IN TXT (.+)$')


def parse_record(line: str) -> tuple[str, str, str]:
    """(selector, domain, TXT value) of a printed zone line."""
    m = RECORD.match(line.strip())
    assert m, f"not a TXT record line: {line!r}"
    value = "".join(re.findall(r'"([^"]*)"', m.group(3)))
    return m.group(1), m.group(2), value


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    _need_dkimpy()
    root = tmp_path_factory.mktemp("dkim_world")
    dns = Dns(root)
    port = free_ports(1)[0]
    mta = FakeMta(port, self_signed_ctx(root))
    factory = MsgdFactory(tmp_path_factory, "dkim_sign")
    # From: of a domain without a key needs the From check off.
    server = start_msgd(factory, dns, port, extra="\n[submission]\ncheck_from_header = false\n")
    w = {"dns": dns, "mta": mta, "server": server, "records": {}}
    yield w
    factory.cleanup()
    mta.stop()
    dns.stop()


def dnsfunc_for(records: dict[str, str]):
    def dnsfunc(name, timeout=5):
        n = name.decode() if isinstance(name, bytes) else name
        v = records.get(n.rstrip(".").lower())
        return v.encode() if v is not None else None
    return dnsfunc


def received(world, rcpt: str, timeout: float = 30) -> bytes:
    mta = world["mta"]
    got = wait_until(lambda: mta.for_rcpt(rcpt), timeout, 0.3)
    assert got, f"{rcpt}: nothing reached the fake MTA\n--- msgd log ---\n{world['server'].log(6000)}"
    return got[0]["data"]


def signatures(raw: bytes) -> list[bytes]:
    head = raw.split(b"\r\n\r\n", 1)[0]
    return re.findall(rb"(?im)^DKIM-Signature:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*", head)


def test_keygen_prints_txt_records_and_keeps_existing_keys(world):
    inst = world["server"]
    for alg in ("rsa", "ed25519"):
        r = inst.cli("dkim", "keygen", DOMAIN, "--algorithm", alg)
        assert r.returncode == 0, r.stderr
        sel, dom, value = parse_record(r.stdout)
        assert dom == DOMAIN and sel == f"msgd-{alg}"
        assert value.startswith(f"v=DKIM1; k={alg}; p="), value
        world["records"][f"{sel}._domainkey.{dom}"] = value
        key = inst.data_dir / "dkim" / DOMAIN / f"{sel}.{alg}.key"
        assert key.stat().st_mode & 0o777 == 0o600
        assert b"PRIVATE KEY" in key.read_bytes()
    again = inst.cli("dkim", "keygen", DOMAIN, "--algorithm", "rsa")
    assert again.returncode == 1 and "--force" in again.stderr, again.stderr
    shown = inst.cli("dkim", "show", DOMAIN)
    assert shown.returncode == 0, shown.stderr
    lines = [parse_record(l) for l in shown.stdout.splitlines() if l.strip()]
    assert {f"{s}._domainkey.{d}": v for s, d, v in lines} == world["records"]
    none = inst.cli("dkim", "show", "nokey.test")
    assert none.returncode == 1 and "no DKIM key" in none.stderr
    bad = inst.cli("dkim", "keygen", "../etc", "--algorithm", "ed25519")
    assert bad.returncode == 1 and "not a domain name" in bad.stderr


def test_submitted_mail_to_the_internet_passes_dkimpy_rsa_and_ed25519(world):
    assert len(world["records"]) == 2, "keygen test must run first"
    inst = world["server"]
    rcpt = f"{unique('dk')}@internet.test"
    subject = unique("signed")
    assert submit(inst, [rcpt], message(rcpt, subject)) == {}
    raw = received(world, rcpt)
    sigs = signatures(raw)
    assert len(sigs) == 2, raw[:2000]
    algs = sorted(re.search(rb"a=([a-z0-9-]+)", s).group(1).decode() for s in sigs)
    assert algs == ["ed25519-sha256", "rsa-sha256"]
    for s in sigs:
        flat = re.sub(rb"\s+", b"", s).lower()
        assert b"c=relaxed/relaxed" in flat
        assert f"d={DOMAIN}".encode() in flat
        h = re.search(rb"h=([^;]*)", flat).group(1).split(b":")
        assert h.count(b"from") >= 2, h  # From over-signed
    dnsfunc = dnsfunc_for(world["records"])
    d = dkim.DKIM(raw)
    for i in range(2):
        assert d.verify(idx=i, dnsfunc=dnsfunc), f"signature {i} fails dkimpy: {sigs[i]!r}"
    # The verifier is real: a changed body fails both.
    tampered = raw.replace(b"Hello from the test.", b"Hello from Mallory.")
    assert tampered != raw
    for i in range(2):
        try:
            ok = dkim.DKIM(tampered).verify(idx=i, dnsfunc=dnsfunc)
        except dkim.ValidationError as e:  # dkimpy raises on a body hash mismatch
            ok, _ = False, e
        assert not ok, f"tampered message passes signature {i}"


def test_mail_from_a_domain_without_a_key_is_not_signed(world):
    inst = world["server"]
    rcpt = f"{unique('nk')}@internet.test"
    raw_msg = message(rcpt, unique("unsigned"), sender="someone@nokey.test")
    assert submit(inst, [rcpt], raw_msg, sender=ALICE) == {}
    raw = received(world, rcpt)
    assert signatures(raw) == [], raw[:2000]


def test_a_retried_message_keeps_its_one_signature(world):
    """Signed once at submission: the greylisted first attempt and the
    retry send the same DKIM-Signature bytes."""
    inst = world["server"]
    rcpt = f"greylist-{unique('r')}@internet.test"
    assert submit(inst, [rcpt], message(rcpt, unique("retry"))) == {}
    raw = received(world, rcpt, timeout=60)
    assert any(k.endswith(rcpt) for k in world["mta"].greylisted), "no first attempt was refused"
    sigs = signatures(raw)
    assert len(sigs) == 2
    # The queue file holds the signed bytes (one signature per algorithm,
    # not one per attempt).
    assert raw.count(b"DKIM-Signature:") == 2
    d = dkim.DKIM(raw)
    assert all(d.verify(idx=i, dnsfunc=dnsfunc_for(world["records"])) for i in range(2))
