#!/usr/bin/env python3
"""JMAP on the store, directly and through the mem (issue 13, "Performance").

Driven by scripts/bench-jmap.sh (which checks wrk and MSGD_BIN). Starts, in a
temporary folder on free loopback ports:

- one `msgd --role store` (embedded directory, one user whose INBOX gets
  `--messages` messages by IMAP MULTIAPPEND in batches, the generator of
  scripts/bench_imap_large.py), HTTP listener, `[http] token_key_file`;
- one `msgd --role mem` (separate process, the same token key file and the
  store's directory.json; the embedded directory gives no mailHost, so
  `[mem] default_store` names the store and `[mem.stores]` maps it to the
  store's HTTP port).

Then, with wrk (`--connections`, `--threads`, `--duration` per run):

1. query: one POST /jmap/api with Email/query (inMailbox INBOX, sort
   receivedAt desc, limit 50) + Email/get (ids back-referenced,
   properties subject/from/receivedAt/preview/keywords);
2. blob: GET /jmap/download/... of one message;

each three ways: direct with Basic auth (each request runs the login
sequence), direct with a Bearer token minted here from the shared key (what
the mem itself sends the store: the fair baseline for the mem's cost), and
through the mem (session cookie from POST /login, X-CSRF-Token on POSTs).
Requests/s, p99, non-2xx count, and the mem/direct ratios.

3. event source: `--eventsource` connections to /jmap/eventsource held open
   (types=*, closeafter=no, ping=300), first directly (Bearer), then through
   the mem; PSS (smaps_rollup) of the store and the mem before and with them,
   per connection.

Bounded: every wrk run has a duration, every wait a deadline; the servers
are stopped and the folder removed at the end (--keep keeps it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import http.client
import imaplib
import json
import os
import platform
import re
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_imap_large import generate, multiappend  # noqa: E402

USER = "bench@example.test"
PASSWORD = "bench-secret-1"
STORE_HOST = "store.bench.test"


def die(msg: str) -> None:
    print(f"bench-jmap: {msg}", file=sys.stderr)
    sys.exit(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, secs: float, proc: subprocess.Popen, name: str) -> None:
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            die(f"{name} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    die(f"{name}: nothing listens on {port} after {secs} s")


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def machine() -> str:
    model = ""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = next((int(l.split()[1]) // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal:")), 0)
    return f"{os.cpu_count()} CPUs ({model}), {mem} MiB RAM, Linux {platform.release()}"


# --------------------------------------------------------------------------
# the servers


def common_toml(data: Path, host: str) -> str:
    return f"""
[server]
hostname = "{host}"
data_dir = "{data}"
domain = "example.test"

[log]
level = "warn"

[limits]
max_connections = 30000
max_connections_per_ip = 30000
login_failure_delay_ms = 0

