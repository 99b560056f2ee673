"""msgd backup / msgd restore to an S3-compatible object store (issue 14;
docs/backup.md "Targets").

Against the real binary and a real S3-compatible server on loopback (moto's
server mode, from PyPI): the folder layout as object keys under
`s3://bucket/prefix`, incremental runs that upload only the new blobs
(objects counted), wipe, restore (server stopped and running) compared over
IMAP (bytes, flags, INTERNALDATE, UIDs, UIDVALIDITY, UIDNEXT), the AWS_*
variables overriding `[backup.s3]`, the secret key never logged, and
hostile objects (a manifest naming another user's keys, a blob shorter or
longer than recorded) refused with exit 1 while the rest is restored.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import build_message, free_ports, imap_ok, port_accepts, wait_until
from test_backup import ALICE, BOB, append, cli, ok, user_dir, user_state, wipe

INSTALL = 'install it with scripts/install-test-deps.sh (or: python3 -m pip install "moto[server]")'
BUCKET = "msgd-backups"
SECRET = "s3cr3t-never-logged-4711"


def boto3_client(endpoint, verify=None):
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        pytest.fail(f"boto3 is not installed: {INSTALL}", pytrace=False)
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="msgdtest", aws_secret_access_key=SECRET,
        config=Config(retries={"max_attempts": 1}), verify=verify,
    )


def start_moto(tmp_path, tls=None):
    """A moto S3 server on a free loopback port with one empty bucket:
    (endpoint, boto3 client, process, request log). `tls`: (cert, key, ca)
    files."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        pytest.fail(f"moto's server mode is not installed: {INSTALL}", pytrace=False)
    port = free_ports(1)[0]
    args = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    if tls:
        args += ["-s", "-c", str(tls[0]), "-k", str(tls[1])]
    log_path = tmp_path / f"moto-{port}.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    if not wait_until(lambda: port_accepts(port) or proc.poll() is not None, 30) or proc.poll() is not None:
        proc.kill()
        pytest.fail(f"moto_server did not start:\n{(tmp_path / f'moto-{port}.log').read_text()}", pytrace=False)
    endpoint = f"https://localhost:{port}" if tls else f"http://127.0.0.1:{port}"
    client = boto3_client(endpoint, verify=str(tls[2]) if tls else None)
    client.create_bucket(Bucket=BUCKET)
    return endpoint, client, proc, log_path


def stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def s3(tmp_path):
    endpoint, client, proc, log = start_moto(tmp_path)
    try:
        yield endpoint, client, log
    finally:
        stop(proc)


def make_tls(d: Path):
    """A CA and a certificate for localhost signed by it (PEM files)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "msgd test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = (d / "s3.crt", d / "s3.key", d / "ca.pem")
    files[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    files[2].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return files


def keys(client, prefix):
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"]] = o
    return out


def user_prefix(prefix, user):
    return str(user_dir(Path(prefix), user)) + "/"


def blobs(client, prefix, user):
    return keys(client, user_prefix(prefix, user) + "blobs/")


def manifests(client, prefix, user):
    return sorted(k for k in keys(client, user_prefix(prefix, user)) if "/manifest-" in k)


def s3_server(msgd_factory, endpoint, users, extra=""):
    """A stopped msgd whose [backup.s3] points at `endpoint`."""
    srv = msgd_factory(users=users, start=False)
    srv.data_dir.mkdir(parents=True, exist_ok=True)
    (srv.data_dir / "s3.secret").write_text(SECRET + "\n")
    srv.config_path.write_text(
        srv.config_text()
        + "\n[backup.s3]\n"
        + f'endpoint = "{endpoint}"\nregion = "us-east-1"\naccess_key_id = "msgdtest"\n'
        + 'secret_access_key_file = "s3.secret"\ntimeout = 20\n'
        + extra
    )
    return srv


def seed(srv, user):
    """9 messages: flags and keywords, 8-bit bytes, a hierarchy, a gap in
    the UIDs (an expunged message), a subscription."""
    m = srv.imap(user)
    try:
        imap_ok(m.create("Projects/2026"), "CREATE")
        imap_ok(m.subscribe("Projects/2026"), "SUBSCRIBE")
        for i in range(6):
            body = f"line {i}\r\n8-bit: h\u00e9llo w\u00f6rld \u2603\r\n.dot line\r\n"
            flags = ["\\Seen", "\\Flagged $Work", "", "\\Answered \\Draft", "$Label1 \\Seen", ""][i]
            append(m, "INBOX", build_message(user, f"inbox {i}", body), flags,
                   f'"0{i + 1}-Mar-2023 0{i}:15:30 +0{i}00"')
        imap_ok(m.select("INBOX"), "SELECT")
        imap_ok(m.uid("STORE", "3", "+FLAGS.SILENT", "(\\Deleted)"), "STORE")
        imap_ok(m.expunge(), "EXPUNGE")
        for i in range(3):
            append(m, "Projects/2026", build_message(user, f"project {i}", f"plan {i}\r\n"), "\\Seen")
        append(m, "Sent", build_message(BOB, "sent", "hi bob\r\n", sender=user), "\\Seen")
    finally:
        m.logout()


def same_state(before, after):
    assert sorted(after) == sorted(before)
    for name, (uv, un, msgs) in before.items():
        uv2, un2, msgs2 = after[name]
        assert (uv2, un2) == (uv, un), f"{name}: UIDVALIDITY/UIDNEXT {uv2}/{un2}, want {uv}/{un}"
        assert sorted(msgs2) == sorted(msgs), f"{name}: UIDs {sorted(msgs2)}, want {sorted(msgs)}"
        for uid, (flags, date, body) in msgs.items():
            f2, d2, b2 = msgs2[uid]
            assert b2 == body, f"{name} UID {uid}: bytes differ"
            assert f2 == flags, f"{name} UID {uid}: flags {f2}, want {flags}"
            assert d2 == date, f"{name} UID {uid}: INTERNALDATE {d2}, want {date}"


def requests(log: Path, method: str, part: str) -> int:
    """Requests `method` of a key containing `part` in moto's log so far."""
    return sum(1 for line in log.read_text(errors="replace").splitlines()
               if f'"{method} /' in line and part in line)


