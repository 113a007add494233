#!/usr/bin/env python3
"""Latency of one proxy under load, with a clock finer than SIPp's.

SIPp's -trace_rtt times responses on a coarse clock (on this VM its response times
come in 4 ms steps: 0, 4, 8…), so its p99 of "0 ms" or "4 ms" says little about a
proxy that answers in 100 µs. bench/run.py starts this probe beside SIPp (on the load
core) for every step: it sends one request at a time, paced at --rate per second,
and times each answer with time.perf_counter_ns. With --method REGISTER each request
registers a new AOR (probe-<pid>-<n>, the durable path of a new binding); with
OPTIONS it asks the proxy itself (what any message waits behind, under call load;
any final answer counts).

    python3 bench/latency_probe.py 127.0.0.1:5060 --seconds 6 --rate 200 --json out.json

Prints (and writes with --json) samples, lost, p50/p99/p99.9/max in µs. A request
unanswered within 0.5 s counts as lost and is not retried.
"""

import argparse
import json
import os
import socket
import time


def request(method, host, port, me, lp, n, tag):
    user = f"probe-{tag}-{n}"
    target = f"sip:{host}:{port}" if method == "OPTIONS" else f"sip:{host}"
    lines = [f"{method} {target} SIP/2.0",
             f"Via: SIP/2.0/UDP {me}:{lp};branch=z9hG4bK-probe-{tag}-{n};rport",
             "Max-Forwards: 70",
             f"From: <sip:{user}@{host}>;tag=p{n}",
             f"To: <sip:{user}@{host}>",
             f"Call-ID: probe-{tag}-{n}@{me}",
             f"CSeq: 1 {method}"]
    if method == "REGISTER":
        lines += [f"Contact: <sip:{user}@{me}:{lp}>", "Expires: 3600"]
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def pct(vals, q):
    if not vals:
        return None
    return vals[min(len(vals) - 1, int(q * len(vals)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("target", help="host:port of the proxy (UDP)")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second")
    ap.add_argument("--method", choices=("REGISTER", "OPTIONS"), default="REGISTER")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    host, _, port = args.target.rpartition(":")
    port = int(port)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((host, port))
    me, lp = s.getsockname()
    tag = f"{os.getpid()}x{int(time.time()) % 100000}"
    rtts, lost = [], 0
    gap = 1.0 / args.rate
    end = time.monotonic() + args.seconds
    n = 0
    nxt = time.monotonic()
    while time.monotonic() < end:
        n += 1
        want = f"probe-{tag}-{n}@{me}".encode()
        t0 = time.perf_counter_ns()
        s.send(request(args.method, host, port, me, lp, n, tag))
        deadline = time.monotonic() + 0.5
        got = False
        while not got:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                data = s.recv(65535)
            except (socket.timeout, ConnectionRefusedError):
                break
            # a 1xx, or the late answer to an earlier probe: keep waiting for ours.
            # Any final answer counts (Kamailio's script answers an OPTIONS for an
            # unknown user with 404): what is timed is how long a message waits.
            if data.startswith(b"SIP/2.0 ") and data[8:9] != b"1" and want in data:
                rtts.append((time.perf_counter_ns() - t0) / 1000.0)
                got = True
        if not got:
            lost += 1
        nxt += gap
        pause = nxt - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            nxt = time.monotonic()
    rtts.sort()
    out = dict(method=args.method, samples=len(rtts), lost=lost,
               p50_us=pct(rtts, 0.50), p99_us=pct(rtts, 0.99), p999_us=pct(rtts, 0.999),
               max_us=rtts[-1] if rtts else None)
    print(json.dumps(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
