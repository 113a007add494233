#!/usr/bin/env python3
"""Sustained push-wake load on sipwake: a simulated fleet of sleeping phones.

    python3 bench/wake_load.py [--binary target/release/sipwake] [--rates 500,1000]
                               [--duration 15] [--parked 10000] [--json out.json]
    python3 bench/wake_load.py --cluster [--node-transport udp|tcp] [--rates 500] ...
    python3 bench/wake_load.py --proxy HOST:PORT --webhook-listen HOST:PORT
                               [--flow-timeout SECS] [--domain D] [--rates 50] ...

Starts sipwake on loopback (pinned to core 0; this script pins itself to core 1)
with the durable SQLite store and a webhook push provider served by this script
(its admin API off, so no port is assumed free). With --proxy it drives a sipwake
already running instead: that deployment must push to the webhook this script
serves on --webhook-listen (push.webhook.url = http://HOST:PORT/push, the webhook
provider serving X-Token phones), accept REGISTERs for --domain without
authentication (local mode, auth off or the script's address trusted), and its
push.flow_timeout_secs is given as --flow-timeout; sipwake's CPU and memory are
not measured then (the parked-call step needs them and is skipped).
Registers every phone with an X-Token, waits until they count as asleep, then for
each offered rate places calls at that rate for the duration: a caller sends an
INVITE through sipwake; sipwake parks it and POSTs the webhook; the fleet "wakes"
the pushed phone, which re-registers from a new UDP port (as a relaunched app
does), receives the INVITE there, checks its X-PushHint against the push, answers
200; the caller ACKs and hangs up (BYE/200). A call counts as failed if it does not
reach the BYE's 200 within 10 s of the end of the step, or if the INVITE the woken
phone got carried an X-PushHint other than its push's pushHint.

Reports per rate: achieved wake calls/s, failures, the time from the 200 OK to the
waking REGISTER to the INVITE on the phone's new socket (kernel receive timestamps,
SO_TIMESTAMPNS, so the script's own scheduling does not count), and sipwake's CPU
per wake call. Then parks --parked calls at once (phones never wake) and reports
the PSS growth per parked call.

With --cluster it measures the wake across nodes instead: it starts a redis-server
(its own directory, append-only file on, fsync every second) and three sipwake
nodes A, B and C on it (Redis store, all pinned to core 0 with Redis). The phones
register on A and fall asleep; calls go to B, which parks them, listens to their
AORs' event channels and pushes; the woken phone registers on C, which commits the
binding to Redis and publishes it on the AOR's channel;
B receives the event and forks the INVITE to C with a Route carrying the phone's
flow token; C relays it to the phone. The latency is again from the 200 OK (from
C) to the INVITE (from C) on the phone's socket. At the first rate the same load
also runs with the woken phone registering on B itself (a local wake on the Redis
store), for comparison. CPU per wake call is that of the three nodes plus Redis.
Between nodes the requests go over UDP, or TCP with --node-transport tcp (each
node's cluster.advertise_uri then carries ;transport=tcp).

Loopback only; every wait bounded; every process started here killed on exit.
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = SO_TIMESTAMPNS


def headers(text):
    """[(lower-case name, raw line)] of a SIP message's header lines."""
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    out = []
    for line in head[1:]:
        if ":" in line:
            out.append((line.split(":", 1)[0].strip().lower(), line))
    return head[0], out


def hval(hs, *names):
    for n, line in hs:
        if n in names:
            return line.split(":", 1)[1].strip()
    return None


def hall(hs, *names):
    return [line for n, line in hs if n in names]


def uri_of(v):
    if "<" in v:
        return v[v.index("<") + 1:v.index(">")]
    return v.split(";")[0].strip()