def test_s3_backup_is_incremental_and_restores_identically_offline_and_online(msgd_factory, s3):
    endpoint, client, log = s3
    srv = s3_server(msgd_factory, endpoint, [ALICE, BOB])
    srv.start()
    seed(srv, ALICE)
    url = f"s3://{BUCKET}/nightly/msgd"
    # Online: the running server writes to the object store.
    out = json.loads(ok(cli(srv, "backup", ALICE, url, "--json"), "backup 1").stdout)
    assert out["dest"] == url, out
    assert out["totals"]["messages"] == 9 and out["totals"]["new_blobs"] == 9, out
    assert "nightly/msgd/msgd-backup.json" in keys(client, "nightly/msgd/")
    first_blobs = blobs(client, "nightly/msgd", ALICE)
    assert len(first_blobs) == 9
    assert len(manifests(client, "nightly/msgd", ALICE)) == 1
    # Flags change and 10 new messages: only those 10 are uploaded.
    m = srv.imap(ALICE)
    try:
        imap_ok(m.select("INBOX"), "SELECT")
        imap_ok(m.uid("STORE", "1:2", "+FLAGS.SILENT", "(\\Seen $Done)"), "STORE")
        for i in range(10):
            append(m, "INBOX", build_message(ALICE, f"new {i}", f"new body {i}\r\n"))
    finally:
        m.logout()
    puts_before = requests(log, "PUT", "/blobs/")
    out = json.loads(ok(cli(srv, "backup", ALICE, url, "--json"), "backup 2").stdout)
    # Exactly the 10 new blobs went up; no HEAD per message (one listing).
    assert requests(log, "PUT", "/blobs/") - puts_before == 10
    assert requests(log, "HEAD", "/blobs/") == 0
    assert out["totals"]["new_blobs"] == 10 and out["totals"]["messages"] == 19, out
    second_blobs = blobs(client, "nightly/msgd", ALICE)
    assert len(second_blobs) == 19
    # The blobs of the first run were not uploaded again.
    for k, o in first_blobs.items():
        assert second_blobs[k]["LastModified"] == o["LastModified"] and second_blobs[k]["ETag"] == o["ETag"], k
    runs = manifests(client, "nightly/msgd", ALICE)
    assert len(runs) == 2
    latest = json.loads(client.get_object(Bucket=BUCKET, Key=runs[-1])["Body"].read())
    assert latest["previous"] == runs[0].rsplit("/", 1)[1]
    # Nothing new: no upload at all but the manifest.
    out = json.loads(ok(cli(srv, "backup", ALICE, url, "--json"), "backup 3").stdout)
    assert out["totals"]["new_blobs"] == 0 and len(blobs(client, "nightly/msgd", ALICE)) == 19
    before, subs_before = user_state(srv, ALICE)
    assert len(before["INBOX"][2]) == 15

    # Offline restore (no server: the CLI opens the store and the bucket).
    wipe(srv)
    res = ok(cli(srv, "restore", url, ALICE), "offline restore")
    assert "19 messages at their UIDs" in res.stdout, res.stdout
    srv.start()
    after, subs_after = user_state(srv, ALICE)
    same_state(before, after)
    assert subs_after == subs_before

    # Online restore (through the running server) into a wiped store.
    wipe(srv)
    srv.start()
    res = ok(cli(srv, "restore", url, ALICE), "online restore")
    assert "19 messages at their UIDs" in res.stdout, res.stdout
    after, _ = user_state(srv, ALICE)
    same_state(before, after)
    # A second restore adds nothing.
    res = ok(cli(srv, "restore", url, "--json"), "restore again")
    assert json.loads(res.stdout)["totals"]["restored"] == 0
    srv.stop()
    # The secret key is in no log and no output.
    assert SECRET not in srv.log(tail=10**7) and SECRET not in res.stdout + res.stderr