[listener.https]
enabled = false
""" + "".join(f"\n[listener.{l}]\nenabled = false\n" for l in ("imaps", "pop3", "pop3s"))


class Server:
    def __init__(self, msgd: str, root: Path, role: str, toml: str):
        self.msgd, self.role, self.root = msgd, role, root
        root.mkdir(parents=True)
        self.config = root / "msgd.toml"
        self.config.write_text(toml)
        self.proc: subprocess.Popen | None = None

    def run(self, *args: str, stdin: str | None = None) -> str:
        r = subprocess.run([self.msgd, "--config", str(self.config), "--role", self.role, *args],
                           input=stdin, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            die(f"msgd {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def start(self, port: int) -> None:
        err = open(self.root / "msgd.err", "wb")
        self.proc = subprocess.Popen([self.msgd, "--config", str(self.config), "--role", self.role],
                                     stdout=err, stderr=err, stdin=subprocess.DEVNULL, cwd=self.root)
        wait_port(port, 30, self.proc, self.role)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_tail(self) -> str:
        try:
            return "\n".join((self.root / "msgd.err").read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return ""


# --------------------------------------------------------------------------
# HTTP helpers


def request(port: int, method: str, path: str, headers: dict[str, str] | None = None,
            body: bytes | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.headers, r.read()
    finally:
        c.close()


def jmap(port: int, headers: dict[str, str], calls: list) -> list:
    body = json.dumps({"using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
                       "methodCalls": calls}).encode()
    st, _, out = request(port, "POST", "/jmap/api", dict(headers, **{"Content-Type": "application/json"}), body)
    if st != 200:
        die(f"POST /jmap/api: {st} {out[:300]!r}")
    return json.loads(out)["methodResponses"]


def cookies_of(h: http.client.HTTPMessage) -> dict[str, str]:
    out = {}
    for v in h.get_all("Set-Cookie") or []:
        name, _, rest = v.partition("=")
        out[name.strip()] = rest.split(";", 1)[0]
    return out


def mem_login(port: int) -> tuple[str, str]:
    """GET /login, POST /login: returns (Cookie header value, CSRF token)."""
    st, h, page = request(port, "GET", "/login")
    if st != 200:
        die(f"mem GET /login: {st}")
    m = re.search(rb'name="csrf" value="([^"]+)"', page)
    if not m:
        die("mem GET /login: no csrf field")
    pre = cookies_of(h)
    form = urllib.parse.urlencode({"user": USER, "password": PASSWORD, "csrf": m.group(1).decode()}).encode()
    st, h, out = request(port, "POST", "/login", {
        "Cookie": "; ".join(f"{k}={v}" for k, v in pre.items()),
        "Content-Type": "application/x-www-form-urlencoded",
        "Origin": f"http://127.0.0.1:{port}"}, form)
    c = cookies_of(h)
    if st != 303 or "msgd_session" not in c:
        die(f"mem POST /login: {st} {out[:300]!r}")
    cookie = f"msgd_session={c['msgd_session']}"
    st, _, info = request(port, "GET", "/session-info", {"Cookie": cookie})
    if st != 200:
        die(f"mem GET /session-info: {st}")
    return cookie, json.loads(info)["csrfToken"]


def bearer(key_file: Path, user: str, ttl: int = 3600) -> str:
    """The token a mem sends (src/http/token.rs)."""
    key = bytes.fromhex(key_file.read_text().strip())
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    body = f"msgd1.{b64(user.encode())}.{int(time.time()) + ttl}"
    return f"{body}.{b64(hmac.new(key, body.encode(), hashlib.sha256).digest())}"


# --------------------------------------------------------------------------
# wrk


SHOW_FIRST_FAILURE = """
local shown = false
response = function(status, headers, body)
  if not shown and (status < 200 or status > 399) then
    shown = true
    io.write("first non-2xx: " .. status .. " " .. string.sub(body, 1, 300):gsub("\\n", " ") .. "\\n")
  end
