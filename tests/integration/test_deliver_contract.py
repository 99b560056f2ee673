"""The delivery contract (docs/delivery.md) against the real binary:
Return-Path only at final delivery (RFC 5321 4.4), and the typed
delivery choices of the config (`store.over_quota`, `mta.relay_tls`).

Two tiers on a private slapd: one `--role store` (store1.test) and one
`--role mta-in` routing to it by LMTP.
"""

from __future__ import annotations

import re

import pytest

from conftest import Msgd, build_message, unique, wait_until
from tiers import Ldap, Node, fetch_all, running, send, wait_for_ids

REMOTE = "sender@remote.example"
ALICE = "alice@example.test"  # store1
STORE_TOML = """
[store]
host = "store1.test"
min_free_disk = 1048576
"""


def mta_toml(lmtp_port: int) -> str:
    return f"""
[mta]
hosts = {{ "store1.test" = "127.0.0.1:{lmtp_port}", "store2.test" = "127.0.0.1:{lmtp_port}" }}
delivery_timeout = 10

[queue]
retry_base = 1
retry_max = 1
lifetime = 3600
delay_warning = 3600
"""


@pytest.fixture(scope="module")
def tiers(tmp_path_factory):
    root = tmp_path_factory.mktemp("deliver")
    ldap = Ldap(root / "ldap")
    store = Node(root / "store1", "store", "store1.test", ldap, STORE_TOML)
    mta = Node(root / "mta-in", "mta-in", "mx.example.test", ldap, mta_toml(store.ports["lmtp"]))
    with running(ldap, store, mta):
        yield store, mta


def message(subject: str, extra_head: str = "") -> tuple[str, bytes]:
    local = unique("dc")
    data = build_message(ALICE, subject, "contract test\r\n", sender=REMOTE, msgid=local)
    if extra_head:
        data = extra_head.encode() + data
    return f"<{local}@remote.example>", data


def copies(store: Node, mid: str) -> list[bytes]:
    wait_for_ids(store, ALICE, [mid], 20)
    return [m for m in fetch_all(store, ALICE) if mid.encode() in m]


def test_rfc5321_4_4_relaying_mta_in_adds_no_return_path_the_store_writes_one(tiers):
    store, mta = tiers
    # The store is down: the message waits in the mta-in's queue, as the
    # mta-in relays it (no Return-Path may be added there).
    store.stop()
    try:
        mid, data = message("queued")
        send(mta, REMOTE, ALICE, data)
        files = [f for f in mta.queue_files() if mid.encode() in f.read_bytes()]
        assert len(files) == 1, files
        assert not re.search(rb"(?im)^return-path:", files[0].read_bytes()), "the mta-in added Return-Path"
    finally:
        store.start()
    got = copies(store, mid)
    assert len(got) == 1
    head = got[0].split(b"\r\n\r\n", 1)[0]
    assert head.startswith(f"Return-Path: <{REMOTE}>\r\nReceived: ".encode()), head[:300]
    assert len(re.findall(rb"(?im)^return-path:", head)) == 1, head[:600]


def test_rfc5321_4_4_final_delivery_replaces_a_return_path_in_the_message(tiers):
    store, mta = tiers
    mid, data = message("forged", "Return-Path: <forged@elsewhere.example>\r\n")
    send(mta, REMOTE, ALICE, data)
    got = copies(store, mid)
    assert len(got) == 1
    head = got[0].split(b"\r\n\r\n", 1)[0]
    assert re.findall(rb"(?im)^return-path:[^\r\n]*", head) == [f"Return-Path: <{REMOTE}>".encode()], head[:600]
    assert b"forged@" not in head
    wait_until(lambda: not any(mid.encode() in f.read_bytes() for f in mta.queue_files()), 10)


@pytest.mark.parametrize(
    "section,key,value",
    [("store", "over_quota", "sometimes"), ("mta", "relay_tls", "maybe")],
)
def test_delivery_choices_are_typed_and_a_bad_value_stops_msgd(tmp_path, section, key, value):
    inst = Msgd(tmp_path / key)
    inst.config_path.write_text(inst.config_text() + f'\n[{section}]\n{key} = "{value}"\n')
    res = inst.cli("check-config")
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert key in out and value in out, out
    # The documented values are accepted.
    good = {"over_quota": ("temporary", "permanent"), "relay_tls": ("opportunistic", "require", "implicit", "none")}
    for v in good[key]:
        inst.config_path.write_text(inst.config_text() + f'\n[{section}]\n{key} = "{v}"\n')
        res = inst.cli("check-config")
        assert res.returncode == 0, (v, res.stdout, res.stderr)