def test_aws_variables_override_the_config_and_http_elsewhere_needs_allow_http(msgd_factory, s3):
    endpoint, client, _ = s3
    dead = free_ports(1)[0]
    srv = s3_server(msgd_factory, f"http://127.0.0.1:{dead}", [ALICE])
    srv.start()
    m = srv.imap(ALICE)
    try:
        for i in range(3):
            append(m, "INBOX", build_message(ALICE, f"env {i}", f"env body {i}\r\n"))
    finally:
        m.logout()
    srv.stop()
    url = f"s3://{BUCKET}/env"
    # The configured endpoint answers nothing: the run fails, in time.
    t0 = time.monotonic()
    res = cli(srv, "backup", ALICE, url, timeout=300)
    assert res.returncode == 1, res
    assert time.monotonic() - t0 < 200
    # AWS_ENDPOINT_URL (offline: read by the CLI's own process) wins.
    res = ok(cli(srv, "backup", ALICE, url, "--json", env_extra={"AWS_ENDPOINT_URL": endpoint}), "backup")
    assert json.loads(res.stdout)["totals"]["new_blobs"] == 3
    assert len(blobs(client, "env", ALICE)) == 3
    # Plain HTTP to a name that is not loopback is refused unless allowed.
    res = cli(srv, "backup", ALICE, url, env_extra={"AWS_ENDPOINT_URL": "http://s3.example.invalid:9"})
    assert res.returncode == 1 and "URL scheme is not allowed" in res.stderr, res
    assert SECRET not in res.stdout + res.stderr


def test_a_request_that_gets_no_answer_hits_the_deadline(msgd_factory, s3):
    endpoint, client, _ = s3
    # A listener that accepts and never answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        srv = s3_server(msgd_factory, f"http://127.0.0.1:{silent.getsockname()[1]}", [ALICE])
        srv.config_path.write_text(srv.config_path.read_text().replace("timeout = 20", "timeout = 1"))
        t0 = time.monotonic()
        res = cli(srv, "backup", ALICE, f"s3://{BUCKET}/silent", timeout=120)
        took = time.monotonic() - t0
        assert res.returncode == 1, res
        assert took < 30, f"took {took:.1f}s"
        assert "timed out" in res.stderr, res.stderr
    finally:
        silent.close()