end
"""


def lua_string(s: str) -> str:
    return "[==[" + s + "]==]"


def wrk(a, work: Path, name: str, url: str, headers: dict[str, str], body: str | None = None) -> dict:
    script = work / f"{name}.lua"
    lines = [f"wrk.method = {lua_string('POST' if body is not None else 'GET')}"]
    if body is not None:
        lines.append(f"wrk.body = {lua_string(body)}")
    for k, v in headers.items():
        lines.append(f"wrk.headers[ {lua_string(k)} ] = {lua_string(v)}")
    script.write_text("\n".join(lines) + "\n")
    cmd = ["wrk", "-t", str(a.threads), "-c", str(a.connections), "-d", f"{a.duration}s", "--latency",
           "--timeout", "10s", "-s", str(script), url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=a.duration + 60)
    (work / f"{name}.wrk.txt").write_text(r.stdout + r.stderr)
    if r.returncode != 0 or r.stderr.strip():  # a Lua error is only a message on stderr
        die(f"wrk {name}: {r.stderr.strip() or r.stdout.strip()}")
    out = r.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)] if p99 else float("nan")
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: (.*)", out)
    if bad:  # one more short run that shows the first failing answer
        script.write_text(script.read_text() + SHOW_FIRST_FAILURE)
        d = subprocess.run(["wrk", "-t", "1", "-c", "1", "-d", "1s", "-s", str(script), url],
                           capture_output=True, text=True, timeout=60)
        first = next((l for l in d.stdout.splitlines() if l.startswith("first non-2xx")), d.stdout + d.stderr)
        print(f"{name}: {first}")
    res = {"rps": rps, "p99": p99_ms, "n": total, "bad": int(bad.group(1)) if bad else 0,
           "errors": errs.group(1) if errs else ""}
    note = f"; NON-2xx {res['bad']}" if res["bad"] else ""
    note += f"; socket errors {res['errors']}" if res["errors"] else ""
    print(f"{name:22} {rps:9.0f} req/s  p99 {p99_ms:8.2f} ms  ({total} requests){note}", flush=True)
    return res


# --------------------------------------------------------------------------
# event source connections


async def hold_eventsource(port: int, path: str, headers: dict[str, str], n: int, hold: float,
                           measure) -> tuple[int, float, object]:
    """Opens n event-source connections (each: status line and headers
    read), calls measure() while they are all open, closes them."""
    sem = asyncio.Semaphore(64)
    conns: list[asyncio.StreamWriter] = []
    failures: list[str] = []
    req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
           + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()

    async def one(i: int) -> None:
        async with sem:
            try:
                r, w = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, local_addr=(f"127.0.2.{1 + i % 250}", 0)), 10)
                w.write(req)
                await w.drain()
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 20)
                if not head.startswith(b"HTTP/1.1 200"):
                    failures.append(head.split(b"\r\n", 1)[0].decode(errors="replace"))
                    w.close()
                    return
                conns.append(w)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                failures.append(type(e).__name__)

    t0 = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(n)))
    opened = time.monotonic() - t0
    if failures:
        print(f"event source: {len(failures)} of {n} failed, first: {failures[0]}")
    await asyncio.sleep(hold)
    result = measure()
    for w in conns:
        w.close()
    await asyncio.sleep(1)
    return len(conns), opened, result


# --------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=10000, help="messages in the INBOX (default 10000)")
    ap.add_argument("--batch", type=int, default=500, help="messages per MULTIAPPEND (default 500)")
    ap.add_argument("--duration", type=int, default=20, help="seconds per wrk run (default 20)")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    ap.add_argument("--threads", type=int, default=4, help="wrk threads (default 4)")
    ap.add_argument("--eventsource", type=int, default=1000, help="idle event-source connections (default 1000)")
    ap.add_argument("--hold", type=float, default=5, help="seconds the connections are held before measuring")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = ap.parse_args()
    msgd = os.environ.get("MSGD_BIN") or die("MSGD_BIN is not set")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if a.eventsource * 3 + 200 > hard:
        die(f"open-files hard limit {hard} is too low for {a.eventsource} event-source connections")

    work = Path(tempfile.mkdtemp(prefix="bench-jmap."))
    keys = work / "keys"
    keys.mkdir()
    servers: list[Server] = []
    try:
        ports = {k: free_port() for k in ("imap", "lmtp", "http", "mem")}
        # the requests of wrk's connections all come from one user
        http_limits = f"""
[http]
token_key_file = "{keys}/token.key"
max_concurrent_requests = {max(64, a.connections * 2, a.eventsource + 16)}
"""
        store = Server(msgd, work / "store", "store", common_toml(work / "store" / "data", STORE_HOST) + http_limits + f"""
[store]
host = "{STORE_HOST}"
min_free_disk = 1048576

[listener.imap]
bind = ["127.0.0.1:{ports['imap']}"]

[listener.lmtp]
bind = ["127.0.0.1:{ports['lmtp']}"]

