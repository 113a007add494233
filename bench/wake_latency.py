#!/usr/bin/env python3
"""Time from a waking REGISTER's 200 OK to the parked INVITE leaving sipwake.

    python3 bench/wake_latency.py [--binary target/release/sipwake] [--calls 1000]

Starts sipwake on loopback with a webhook push provider served by this script,
registers N phones with an X-Token, lets them fall asleep, then for each phone:
sends an INVITE from a caller, waits for the webhook push, re-registers the phone
from a new UDP port (as a relaunched app does) and measures, on that socket, the
time between the 200 OK to its REGISTER and the INVITE carrying X-PushHint.
It also checks the hint equals the pushed one. Prints median, p90, p99 and max,
plus the RSS of sipwake with every call parked at once.
Loopback only; every wait is bounded.
"""

import argparse
import http.server
import json
import os
import queue
import random
import socket
import statistics
import subprocess
import sys
import threading
import time

pushes = queue.Queue()


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(n))
        pushes.put(body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    return s


def register(s, proxy, user, call_id, token):
    port = s.getsockname()[1]
    msg = (
        f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{random.getrandbits(64):x};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:{user}@127.0.0.1>;tag={random.getrandbits(32):x}\r\n"
        f"To: <sip:{user}@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{user}@127.0.0.1:{port}>\r\n"
        f"X-Token: {token}\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
    )
    s.sendto(msg.encode(), proxy)


def recv_kind(s, kind):
    """Next message whose first line starts with `kind`, and the time it arrived."""
    while True:
        data = s.recv(65535)
        t = time.perf_counter()
        text = data.decode(errors="replace")
        if text.startswith(kind):
            return text, t


def header(text, name):
    for line in text.split("\r\n"):
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    return None


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default="target/release/sipwake")
    ap.add_argument("--calls", type=int, default=1000)
    args = ap.parse_args()

    http.server.ThreadingHTTPServer.request_queue_size = 4096  # pushes arrive in bursts
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    port = free_port()
    proxy = ("127.0.0.1", port)
    env = dict(
        os.environ,
        SIPWAKE__SIP__LISTEN=f"127.0.0.1:{port}",
        SIPWAKE__SIP__TRANSPORTS="udp",
        # never the default admin port 8060: another sipwake may hold it
        SIPWAKE__ADMIN__LISTEN="",
        SIPWAKE__STORE__BACKEND="memory",
        SIPWAKE__PUSH__WEBHOOK__URL=f"http://127.0.0.1:{hook.server_address[1]}/push",
        SIPWAKE__PUSH__DEFAULT_PROVIDER="webhook",
        SIPWAKE__PUSH__FLOW_TIMEOUT_SECS="1",
        SIPWAKE__PUSH__WAKE_TIMEOUT_MS="30000",
        SIPWAKE__PUSH__MAX_PARKED=str(args.calls + 10),
        SIPWAKE__LOG__LEVEL=os.environ.get("WAKE_LOG", "warn"),
    )
    proc = subprocess.Popen([args.binary], env=env)
    try:
        time.sleep(0.5)
        users = [f"wake{i}" for i in range(args.calls)]
        reg = udp()
        for u in users:
            register(reg, proxy, u, f"r-{u}", f"tok-{u}")
            recv_kind(reg, "SIP/2.0 200")
        time.sleep(1.2)  # every phone is asleep now (flow_timeout = 1 s)
        caller = udp()
        cport = caller.getsockname()[1]
        base_rss = rss_kb(proc.pid)
        hints = {}
        for i, u in enumerate(users):
            inv = (
                f"INVITE sip:{u}@127.0.0.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{cport};branch=z9hG4bKc{i}x;rport\r\n"
                f"Max-Forwards: 70\r\nFrom: \"Caller\" <sip:caller@127.0.0.1>;tag=c{i}\r\n"
                f"To: <sip:{u}@127.0.0.1>\r\nCall-ID: call-{u}\r\nCSeq: 1 INVITE\r\n"
                f"Contact: <sip:caller@127.0.0.1:{cport}>\r\nContent-Length: 0\r\n\r\n"
            )
            caller.sendto(inv.encode(), proxy)
            if i % 50 == 49:
                time.sleep(0.02)  # don't overrun the socket buffers: no retransmissions here
        for k in range(len(users)):
            try:
                p = pushes.get(timeout=10)
            except queue.Empty:
                print(f"only {k} of {len(users)} pushes arrived", file=sys.stderr)
                return 1
            hints[p["aor"].split("@")[0]] = p["pushHint"]
        parked_rss = rss_kb(proc.pid)
        lat = []
        for u in users:
            phone = udp()
            register(phone, proxy, u, f"r2-{u}", f"tok-{u}")
            _, t_ok = recv_kind(phone, "SIP/2.0 200")
            inv, t_inv = recv_kind(phone, "INVITE ")
            if header(inv, "X-PushHint") != hints[u]:
                print(f"hint mismatch for {u}", file=sys.stderr)
                return 1
            lat.append((t_inv - t_ok) * 1000)
            phone.close()
        lat.sort()
        n = len(lat)
        print(f"wakes: {n}")
        print(f"200 OK -> INVITE (ms): median {statistics.median(lat):.3f}, "
              f"p90 {lat[int(n * 0.9) - 1]:.3f}, p99 {lat[int(n * 0.99) - 1]:.3f}, max {lat[-1]:.3f}")
        print(f"RSS with {n} calls parked: {parked_rss} KiB "
              f"({(parked_rss - base_rss) * 1024 / n:.0f} bytes per parked call)")
        return 0
    finally:
        proc.kill()


if __name__ == "__main__":
    sys.exit(main())