class Bench:
    def __init__(self, args, proxy, loop):
        self.args = args
        self.proxy = proxy
        # the address the phones and the caller speak from toward sipwake
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect(proxy)
        self.ip = probe.getsockname()[0]
        probe.close()
        self.domain = args.domain or proxy[0]
        # where the phones register first, and where a woken phone registers again
        # (another node than the caller's with --cluster)
        self.reg_proxy = proxy
        self.wake_proxy = proxy
        self.loop = loop
        self.calls = {}          # call-id -> dict
        self.phones = {}         # user -> phone dict
        self.pushes = 0
        self.parked_pushes = 0
        self.hint_mismatch = 0
        self.reg_ok = 0

    # --- sockets -------------------------------------------------------------
    def udp(self, ts=False, reader=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind((self.ip, 0))
        s.setblocking(False)
        if ts:
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if reader:
            self.loop.add_reader(s.fileno(), reader, s)
        return s

    def register_msg(self, s, user, call_id, cseq=1):
        port = s.getsockname()[1]
        ip, d = self.ip, self.domain
        return (f"REGISTER sip:{d} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {ip}:{port};branch=z9hG4bK{random.getrandbits(64):x};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:{user}@{d}>;tag={random.getrandbits(32):x}\r\n"
                f"To: <sip:{user}@{d}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n"
                f"Contact: <sip:{user}@{ip}:{port}>\r\n"
                f"X-Token: tok-{user}\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n").encode()

    # --- initial registration ------------------------------------------------
    async def register_all(self, users):
        """Register every phone, 200 in flight at most, retransmitting unanswered
        REGISTERs after 0.5 s as a phone would (UDP may drop under a burst)."""
        s = self.udp(reader=self.on_reg)
        self.reg_pending = {}
        window = 200
        i = 0
        deadline = time.monotonic() + 60 + len(users) / 500
        while self.reg_ok < len(users):
            now = time.monotonic()
            while i < len(users) and len(self.reg_pending) < window:
                cid = f"r-{users[i]}"
                self.reg_pending[cid] = (users[i], now)
                s.sendto(self.register_msg(s, users[i], cid), self.reg_proxy)
                i += 1
            for cid, (u, t) in list(self.reg_pending.items()):
                if now - t > 0.5:
                    self.reg_pending[cid] = (u, now)
                    s.sendto(self.register_msg(s, u, cid), self.reg_proxy)
            await asyncio.sleep(0.002)
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.reg_ok} of {len(users)} phones registered")
        self.loop.remove_reader(s.fileno())
        s.close()

    def on_reg(self, s):
        while True:
            try:
                data = s.recv(65535)
            except BlockingIOError:
                return
            first, hs = headers(data.decode(errors="replace"))
            if first.startswith("SIP/2.0 200"):
                if self.reg_pending.pop(hval(hs, "call-id", "i"), None) is not None:
                    self.reg_ok += 1
            elif first.startswith("SIP/2.0 1"):
                continue
            elif first.startswith("SIP/2.0"):
                raise RuntimeError("REGISTER refused: " + first)

    # --- webhook (HTTP/1.1 keep-alive) ---------------------------------------
    async def on_http(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                n = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        n = int(line.split(b":")[1])
                body = await reader.readexactly(n) if n else b""
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                try:
                    doc = json.loads(body)
                except ValueError:
                    continue
                if doc.get("event", "call") == "call":
                    self.on_push(doc)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def on_push(self, doc):
        self.pushes += 1
        user = doc["aor"].split("@")[0]
        if user.startswith("sip:"):
            user = user[4:]
        if user.startswith("park"):
            self.parked_pushes += 1
            return
        if user in self.phones:
            return
        ph = {"user": user, "hint": doc.get("pushHint"), "t_ok": None, "t_inv": None,
              "answer": None, "mismatch": False}
        s = self.udp(ts=True, reader=lambda sock, ph=ph: self.on_phone(sock, ph))
        ph["sock"] = s
        self.phones[user] = ph
        msg = self.register_msg(s, user, f"r2-{user}", 2)
        # when the waking REGISTER left (the same clock as the kernel's receive
        # timestamps): REGISTER -> INVITE is what the woken phone waits
        ph["t_reg"] = time.time()
        s.sendto(msg, self.wake_proxy)

    def on_phone(self, s, ph):
        while True:
            try:
                # answers go where the request came from: the node the phone
                # registered on, which relays for the caller's node
                data, anc, _, src = s.recvmsg(65535, 64)
            except BlockingIOError:
                return
            except OSError:
                return
            t = None
            for lvl, typ, d in anc:
                if lvl == socket.SOL_SOCKET and typ == SCM_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", d[:16])
                    t = sec + nsec * 1e-9
            if t is None:
                t = time.time()
            text = data.decode(errors="replace")
            first, hs = headers(text)
            if first.startswith("SIP/2.0 200") and (hval(hs, "cseq") or "").endswith("REGISTER"):
                if ph["t_ok"] is None:
                    ph["t_ok"] = t
            elif first.startswith("INVITE "):
                if ph["t_inv"] is None:
                    ph["t_inv"] = t
                    if hval(hs, "x-pushhint") != ph["hint"]:
                        self.hint_mismatch += 1
                        ph["mismatch"] = True
                if ph["answer"] is None:
                    port = s.getsockname()[1]
                    lines = ["SIP/2.0 200 OK"] + hall(hs, "via", "v") + hall(hs, "record-route")
                    lines += [hall(hs, "from", "f")[0], hall(hs, "to", "t")[0] + ";tag=ph" + ph["user"],
                              hall(hs, "call-id", "i")[0], hall(hs, "cseq")[0],
                              f"Contact: <sip:{ph['user']}@{self.ip}:{port}>",
                              "Content-Length: 0", "", ""]
                    ph["answer"] = "\r\n".join(lines).encode()
                s.sendto(ph["answer"], src)
            elif first.startswith("BYE "):
                lines = ["SIP/2.0 200 OK"] + hall(hs, "via", "v")
                lines += [hall(hs, "from", "f")[0], hall(hs, "to", "t")[0],
                          hall(hs, "call-id", "i")[0], hall(hs, "cseq")[0],
                          "Content-Length: 0", "", ""]
                s.sendto("\r\n".join(lines).encode(), src)
                self.loop.call_later(2.0, self.close_phone, ph)

    def close_phone(self, ph):
        s = ph.get("sock")
        if s is not None and s.fileno() >= 0:
            self.loop.remove_reader(s.fileno())
            s.close()

    # --- caller ----------------------------------------------------------------
    def invite(self, s, user, i):
        port = s.getsockname()[1]
        cid = f"call-{user}"
        c = {"user": user, "state": "inviting", "t0": time.monotonic(), "tag": f"c{i}",
             "branch": f"z9hG4bKc{random.getrandbits(48):x}"}
        self.calls[cid] = c
        ip, d = self.ip, self.domain
        c["ruri"] = f"sip:{user}@{d}"
        msg = (f"INVITE {c['ruri']} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {ip}:{port};branch={c['branch']};rport\r\n"
               f"Max-Forwards: 70\r\nFrom: \"Caller\" <sip:caller@{d}>;tag={c['tag']}\r\n"
               f"To: <sip:{user}@{d}>\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\n"
               f"Contact: <sip:caller@{ip}:{port}>\r\nContent-Length: 0\r\n\r\n")
        s.sendto(msg.encode(), self.proxy)

    def on_caller(self, s):
        port = s.getsockname()[1]
        while True:
            try:
                data = s.recv(65535)
            except BlockingIOError:
                return
            text = data.decode(errors="replace")
            first, hs = headers(text)
            if not first.startswith("SIP/2.0 "):
                continue
            code = int(first.split()[1])
            cid = hval(hs, "call-id", "i")
            c = self.calls.get(cid)
            cseq = hval(hs, "cseq") or ""
            if c is None or code < 200:
                continue
            to = hall(hs, "to", "t")[0]
            if cseq.endswith("INVITE"):
                if code >= 300:
                    ack = (f"ACK {c['ruri']} SIP/2.0\r\n"
                           f"Via: SIP/2.0/UDP {self.ip}:{port};branch={c['branch']};rport\r\n"
                           f"Max-Forwards: 70\r\nFrom: \"Caller\" <sip:caller@{self.domain}>;tag={c['tag']}\r\n"
                           f"{to}\r\nCall-ID: {cid}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n")
                    s.sendto(ack.encode(), self.proxy)
                    if c["state"] == "inviting":
                        c["state"] = f"failed {code}"
                    continue
                if c["state"] != "inviting":
                    # a retransmitted 200: ACK again
                    if c.get("ack"):
                        s.sendto(c["ack"], self.proxy)
                    continue
                c["t_200"] = time.monotonic()
                target = uri_of(hval(hs, "contact", "m") or f"<{c['ruri']}>")
                rr = []
                for line in hall(hs, "record-route"):
                    rr += [x.strip() for x in line.split(":", 1)[1].split(",") if x.strip()]
                route = "".join(f"Route: {r}\r\n" for r in reversed(rr))
                common = (f"Max-Forwards: 70\r\n{route}"
                          f"From: \"Caller\" <sip:caller@{self.domain}>;tag={c['tag']}\r\n"
                          f"{to}\r\nCall-ID: {cid}\r\n")
                c["ack"] = (f"ACK {target} SIP/2.0\r\n"
                            f"Via: SIP/2.0/UDP {self.ip}:{port};branch=z9hG4bKa{random.getrandbits(48):x};rport\r\n"
                            + common + "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n").encode()
                c["bye"] = (f"BYE {target} SIP/2.0\r\n"
                            f"Via: SIP/2.0/UDP {self.ip}:{port};branch=z9hG4bKb{random.getrandbits(48):x};rport\r\n"
                            + common + "CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n").encode()
                s.sendto(c["ack"], self.proxy)
                s.sendto(c["bye"], self.proxy)
                c["state"] = "bye"
            elif cseq.endswith("BYE") and c["state"] == "bye":
                c["state"] = "done" if code == 200 else f"bye {code}"
                c["t_done"] = time.monotonic()

    async def load_step(self, rate, duration, prefix, pids):
        """Calls at `rate` for `duration` s to the users `prefix`_N; CPU summed over
        `pids` (the nodes and Redis; none: not measured)."""
        s = self.udp(reader=self.on_caller)
        users = [f"{prefix}_{i}" for i in range(rate * duration)]
        cids = [f"call-{u}" for u in users]
        cores0 = core1_busy()

        def cpu():
            return sum(bl.tree_cpu_seconds(p) for p in pids) if pids else float("nan")
        cpu0 = cpu()
        t0 = time.monotonic()
        sent = 0
        while sent < len(users):
            due = min(len(users), int((time.monotonic() - t0) * rate) + 1)
            while sent < due:
                self.invite(s, users[sent], sent)
                sent += 1
            await asyncio.sleep(0.005)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if all(self.calls[c]["state"] not in ("inviting", "bye") for c in cids):
                break
            await asyncio.sleep(0.05)
        cpu1 = cpu()
        cores1 = core1_busy()
        self.loop.remove_reader(s.fileno())
        s.close()
        # a call whose woken phone got another X-PushHint than its push is a failure:
        # the app would not match the INVITE to the call it was woken for
        mismatched = {f"call-{u}" for u in users
                      if u in self.phones and self.phones[u]["mismatch"]}
        for c in mismatched:
            if self.calls[c]["state"] == "done":
                self.calls[c]["state"] = "X-PushHint mismatch"
        done = [self.calls[c] for c in cids if self.calls[c]["state"] == "done"]
        failed = len(cids) - len(done)
        states = {}
        for c in cids:
            st = self.calls[c]["state"]
            if st != "done":
                states[st] = states.get(st, 0) + 1
        span = (max(c["t_done"] for c in done) - t0) if done else 0
        lat = sorted((self.phones[u]["t_inv"] - self.phones[u]["t_ok"]) * 1000 for u in users
                     if u in self.phones and self.phones[u]["t_inv"] and self.phones[u]["t_ok"])
        setup = sorted((c["t_200"] - c["t0"]) * 1000 for c in done)
        reg_inv = sorted((self.phones[u]["t_inv"] - self.phones[u]["t_reg"]) * 1000 for u in users
                         if u in self.phones and self.phones[u]["t_inv"])
        return dict(rate=rate, duration=duration, calls=len(cids), ok=len(done), failed=failed,
                    failure_states=states, hint_mismatch_calls=len(mismatched),
                    achieved=len(done) / span if span else 0.0,
                    lat_samples=len(lat),
                    lat_median=bl.pct(lat, 0.5), lat_p99=bl.pct(lat, 0.99),
                    lat_max=lat[-1] if lat else float("nan"),
                    # with the wake across nodes the INVITE may reach the phone before
                    # the 200 to its REGISTER (a negative latency): counted here
                    lat_negative=sum(1 for x in lat if x < 0),
                    reg_invite_median=bl.pct(reg_inv, 0.5), reg_invite_p99=bl.pct(reg_inv, 0.99),
                    setup_median=bl.pct(setup, 0.5), setup_p99=bl.pct(setup, 0.99),
                    cpu_s=cpu1 - cpu0,
                    cpu_us_per_call=(cpu1 - cpu0) * 1e6 / len(done) if done else float("nan"),
                    load_core_busy=(cores1[0] - cores0[0]) / max(1, cores1[1] - cores0[1]))

    async def park(self, n, pid):
        s = self.udp(reader=lambda sock: self.drain(sock))
        await asyncio.sleep(0.5)
        _, pss0 = bl.tree_memory_kib(pid)
        t0 = time.monotonic()
        for i in range(n):
            self.invite(s, f"park_{i}", i)
            if i % 100 == 99:
                await asyncio.sleep(0.03)
        deadline = time.monotonic() + 30
        while self.parked_pushes < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        rss1, pss1 = bl.tree_memory_kib(pid)
        got = self.parked_pushes
        return dict(parked=got, requested=n, pss_before_kib=pss0, pss_after_kib=pss1,
                    rss_after_kib=rss1, seconds=time.monotonic() - t0,
                    bytes_per_call=(pss1 - pss0) * 1024 / got if got else float("nan"))

    def drain(self, s):
        while True:
            try:
                s.recv(65535)
            except BlockingIOError:
                return


def core1_busy():
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu1 "):
                v = [int(x) for x in line.split()[1:]]
                return sum(v[:8]) - v[3] - v[4], sum(v[:8])
    return 0, 1


async def amain(args, work):
    loop = asyncio.get_running_loop()
    bench = None

    conns = set()

    async def handler(r, w):
        conns.add(w)
        try:
            await bench.on_http(r, w)
        finally:
            conns.discard(w)

    async def close_webhook():
        # a deployment keeps its webhook connection open: close it before the loop ends
        srv.close()
        for w in list(conns):
            w.close()
        for _ in range(50):
            if not conns:
                break
            await asyncio.sleep(0.01)

    hook_host, hook_port = "127.0.0.1", 0
    if args.webhook_listen:
        hook_host, _, p = args.webhook_listen.rpartition(":")
        hook_port = int(p)
    srv = await asyncio.start_server(handler, hook_host, hook_port, backlog=4096)
    hook_port = srv.sockets[0].getsockname()[1]
    rates = [int(x) for x in args.rates.split(",") if x]
    total = sum(r * args.duration for r in rates)
    result = {"steps": [], "ok": True}

    def start(name, max_parked, redis_url=None):
        """sipwake on a free loopback port: the SQLite store, or with redis_url a
        node of a cluster on that Redis."""
        port = bl.free_port()
        if redis_url is None:
            store = dict(SIPWAKE__STORE__BACKEND="sqlite",
                         SIPWAKE__STORE__PATH=os.path.join(work, f"{name}.db"))
        else:
            store = dict(SIPWAKE__STORE__BACKEND="redis", SIPWAKE__STORE__REDIS__URL=redis_url)
            if args.node_transport == "tcp":
                store["SIPWAKE__CLUSTER__ADVERTISE_URI"] = f"sip:127.0.0.1:{port};transport=tcp"
        env = dict(os.environ,
                   SIPWAKE__SIP__LISTEN=f"127.0.0.1:{port}",
                   # the phones and the caller use UDP; TCP only between nodes
                   SIPWAKE__SIP__TRANSPORTS="udp,tcp" if redis_url else "udp",
                   **store,
                   SIPWAKE__PUSH__WEBHOOK__URL=f"http://127.0.0.1:{hook_port}/push",
                   SIPWAKE__PUSH__DEFAULT_PROVIDER="webhook",
                   SIPWAKE__PUSH__FLOW_TIMEOUT_SECS="1",
                   SIPWAKE__PUSH__WAKE_TIMEOUT_MS="30000",
                   SIPWAKE__PUSH__MAX_PARKED=str(max_parked),
                   # never the default admin port 8060: another sipwake may hold it
                   SIPWAKE__ADMIN__LISTEN="",
                   SIPWAKE__LOG__LEVEL="warn")
        env.pop("SIPWAKE_LOG", None)
        with open(os.path.join(work, f"{name}.log"), "wb") as logf:
            proc = subprocess.Popen(["taskset", "-c", "0", args.binary], env=env, stdout=logf,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        return proc, port

    def stop(proc):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    async def wake_steps(proxy, pids, alive, plan=None, reg_proxy=None):
        """Registers the phones (at reg_proxy, default proxy), lets them fall
        asleep, then runs the steps of `plan`: (rate, where, wake node address)
        for each, default every rate waking on proxy itself."""
        nonlocal bench
        bench = Bench(args, proxy, loop)
        bench.reg_proxy = reg_proxy or proxy
        plan = plan or [(r, "local", proxy) for r in rates]
        users = [f"{where[0]}{r}_{i}" for r, where, _ in plan
                 for i in range(r * args.duration)]
        t = time.monotonic()
        await bench.register_all(users)
        print(f"registered {len(users)} phones in {time.monotonic() - t:.1f} s",
              file=sys.stderr)
        # every phone is asleep once push.flow_timeout_secs has passed
        await asyncio.sleep(args.flow_timeout + 0.3)
        for r, where, wake_at in plan:
            bench.wake_proxy = wake_at
            st = await bench.load_step(r, args.duration, f"{where[0]}{r}", pids)
            st["where"] = where
            st["hint_mismatch"] = bench.hint_mismatch
            result["steps"].append(st)
            print(f"wake {where} {r}/s: {json.dumps(st)}", file=sys.stderr)
            if not alive():
                raise RuntimeError("sipwake died")
        # the first (target) rate must pass; higher rates probe the limit
        result["ok"] = (all(st["failed"] == 0 for st in result["steps"]
                            if st["rate"] == rates[0])
                        and not bench.hint_mismatch)
        return bench

    if args.proxy:
        host, _, p = args.proxy.rpartition(":")
        proxy = (socket.gethostbyname(host), int(p))
        try:
            await loop.run_in_executor(
                None, lambda: bl.wait_sip_udp(proxy[1], host=proxy[0]))
            if rates:
                await wake_steps(proxy, [], lambda: True)
        finally:
            await close_webhook()
        return result

    if args.cluster:
        procs = []
        try:
            rdir = os.path.join(work, "redis")
            os.makedirs(rdir, exist_ok=True)
            rport = bl.free_port()
            with open(os.path.join(rdir, "redis.log"), "wb") as logf:
                redis = subprocess.Popen(bl.redis_argv(rdir, rport, core=0), stdout=logf,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
            procs.append(redis)
            await loop.run_in_executor(None, lambda: bl.wait_redis(rport, proc=redis))
            nodes = []
            for name in ("a", "b", "c"):
                proc, port = start(f"node-{name}", total * 2 + 1000,
                                   redis_url=f"redis://127.0.0.1:{rport}")
                procs.append(proc)
                await loop.run_in_executor(
                    None, lambda: bl.wait_sip_udp(port, proc=proc))
                nodes.append(("127.0.0.1", port))
            a, b, c = nodes
            # the same load with the phone waking on B itself first (at the first
            # rate), then across nodes at every rate
            plan = [(rates[0], "same node", b)] + [(r, "across nodes", c) for r in rates]
            await wake_steps(b, [p.pid for p in procs],
                             lambda: all(p.poll() is None for p in procs),
                             plan=plan, reg_proxy=a)
            result["cluster"] = dict(nodes=3, node_transport=args.node_transport,
                                     redis_memory=bl.redis_info(rport)["used_memory"])
        finally:
            for p in reversed(procs):
                stop(p)
            srv.close()
        return result

    try:
        # 1. memory per parked call, on a fresh sipwake: the phones are registered
        #    first, so the growth is the parked calls' alone
        if args.parked:
            proc, port = start("park", args.parked + 100)
            try:
                await loop.run_in_executor(None, lambda: bl.wait_sip_udp(port, proc=proc))
                bench = Bench(args, ("127.0.0.1", port), loop)
                await bench.register_all([f"park_{i}" for i in range(args.parked)])
                await asyncio.sleep(1.3)
                result["parked"] = await bench.park(args.parked, proc.pid)
                print(f"parked: {json.dumps(result['parked'])}", file=sys.stderr)
            finally:
                stop(proc)
        # 2. sustained wake load
        if rates:
            proc, port = start("wake", total + 1000)
            try:
                await loop.run_in_executor(None, lambda: bl.wait_sip_udp(port, proc=proc))
                await wake_steps(("127.0.0.1", port), [proc.pid], lambda: proc.poll() is None)
            finally:
                stop(proc)
    finally:
        srv.close()
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default="target/release/sipwake")
    ap.add_argument("--rates", default="500", help="comma-separated wake calls/s")
    ap.add_argument("--duration", type=int, default=15, help="seconds per rate")
    ap.add_argument("--parked", type=int, default=None,
                    help="calls parked at once (0: skip; default 10000, 0 with --cluster)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--proxy", default=None, metavar="HOST:PORT",
                    help="drive this running sipwake (UDP) instead of starting one")
    ap.add_argument("--webhook-listen", default=None, metavar="HOST:PORT",
                    help="serve the push webhook here (required with --proxy: the "
                         "deployment's push.webhook.url must be http://HOST:PORT/push)")
    ap.add_argument("--flow-timeout", type=float, default=1.0, metavar="SECS",
                    help="the deployment's push.flow_timeout_secs (phones count as "
                         "asleep after it; a started sipwake uses 1)")
    ap.add_argument("--domain", default=None,
                    help="domain of the phones' AORs (default: the proxy's host)")
    ap.add_argument("--cluster", action="store_true",
                    help="the wake across nodes: Redis and three sipwake nodes (see above)")
    ap.add_argument("--node-transport", choices=("udp", "tcp"), default="udp",
                    help="with --cluster: how the nodes send each other requests")
    args = ap.parse_args()
    if args.cluster and args.proxy:
        ap.error("--cluster starts its own nodes: not with --proxy")
    if args.cluster and args.parked:
        print("--cluster: the parked-call memory step is single-node; skipped",
              file=sys.stderr)
        args.parked = 0
    if args.parked is None:
        args.parked = 0 if args.cluster else 10000
    if args.proxy and not args.webhook_listen:
        ap.error("--proxy needs --webhook-listen (where the deployment pushes)")
    if args.proxy and args.parked:
        print("--proxy: the parked-call memory step needs sipwake's process; skipped",
              file=sys.stderr)
        args.parked = 0
    try:
        os.sched_setaffinity(0, {1})
    except OSError:
        pass
    work = args.workdir or tempfile.mkdtemp(prefix="sipwake-wake-")
    os.makedirs(work, exist_ok=True)
    try:
        res = asyncio.run(asyncio.wait_for(amain(args, work), timeout=360))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    for s in res["steps"]:
        cpu = (f"{s['cpu_us_per_call']:.1f} CPU-us per wake call"
               if s['cpu_us_per_call'] == s['cpu_us_per_call'] else "CPU not measured")
        print(f"{s.get('where', 'local')} {s['rate']}/s offered: {s['achieved']:.0f}/s achieved, "
              f"{s['failed']} failed ({s['hint_mismatch_calls']} X-PushHint mismatches) "
              f"{s['failure_states'] or ''}; 200 OK -> INVITE ms: median {s['lat_median']:.3f} "
              f"p99 {s['lat_p99']:.3f} max {s['lat_max']:.3f}; REGISTER sent -> INVITE ms: "
              f"median {s['reg_invite_median']:.3f} p99 {s['reg_invite_p99']:.3f}; {cpu}")
    if "parked" in res:
        p = res["parked"]
        print(f"{p['parked']} parked: PSS {p['pss_before_kib']} -> {p['pss_after_kib']} KiB "
              f"({p['bytes_per_call']:.0f} bytes per parked call)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0 if res.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