[listener.http]
bind = ["127.0.0.1:{ports['http']}"]
""")
        servers.append(store)
        store.run("user", "add", USER, stdin=PASSWORD + "\n")
        store.start(ports["http"])
        wait_port(ports["imap"], 30, store.proc, "store imap")
        for _ in range(100):  # created when HTTP is first served
            if (keys / "token.key").exists():
                break
            time.sleep(0.1)

        mem = Server(msgd, work / "mem", "mem", common_toml(work / "mem" / "data", "mem.bench.test") + http_limits + f"""
[directory]
path = "{work}/store/data/directory.json"

[mem]
session_key_file = "{keys}/session.key"
default_store = "{STORE_HOST}"

[mem.stores]
"{STORE_HOST}" = "127.0.0.1:{ports['http']}"

[listener.http]
bind = ["127.0.0.1:{ports['mem']}"]
""")
        servers.append(mem)
        mem.start(ports["mem"])

        print(f"machine: {machine()}")
        print(f"msgd: {msgd} ({subprocess.run([msgd, '--version'], capture_output=True, text=True).stdout.strip()})")
        print(f"command: scripts/bench-jmap.sh {' '.join(shlex.quote(x) for x in sys.argv[1:])}; folder {work}")

        # fill the INBOX
        msgs, _ = generate(a.messages, 13)
        t0 = time.monotonic()
        m = imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=600)
        m.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        m.login(USER, PASSWORD)
        for k in range(0, len(msgs), a.batch):
            multiappend(m, "INBOX", msgs[k:k + a.batch])
        typ, data = m.status("INBOX", "(MESSAGES)")
        m.logout()
        n_in = int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))
        if n_in != a.messages:
            die(f"INBOX has {n_in} messages, expected {a.messages}")
        print(f"fill: {a.messages} messages ({sum(len(x[2]) for x in msgs) // 1024} KiB) by MULTIAPPEND "
              f"in {time.monotonic() - t0:.1f} s")

        basic = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
        st, _, sess = request(ports["http"], "GET", "/jmap/session", basic)
        if st != 200:
            die(f"store GET /jmap/session: {st} {sess[:300]!r}")
        account = json.loads(sess)["primaryAccounts"]["urn:ietf:params:jmap:mail"]
        boxes = jmap(ports["http"], basic, [["Mailbox/get", {"accountId": account, "properties": ["role"]}, "0"]])
        inbox = next(b["id"] for b in boxes[0][1]["list"] if b.get("role") == "inbox")
        calls = [
            ["Email/query", {"accountId": account, "filter": {"inMailbox": inbox},
                             "sort": [{"property": "receivedAt", "isAscending": False}],
                             "limit": 50, "calculateTotal": True}, "q"],
            ["Email/get", {"accountId": account,
                           "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
                           "properties": ["subject", "from", "receivedAt", "preview", "keywords"]}, "g"],
        ]
        out = jmap(ports["http"], basic, calls)
        got = out[1][1].get("list", []) if len(out) > 1 else []
        if out[0][1].get("total") != a.messages or len(got) != min(50, a.messages):
            die(f"query check: {json.dumps(out)[:400]}")
        first = jmap(ports["http"], basic, [["Email/get", {"accountId": account, "ids": [got[0]["id"]],
                                                           "properties": ["blobId", "size"]}, "b"]])
        blob, size = first[0][1]["list"][0]["blobId"], first[0][1]["list"][0]["size"]
        download = f"/jmap/download/{account}/{blob}/message.eml?accept=message/rfc822"
        api_body = json.dumps({"using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
                               "methodCalls": calls})

        token = {"Authorization": "Bearer " + bearer(keys / "token.key", USER)}
        cookie, csrf = mem_login(ports["mem"])
        via_mem = {"Cookie": cookie}
        # check the three ways answer the query and the blob
        for name, port, h in (("bearer", ports["http"], token), ("mem", ports["mem"], dict(via_mem, **{"X-CSRF-Token": csrf}))):
            if len(jmap(port, h, calls)[1][1]["list"]) != len(got):
                die(f"{name}: the query answers differently")
        for name, port, h in (("basic", ports["http"], basic), ("bearer", ports["http"], token), ("mem", ports["mem"], via_mem)):
            st, _, b = request(port, "GET", download, h)
            if st != 200 or len(b) != size:
                die(f"{name} download: {st}, {len(b)} bytes (expected {size})")

        json_h = {"Content-Type": "application/json"}
        store_url, mem_url = f"http://127.0.0.1:{ports['http']}", f"http://127.0.0.1:{ports['mem']}"
        print(f"\nwrk: {a.connections} connections, {a.threads} threads, {a.duration} s per run; "
              f"query = Email/query (limit 50 of {a.messages}) + Email/get; blob = {size} bytes")
        res = {}
        res["query direct basic"] = wrk(a, work, "query-basic", store_url + "/jmap/api", dict(json_h, **basic), api_body)
        res["query direct bearer"] = wrk(a, work, "query-bearer", store_url + "/jmap/api", dict(json_h, **token), api_body)
        res["query mem"] = wrk(a, work, "query-mem", mem_url + "/jmap/api",
                               dict(json_h, **via_mem, **{"X-CSRF-Token": csrf}), api_body)
        res["blob direct basic"] = wrk(a, work, "blob-basic", store_url + download, basic)
        res["blob direct bearer"] = wrk(a, work, "blob-bearer", store_url + download, token)
        res["blob mem"] = wrk(a, work, "blob-mem", mem_url + download, via_mem)

        # event source
        print(f"\nevent source: {a.eventsource} connections, held {a.hold} s before measuring")
        es_path = "/jmap/eventsource?types=*&closeafter=no&ping=300"
        pids = {"store": store.proc.pid, "mem": mem.proc.pid}
        snap = lambda: {k: pss_kib(p) for k, p in pids.items()}  # noqa: E731
        es = {}
        for name, port, h in (("direct", ports["http"], token), ("mem", ports["mem"], via_mem)):
            time.sleep(2)
            before = snap()
            n, opened, during = asyncio.run(hold_eventsource(port, es_path, h, a.eventsource, a.hold, snap))
            per = {k: (during[k] - before[k]) / max(1, n) for k in pids}
            es[name] = (n, per)
            print(f"event source {name:6}: {n} open in {opened:.1f} s; PSS store {before['store']} -> "
                  f"{during['store']} KiB ({per['store']:.1f} KiB/conn), mem {before['mem']} -> {during['mem']} KiB "
                  f"({per['mem']:.1f} KiB/conn)")

        def ratio(x: str, y: str) -> str:
            return f"{res[x]['rps'] / res[y]['rps']:.2f}" if res[y]["rps"] else "n/a"

        print("\n=== summary")
        print(f"command: MSGD_BIN={msgd} scripts/bench-jmap.sh {' '.join(shlex.quote(x) for x in sys.argv[1:])}")
        print(f"{'':22} {'req/s':>9}  {'p99 ms':>8}")
        for k, v in res.items():
            print(f"{k:22} {v['rps']:9.0f}  {v['p99']:8.2f}" + (f"  (non-2xx {v['bad']})" if v["bad"] else ""))
        print(f"query mem/direct: {ratio('query mem', 'query direct bearer')} (vs bearer), "
              f"{ratio('query mem', 'query direct basic')} (vs basic)")
        print(f"blob  mem/direct: {ratio('blob mem', 'blob direct bearer')} (vs bearer), "
              f"{ratio('blob mem', 'blob direct basic')} (vs basic)")
        for name, (n, per) in es.items():
            print(f"event source {name}: {n} connections, PSS per connection: store {per['store']:.1f} KiB, "
                  f"mem {per['mem']:.1f} KiB")
        bad = [k for k, v in res.items() if v["bad"] or v["errors"]]
        if bad:
            print(f"WARNING: errors or non-2xx answers in: {', '.join(bad)} (see {work}/*.wrk.txt with --keep)")
    except SystemExit:
        for s in servers:
            if s.log_tail():
                print(f"--- {s.role} log tail:\n{s.log_tail()}", file=sys.stderr)
        raise
    finally:
        for s in servers:
            s.stop()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