def test_hostile_objects_are_refused_and_the_rest_restored(msgd_factory, s3):
    endpoint, client, _ = s3
    srv = s3_server(msgd_factory, endpoint, [ALICE, BOB])
    srv.start()
    m = srv.imap(ALICE)
    try:
        for i in range(4):
            append(m, "INBOX", build_message(ALICE, f"h {i}", f"hostile body {i}\r\n"))
    finally:
        m.logout()
    m = srv.imap(BOB)
    try:
        append(m, "INBOX", build_message(BOB, "bob's", "bob's private mail\r\n"))
    finally:
        m.logout()
    url = f"s3://{BUCKET}/h"
    ok(cli(srv, "backup", "--all", url), "backup")
    apfx = user_prefix("h", ALICE)
    key = manifests(client, "h", ALICE)[-1]
    man = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    inbox = next(mb for mb in man["mailboxes"] if mb["name"] == "INBOX")
    msgs = inbox["messages"]
    # UID 1: shortened; UID 2: longer than recorded; UID 3: names bob's blob.
    short = apfx + msgs[0]["blob"]
    data = client.get_object(Bucket=BUCKET, Key=short)["Body"].read()
    client.put_object(Bucket=BUCKET, Key=short, Body=data[: len(data) // 2])
    longer = apfx + msgs[1]["blob"]
    data = client.get_object(Bucket=BUCKET, Key=longer)["Body"].read()
    client.put_object(Bucket=BUCKET, Key=longer, Body=data + b"X" * 100)
    bob_blob = next(k for k in blobs(client, "h", BOB))
    # "h/users/<bob>/blobs/ab/<sha>" seen from alice's folder.
    msgs[2]["blob"] = "blobs/../../" + "/".join(bob_blob.split("/")[2:])
    client.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(man).encode())
    wipe(srv)
    res = cli(srv, "restore", url, ALICE)
    assert res.returncode == 1, res
    err = res.stderr
    assert "UID 1" in err and "UID 2" in err and "UID 3" in err, err
    assert "outside the backup" in err, err
    assert "truncated or corrupted" in err or "larger than" in err, err
    srv.start()
    m = srv.imap(ALICE)
    try:
        imap_ok(m.select("INBOX", readonly=True), "SELECT")
        typ, data = m.uid("SEARCH", "ALL")
        assert data[0].split() == [b"4"], data
    finally:
        m.logout()


def test_https_endpoint_verified_with_ring_and_a_private_ca(msgd_factory, tmp_path):
    tls = make_tls(tmp_path)
    endpoint, client, proc, _ = start_moto(tmp_path, tls)
    try:
        srv = s3_server(msgd_factory, endpoint, [ALICE])
        srv.start()
        m = srv.imap(ALICE)
        try:
            for i in range(2):
                append(m, "INBOX", build_message(ALICE, f"tls {i}", f"tls body {i}\r\n"))
        finally:
            m.logout()
        url = f"s3://{BUCKET}/tls"
        # Without the private CA the certificate is refused.
        res = cli(srv, "backup", ALICE, url)
        assert res.returncode == 1 and "certificate" in res.stderr.lower(), res
        assert not blobs(client, "tls", ALICE)
        srv.stop()
        shutil.copy(tls[2], srv.data_dir / "ca.pem")
        srv.config_path.write_text(srv.config_path.read_text() + 'ca_file = "ca.pem"\n')
        srv.start()
        out = json.loads(ok(cli(srv, "backup", ALICE, url, "--json"), "backup over https").stdout)
        assert out["totals"]["new_blobs"] == 2 and len(blobs(client, "tls", ALICE)) == 2
        before, _ = user_state(srv, ALICE)
        wipe(srv)
        ok(cli(srv, "restore", url), "restore over https")
        srv.start()
        after, _ = user_state(srv, ALICE)
        same_state(before, after)
    finally:
        stop(proc)


def test_a_large_message_goes_up_in_parts_and_comes_back_identical(msgd_factory, s3):
    endpoint, client, _ = s3
    srv = s3_server(msgd_factory, endpoint, [ALICE])
    srv.start()
    # 20 MiB: above the 16 MiB single-PUT limit of backup_target.rs.
    line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+/-_=!\r\n"
    big = build_message(ALICE, "big", line * (20 * 1024 * 1024 // len(line)))
    assert len(big) > 20 * 1024 * 1024
    m = srv.imap(ALICE, timeout=120)
    try:
        append(m, "INBOX", big, "\\Seen")
        append(m, "INBOX", build_message(ALICE, "small", "small\r\n"))
    finally:
        m.logout()
    url = f"s3://{BUCKET}/big"
    out = json.loads(ok(cli(srv, "backup", ALICE, url, "--json"), "backup").stdout)
    assert out["totals"]["new_blobs"] == 2, out
    sizes = {k: o["Size"] for k, o in blobs(client, "big", ALICE).items()}
    big_key = next(k for k, n in sizes.items() if n > 20 * 1024 * 1024)
    # A multipart upload's ETag ends in -<parts>: 8 MiB parts.
    etag = client.head_object(Bucket=BUCKET, Key=big_key)["ETag"].strip('"')
    assert etag.endswith("-3"), etag
    before, _ = user_state(srv, ALICE)
    wipe(srv)
    ok(cli(srv, "restore", url, ALICE), "restore")
    srv.start()
    after, _ = user_state(srv, ALICE)
    same_state(before, after)
