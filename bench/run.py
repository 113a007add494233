#!/usr/bin/env python3
"""sipwake against Kamailio, side by side, on this machine, in one run.

    python3 bench/run.py                 # full run (about 20 minutes), writes docs/BENCHMARKS.md
    python3 bench/run.py --smoke         # ~1.5 min: small rates, a few seconds per step
    python3 bench/run.py --no-kamailio   # sipwake only
    python3 bench/run.py --stores sqlite # sipwake with the SQLite store only (no Redis)
    python3 bench/run.py --only refresh --duration 4 --no-ramp   # a subset, short steps

Builds the release binary, starts sipwake with the durable SQLite store
("sipwake"), sipwake with the Redis store ("sipwake-redis": a redis-server started
here on a free loopback port in its own directory, append-only file on with
appendfsync everysec, hash-max-listpack-value 2048) and Kamailio
(bench/kamailio/kamailio.cfg: in-memory usrloc + tm + record_route) on loopback
ports, pins the proxies (and Redis) to core 0 and every load generator (SIPp, the
phone fleet) to core 1, and drives each proxy with SIPp at the same offered rates:

  1. REGISTER of distinct users with pn-* Contact parameters and an X-Token
     (sipp-scenarios/register_push.xml), UDP ("register": a new AOR each), then the
     same users again from the same Contact ("refresh": only Call-ID, CSeq and expiry
     move), at 2,000 and 8,000/s;
  2. calls INVITE/180/200/ACK/BYE/200 through the proxy to a registered SIPp UAS
     (uac.xml -> proxy -> uas.xml), at 500 and 2,000/s with UDP on both legs ("call")
     and with the caller leg on TCP ("tcp");
  3. push-wake calls, sipwake only (bench/wake_load.py, "wake"), and the wake across
     nodes ("xwake": bench/wake_load.py --cluster, three nodes on one Redis, the
     call parked on B woken by the phone's REGISTER on C; also the same load woken
     on B itself);
  4. memory: PSS per binding (the bindings left by step 1, measured 40 s after it,
     once its REGISTER transactions have ended), per transaction waiting out timer
     J (PSS right after the REGISTER steps minus 40 s later, over the REGISTERs
     answered in the last 32 s) and likewise per call (INVITE and BYE transactions
     of both legs waiting out timers K/J/H/I plus the ended dialog), and, for
     sipwake, per parked call;
  5. a short ramp per kind ("ramp"): from the highest fixed rate up by 1.5x, short
     steps, until a step fails 0.1 % or more of its operations or falls below 90 % of
     the offered rate; reports the highest rate that passed.

Beside the proxies, on core 0, the kernel floor (examples/udp_floor.rs: one recvfrom
and one sendto per REGISTER, a fixed 200 OK; --floor-batch: recvmmsg/sendmmsg) takes
the REGISTER steps too, and the UDP call steps as a bare relay (a call's six datagrams
in and seven out, 100 Trying included, nothing parsed), so the report shows which
share of each proxy's CPU is the kernel's. In every step bench/latency_probe.py times requests on a fine clock
beside SIPp (whose response times come in 4 ms steps here).

For every step it reads the proxy's CPU time (utime+stime of the process, its
threads and all its child processes, from /proc) before and after and reports
CPU-us per operation, which is the figure that survives a noisy shared machine;
ratios are sipwake/Kamailio from the same run. The context switches of the
proxy's threads are read the same way (/proc/PID/task/*/status) and reported per
operation: each voluntary one is a sleep and a wake-up the kernel charges. For the Redis store, Redis's own
CPU in the step is read the same way and reported beside sipwake's: it is part of
what the store costs. Redis's memory per binding is its INFO used_memory before
and after the REGISTER steps. Steps for the proxies are interleaved, so all see
the same background load. Before each step it waits (15 s at most) until every
proxy and Redis server together use under 5 % of a core, so a proxy still working off
an overloaded step does not run inside the next one's measurement. Every wait is bounded and every process started here
(Redis included) is killed, by its process group, on exit.
"""

import argparse
import csv
import datetime
import glob
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCEN = os.path.join(ROOT, "sipp-scenarios")
PROXY_CORE = "0"
LOAD_CORE = "1"

started_procs = []


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def kill_all():
    for p in started_procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                p.wait(timeout=5)
            except Exception:
                pass


def spawn(argv, logfile, env=None, cwd=None):
    f = open(logfile, "wb")
    p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env=env, cwd=cwd, start_new_session=True)
    f.close()
    started_procs.append(p)
    return p


class Proxy:
    def __init__(self, name, proc, port, logfile, redis=None, redis_port=None):
        self.name, self.proc, self.port, self.logfile = name, proc, port, logfile
        # sipwake-redis: the redis-server holding its bindings, measured beside it
        self.redis, self.redis_port = redis, redis_port

    @property
    def pid(self):
        return self.proc.pid

    def hostport(self):
        return f"127.0.0.1:{self.port}"

    def alive(self):
        return self.proc.poll() is None and (self.redis is None or self.redis.poll() is None)

    def redis_cpu(self):
        return bl.tree_cpu_seconds(self.redis.pid) if self.redis else 0.0


def start_redis(work):
    """A redis-server for the Redis store, on the proxy's core, in its own directory."""
    rdir = os.path.join(work, "redis")
    os.makedirs(rdir, exist_ok=True)
    port = bl.free_port()
    p = spawn(bl.redis_argv(rdir, port, core=PROXY_CORE), os.path.join(rdir, "redis.log"),
              cwd=rdir)
    bl.wait_redis(port, proc=p)
    return p, port


def start_sipwake(work, binary, extra_env=(), store="sqlite"):
    port = bl.free_port()
    redis = redis_port = None
    if store == "redis":
        redis, redis_port = start_redis(work)
        store_env = dict(SIPWAKE__STORE__BACKEND="redis",
                         SIPWAKE__STORE__REDIS__URL=f"redis://127.0.0.1:{redis_port}")
        name = "sipwake-redis"
    else:
        store_env = dict(SIPWAKE__STORE__BACKEND="sqlite",
                         SIPWAKE__STORE__PATH=os.path.join(work, "sipwake.db"))
        name = "sipwake"
    env = dict(os.environ,
               SIPWAKE__SIP__LISTEN=f"127.0.0.1:{port}",
               SIPWAKE__SIP__TRANSPORTS="udp,tcp",
               **store_env,
               SIPWAKE__LOG__LEVEL="warn",
               # never the default admin port 8060: another sipwake may hold it
               SIPWAKE__ADMIN__LISTEN="",
               # a provider must be on, or REGISTERs with tokens get 555; nothing is
               # pushed in these steps (the UAS registers without a token)
               SIPWAKE__PUSH__WEBHOOK__URL="http://127.0.0.1:9/push",
               SIPWAKE__PUSH__DEFAULT_PROVIDER="webhook")
    env.pop("SIPWAKE_LOG", None)
    for kv in extra_env:
        k, _, v = kv.partition("=")
        env[k if k.startswith("SIPWAKE") else "SIPWAKE__" + k] = v
    lf = os.path.join(work, f"{name}.log")
    p = spawn(["taskset", "-c", PROXY_CORE, binary], lf, env=env, cwd=work)
    bl.wait_sip_udp(port, proc=p)
    return Proxy(name, p, port, lf, redis=redis, redis_port=redis_port)


def start_floor(work, binary, batch=False):
    """The kernel floor (examples/udp_floor.rs): one recvfrom and one sendto per
    request, a fixed 200 OK; in UDP call steps a bare relay of the call's datagrams
    (not with `batch`, which answers REGISTERs only). Measured beside the proxies on
    their core."""
    port = bl.free_port()
    lf = os.path.join(work, "floor.log")
    p = spawn(["taskset", "-c", PROXY_CORE, binary, f"127.0.0.1:{port}"]
              + (["batch"] if batch else []), lf, cwd=work)
    bl.wait_sip_udp(port, proc=p)
    return Proxy("floor", p, port, lf)


def start_kamailio(work):
    port = bl.free_port()
    kdir = os.path.join(work, "kamailio")
    os.makedirs(kdir, exist_ok=True)
    lf = os.path.join(work, "kamailio.log")
    argv = ["taskset", "-c", PROXY_CORE, "kamailio",
            "-f", os.path.join(ROOT, "bench", "kamailio", "kamailio.cfg"),
            "-DD", "-E",                 # foreground, log to stderr
            "-x", "fm", "-X", "fm",      # fast allocator, not Debian's debugging default
            "-m", "256", "-M", "32",     # shared / private memory, MiB
            "-n", "2", "-N", "2",        # 2 UDP workers, 2 TCP workers
            "-l", f"udp:127.0.0.1:{port}", "-l", f"tcp:127.0.0.1:{port}",
            "-Y", kdir, "-w", kdir, "-P", os.path.join(kdir, "kamailio.pid")]
    p = spawn(argv, lf, cwd=kdir)
    bl.wait_sip_udp(port, proc=p)
    return Proxy("kamailio", p, port, lf)


def wait_rusage(p, timeout):
    """Wait for p (our child) and return (returncode, its CPU seconds from rusage,
    timed_out)."""
    deadline = time.monotonic() + timeout
    timed_out = False
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            break
        if time.monotonic() > deadline:
            timed_out = True
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.02)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, ru.ru_utime + ru.ru_stime, timed_out


def sipp_argv(scenario, local_port, extra):
    return ["taskset", "-c", LOAD_CORE, "sipp", "-sf", os.path.join(SCEN, scenario),
            "-i", "127.0.0.1", "-p", str(local_port), "-nostdin",
            "-trace_stat", "-stf", "stat.csv", "-fd", "1",
            "-trace_rtt", "-rtt_freq", "100",
            "-trace_err", "-error_file", "errors.log",
            "-buff_size", "4194304",
            # a 180 overtaken by the 200 (Kamailio's workers run in parallel) is not
            # a failure of the call: don't abort calls on unexpected messages
            "-default_behaviors", "-abortunexp"] + extra


def sipp_results(cwd, scenario, pid):
    out = {}
    try:
        with open(os.path.join(cwd, "stat.csv")) as f:
            rows = list(csv.reader(f, delimiter=";"))
        last = dict(zip(rows[0], rows[-1]))
        out["ok"] = int(last.get("SuccessfulCall(C)", 0))
        out["failed"] = int(last.get("FailedCall(C)", 0))
        out["retrans"] = int(last.get("Retransmissions(C)", 0))
        t0 = float(last["StartTime"].split("\t")[-1])
        t1 = float(last["CurrentTime"].split("\t")[-1])
        out["elapsed"] = t1 - t0
    except (OSError, IndexError, KeyError, ValueError):
        out.update(ok=0, failed=0, retrans=0, elapsed=0.0)
    rtts = []
    base = os.path.splitext(scenario)[0]
    for fn in glob.glob(os.path.join(cwd, f"{base}_{pid}_rtt.csv")):
        with open(fn) as f:
            for line in f:
                parts = line.strip().split(";")
                if len(parts) == 3 and parts[2] == "1":
                    try:
                        rtts.append(float(parts[1]))
                    except ValueError:
                        pass
    rtts.sort()
    out["p50"] = bl.pct(rtts, 0.50)
    out["p99"] = bl.pct(rtts, 0.99)
    out["rtt_samples"] = len(rtts)
    return out


def core_busy():
    """busy and total jiffies of cores 0 and 1 from /proc/stat."""
    res = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(("cpu0 ", "cpu1 ")):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]
                res[line.split()[0]] = (sum(v[:8]) - idle, sum(v[:8]))
    return res


def run_step(proxy, step, work, opts):
    """One measured step against one proxy; returns a dict of figures."""
    kind, rate, dur = step["kind"], step["rate"], step["duration"]
    n = rate * dur
    sdir = os.path.join(work, f"{step['id']}-{proxy.name}")
    os.makedirs(sdir)
    extra_uas = None
    uas_cpu = 0.0
    if kind in ("register", "refresh"):
        # a refresh step re-registers the users of its "users" step from the same
        # Contact (same SIPp port): a new Call-ID and CSeq, same contact and token
        users = opts.users.setdefault((proxy.name, step["users"]),
                                      dict(port=bl.free_port(), n=0))
        if kind == "refresh" and users["n"] < n:
            raise RuntimeError(f"{step['id']}: only {users['n']} users to refresh")
        scen = "register_push.xml"
        argv = sipp_argv(scen, users["port"],
                         ["-s", f"{step['users']}u", "-m", str(n), "-r", str(rate),
                          "-l", str(max(100, rate * 2)), "-timeout", f"{dur * 3 + 20}s",
                          proxy.hostport()])
    else:
        user = f"uas{step['id']}"
        uas_port = bl.free_port()
        reg = subprocess.run(
            sipp_argv("register_uas.xml", uas_port,
                      ["-s", user, "-m", "1", "-timeout", "10s", proxy.hostport()]),
            cwd=sdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20)
        if reg.returncode != 0:
            raise RuntimeError(f"{proxy.name}: REGISTER of the UAS failed")
        udir = os.path.join(sdir, "uas")
        os.makedirs(udir)
        extra_uas = spawn(sipp_argv("uas.xml", uas_port,
                                    ["-m", str(n), "-timeout", f"{dur * 3 + 30}s"]),
                          os.path.join(udir, "out.log"), cwd=udir)
        time.sleep(0.3)
        scen = "uac.xml"
        tr = ["-t", "t1"] if step["transport"] == "tcp" else []
        argv = sipp_argv(scen, bl.free_port(),
                         tr + ["-s", user, "-m", str(n), "-r", str(rate),
                               "-l", str(max(100, rate)), "-timeout", f"{dur * 3 + 20}s",
                               "-recv_timeout", "10000", proxy.hostport()])
    cpu0 = bl.tree_cpu_seconds(proxy.pid)
    sw0 = bl.tree_switches(proxy.pid)
    rcpu0 = proxy.redis_cpu()
    cores0 = core_busy()
    t0 = time.monotonic()
    p = spawn(argv, os.path.join(sdir, "out.log"), cwd=sdir)
    probe = None
    if opts.probe_rate > 0:
        # the fine-clock latency beside SIPp's (latency_probe.py): new AORs in the
        # REGISTER steps, OPTIONS to the proxy itself in the call steps
        pdir = os.path.join(sdir, "probe")
        os.makedirs(pdir)
        probe = spawn(["taskset", "-c", LOAD_CORE, sys.executable,
                       os.path.join(ROOT, "bench", "latency_probe.py"), proxy.hostport(),
                       "--seconds", str(dur),
                       # at most 5 % of the step's own rate, so it never weighs much
                       "--rate", str(min(opts.probe_rate, max(5, rate // 20))),
                       "--method", "REGISTER" if kind in ("register", "refresh") else "OPTIONS",
                       "--json", os.path.join(pdir, "probe.json")],
                      os.path.join(pdir, "out.log"), cwd=pdir)
    rc, sipp_cpu, to = wait_rusage(p, dur * 3 + 40)
    wall = time.monotonic() - t0
    pr = {}
    if probe is not None:
        wait_rusage(probe, dur + 10)
        try:
            with open(os.path.join(sdir, "probe", "probe.json")) as f:
                pr = json.load(f)
        except (OSError, ValueError):
            pr = {}
    if extra_uas is not None:
        _, uas_cpu, _ = wait_rusage(extra_uas, 15)
    cpu1 = bl.tree_cpu_seconds(proxy.pid)
    sw1 = bl.tree_switches(proxy.pid)
    rcpu1 = proxy.redis_cpu()
    cores1 = core_busy()
    r = sipp_results(sdir, scen, p.pid)
    r.update(kind=kind, rate=rate, wall=wall, rc=rc, timed_out=to, t_end=time.monotonic())
    r["probe"] = pr
    if kind == "register":
        users["n"] = max(users["n"], r["ok"] + r["failed"])
    r["proxy_cpu"] = cpu1 - cpu0
    r["redis_cpu"] = rcpu1 - rcpu0
    r["sipp_cpu"] = sipp_cpu + uas_cpu
    r["achieved"] = r["ok"] / r["elapsed"] if r["elapsed"] > 0 else 0.0
    # a probe REGISTER in a "register" step is one more of the same operation; in the
    # other steps its requests (new AORs among refreshes, OPTIONS among calls) are a
    # small extra load, the same for every proxy
    ops = r["ok"] + (pr.get("samples") or 0 if kind == "register" else 0)
    r["cpu_us_per_op"] = r["proxy_cpu"] * 1e6 / ops if r["ok"] else float("nan")
    r["redis_cpu_us_per_op"] = r["redis_cpu"] * 1e6 / r["ok"] if r["ok"] else float("nan")
    # sleeps (each one a wake-up later) and preemptions of the proxy's threads per
    # operation: what the I/O shape costs the kernel beyond the datagrams themselves
    r["switches_per_op"] = (sw1[0] - sw0[0]) / ops if ops else float("nan")
    r["preempted_per_op"] = (sw1[1] - sw0[1]) / ops if ops else float("nan")
    # load on each core not caused by us: other engineers' tests on this machine
    busy = {}
    for c in ("cpu0", "cpu1"):
        b = cores1[c][0] - cores0[c][0]
        t = cores1[c][1] - cores0[c][1]
        busy[c] = b / t if t else 0.0
    r["core0_busy"] = busy["cpu0"]
    r["core1_busy"] = busy["cpu1"]
    # Redis shares the proxy's core: both count toward its saturation
    r["proxy_core_frac"] = (r["proxy_cpu"] + r["redis_cpu"]) / wall
    r["sipp_core_frac"] = r["sipp_cpu"] / wall
    r["alive"] = proxy.alive()
    return r


def wait_quiet(procs, limit=15.0, window=0.5, share=0.05):
    """Wait (at most `limit` seconds) until the proxies and their Redis servers together
    use under `share` of a core over `window`; return the seconds waited. A proxy
    overloaded in the step before keeps working off its backlog (retransmissions, its
    store) for seconds after SIPp stops, on the core the next step measures."""
    t0 = time.monotonic()

    def cpu():
        return sum(bl.tree_cpu_seconds(p.pid) + p.redis_cpu() for p in procs if p.alive())
    while True:
        a = cpu()
        time.sleep(window)
        if (cpu() - a) / window < share or time.monotonic() - t0 > limit:
            return time.monotonic() - t0


def limit_note(r):
    notes = []
    if r["sipp_core_frac"] > 0.85:
        notes.append(f"SIPp-bound (load core {r['core1_busy'] * 100:.0f}% busy, "
                     f"SIPp {r['sipp_core_frac'] * 100:.0f}%)")
    with_redis = " with Redis" if r.get("redis_cpu") else ""
    if r["proxy_core_frac"] > 0.85:
        notes.append(f"proxy core {r['core0_busy'] * 100:.0f}% busy "
                     f"(proxy{with_redis} {r['proxy_core_frac'] * 100:.0f}%)")
    if r["achieved"] < 0.95 * r["rate"]:
        notes.append("achieved < offered")
    if r["failed"]:
        notes.append(f"{r['failed']} failed")
    if not notes:
        notes.append(f"neither saturated (proxy{with_redis} "
                     f"{r['proxy_core_frac'] * 100:.0f}% of core 0, "
                     f"SIPp {r['sipp_core_frac'] * 100:.0f}% of core 1)")
    return "; ".join(notes)


def fmt(v, spec):
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    return format(v, spec)


def ratio(a, b):
    if a is None or b is None or a != a or b != b or b == 0:
        return "–"
    return f"{a / b:.2f}"


LABELS = {"sipwake": "sipwake", "sipwake-redis": "sipwake (Redis store)",
          "kamailio": "kamailio"}


def redis_store_table(steps, results):
    """CPU of the Redis store beside the SQLite store and Kamailio, per step: sipwake
    alone, Redis alone, and both, since the Redis server's work is part of the cost."""
    shown = [st for st in steps if "sipwake-redis" in results[st["id"]]]
    if not shown:
        return ""
    lines = ["| Redis store: step | offered/s | achieved/s | failed | p50/p99 ms | "
             "CPU-µs/op sipwake | CPU-µs/op Redis | CPU-µs/op sipwake + Redis | "
             "SQLite store CPU-µs/op | ratio sipwake + Redis / SQLite | "
             "ratio sipwake + Redis / kam | ratio sipwake alone / kam |",
             "|" + "---|" * 12]
    for st in shown:
        r = results[st["id"]]["sipwake-redis"]
        sq, km = results[st["id"]].get("sipwake"), results[st["id"]].get("kamailio")
        both = r["cpu_us_per_op"] + r["redis_cpu_us_per_op"]
        lines.append(
            f"| {st['label']} | {st['rate']} | {fmt(r['achieved'], '.0f')} | {r['failed']} | "
            f"{fmt(r['p50'], '.0f')} / {fmt(r['p99'], '.0f')} | "
            f"{fmt(r['cpu_us_per_op'], '.1f')} | {fmt(r['redis_cpu_us_per_op'], '.1f')} | "
            f"{fmt(both, '.1f')} | {fmt(sq and sq['cpu_us_per_op'], '.1f')} | "
            f"{ratio(both, sq and sq['cpu_us_per_op'])} | "
            f"{ratio(both, km and km['cpu_us_per_op'])} | "
            f"{ratio(r['cpu_us_per_op'], km and km['cpu_us_per_op'])} |")
    return "\n".join(lines)


def reg_invite(s):
    """REGISTER sent → INVITE received, median / p99 ms: what the woken phone waits."""
    return f"{fmt(s.get('reg_invite_median'), '.3f')} / {fmt(s.get('reg_invite_p99'), '.3f')}"


def xwake_table(xwake):
    """The wake across nodes (wake_load.py --cluster)."""
    if not xwake or not xwake.get("steps"):
        return ""
    tr = xwake.get("cluster", {}).get("node_transport", "udp").upper()
    lines = ["| push-wake on the Redis store, 3 nodes (phones registered on A, calls to B) "
             "| offered/s | achieved wakes/s | failed | 200 OK→INVITE median / p99 / max ms "
             "| INVITE before its 200 | REGISTER sent→INVITE median / p99 ms "
             "| CPU-µs per wake call (3 nodes + Redis) | target median < 2 ms, p99 < 10 ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in xwake["steps"]:
        where = ("woken phone registers on B (same node)" if s["where"] == "same node"
                 else f"woken phone registers on C (across nodes, B→C over {tr})")
        met = ("yes" if s["lat_median"] < 2 and s["lat_p99"] < 10 else "no")
        lines.append(f"| {where}, {s['duration']} s | {s['rate']} | {s['achieved']:.0f} | "
                     f"{s['failed']} | {s['lat_median']:.3f} / {s['lat_p99']:.3f} / "
                     f"{s['lat_max']:.3f} | {s.get('lat_negative', 0)} of {s['lat_samples']} | "
                     f"{reg_invite(s)} | {fmt(s['cpu_us_per_call'], '.1f')} | {met} |")
    return "\n".join(lines)


TARGET = 0.67   # issue 13: sipwake's CPU per operation at most this times Kamailio's


def floor_table(steps, results):
    """The kernel floor beside the proxies, per REGISTER step (the CPU of one
    recvfrom + one sendto per request) and per UDP call step (the CPU of relaying the
    call's 6 datagrams in and 7 out; examples/udp_floor.rs), its share of each
    proxy's CPU, the ratio of what each proxy spends above it, and what sipwake may
    spend above it to meet the target."""
    shown = [st for st in steps if "floor" in results[st["id"]]]
    if not shown:
        return ""
    lines = ["| kernel floor: step | offered/s | floor CPU-µs/op | floor p50/p99 ms | "
             "sipwake CPU-µs/op | kamailio CPU-µs/op | floor share of sipwake | "
             "floor share of kamailio | above the floor, sw/kam | "
             f"sipwake budget above the floor at {TARGET}× kam, µs |",
             "|" + "---|" * 10]
    for st in shown:
        f = results[st["id"]]["floor"]
        sw, km = results[st["id"]].get("sipwake"), results[st["id"]].get("kamailio")
        fl = f["cpu_us_per_op"]
        swc = sw["cpu_us_per_op"] if sw else None
        kmc = km["cpu_us_per_op"] if km else None

        def share(x):
            return f"{fl / x * 100:.0f} %" if x and x == x and fl == fl else "–"
        above = ratio(swc - fl, kmc - fl) if swc is not None and kmc is not None else "–"
        budget = fmt(TARGET * kmc - fl, ".1f") if kmc is not None else "–"
        lines.append(f"| {st['label']} | {st['rate']} | {fmt(fl, '.1f')} | "
                     f"{fmt(f['p50'], '.0f')} / {fmt(f['p99'], '.0f')} | {fmt(swc, '.1f')} | "
                     f"{fmt(kmc, '.1f')} | {share(swc)} | {share(kmc)} | {above} | {budget} |")
    return "\n".join(lines)


def switch_table(steps, results):
    """Context switches of the proxy's threads per operation, per step: voluntary
    (a thread went to sleep, so a wake-up follows: the I/O shape and thread hops) and
    involuntary (a thread preempted, on the pinned core by another of its own)."""
    names = [n for n in ("sipwake", "kamailio", "floor")
             if any(n in results[st["id"]] for st in steps)]
    shown = [st for st in steps
             if any("switches_per_op" in r for r in results[st["id"]].values())]
    if not shown:
        return ""
    lines = ["| context switches per operation: step | offered/s | "
             + " | ".join(f"{n} sleeps + preempted" for n in names) + " |",
             "|" + "---|" * (len(names) + 2)]
    for st in shown:
        cells = []
        for n in names:
            r = results[st["id"]].get(n)
            cells.append(f"{fmt(r['switches_per_op'], '.2f')} + "
                         f"{fmt(r['preempted_per_op'], '.2f')}"
                         if r and "switches_per_op" in r else "–")
        lines.append(f"| {st['label']} | {st['rate']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def probe_table(steps, results):
    """Latency on a fine clock (latency_probe.py, one request at a time beside the
    load): SIPp's response times come in 4 ms steps, these in µs."""
    names = [n for n in ("sipwake", "sipwake-redis", "kamailio", "floor")
             if any(results[st["id"]].get(n, {}).get("probe") for st in steps)]
    if not names:
        return ""
    lines = ["| latency probe (µs, one request at a time beside the load) | offered/s | "
             + " | ".join(f"{LABELS.get(n, 'kernel floor')} p50 / p99 / max (lost)"
                          for n in names) + " | p99 ratio sw/kam |",
             "|" + "---|" * (len(names) + 3)]
    for st in steps:
        cells = []
        for n in names:
            pr = results[st["id"]].get(n, {}).get("probe") or {}
            cells.append(f"{fmt(pr.get('p50_us'), '.0f')} / {fmt(pr.get('p99_us'), '.0f')} / "
                         f"{fmt(pr.get('max_us'), '.0f')} ({pr.get('lost', '–')})"
                         if pr else "–")
        sw = (results[st["id"]].get("sipwake", {}).get("probe") or {}).get("p99_us")
        km = (results[st["id"]].get("kamailio", {}).get("probe") or {}).get("p99_us")
        what = "REGISTER, new AOR" if st["kind"] in ("register", "refresh") else "OPTIONS"
        lines.append(f"| {st['label']} (probe: {what}) | {st['rate']} | " + " | ".join(cells)
                     + f" | {ratio(sw, km)} |")
    return "\n".join(lines)


def build_tables(steps, results, mem, wake, have_kam, ramps, xwake=None):
    names = ["sipwake"] + (["kamailio"] if have_kam else [])
    lines = []
    hdr = ["step", "offered/s"]
    for n in names:
        hdr += [f"{n} achieved/s", f"{n} failed", f"{n} p50/p99 ms", f"{n} CPU-µs/op"]
    if have_kam:
        hdr += ["CPU ratio sw/kam", "p99 ratio sw/kam"]
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "---|" * len(hdr))
    for st in steps:
        row = [st["label"], str(st["rate"])]
        for n in names:
            r = results[st["id"]].get(n)
            if r is None:
                row += ["–"] * 4
                continue
            row += [fmt(r["achieved"], ".0f"), str(r["failed"]),
                    f"{fmt(r['p50'], '.0f')} / {fmt(r['p99'], '.0f')}",
                    fmt(r["cpu_us_per_op"], ".1f")]
        if have_kam:
            a, b = results[st["id"]].get("sipwake"), results[st["id"]].get("kamailio")
            row += [ratio(a and a["cpu_us_per_op"], b and b["cpu_us_per_op"]),
                    ratio(a and a["p99"], b and b["p99"]) if a and b and b["p99"] > 0
                    else ("equal" if a and b and a["p99"] == b["p99"] else "–")]
        lines.append("| " + " | ".join(row) + " |")
    rtable = redis_store_table(steps, results)
    if rtable:
        lines += ["", rtable]
    ftable = floor_table(steps, results)
    if ftable:
        lines += ["", ftable]
    stable = switch_table(steps, results)
    if stable:
        lines += ["", stable]
    ptable = probe_table(steps, results)
    if ptable:
        lines += ["", ptable]
    if ramps:
        rnames = [n for n in LABELS if any(n in rp["best"] for rp in ramps.values())]
        lines += ["", "| highest rate with < 0.1 % failed and ≥ 90 % of offered (ramp ×1.5) | "
                  + " | ".join(LABELS[n] for n in rnames) + " | ratio sw/kam |",
                  "|---|" + "---|" * (len(rnames) + 1)]
        for kind, rp in ramps.items():
            cells = []
            for n in rnames:
                v = rp["best"].get(n)
                cap = " (still passing at the last step)" if n in rp["capped"] else ""
                cells.append(f"{v}/s{cap}" if v else "none")
            sw_b, km_b = rp["best"].get("sipwake"), rp["best"].get("kamailio")
            lines.append(f"| {kind} ({rp['duration']} s steps, up to {rp['last_rate']}/s) | "
                         + " | ".join(cells) + f" | {ratio(sw_b, km_b) if km_b else '–'} |")
    table = "\n".join(lines)

    mlines = ["| memory | sipwake | kamailio | ratio sw/kam |", "|---|---|---|---|"]
    sw, km = mem.get("sipwake"), mem.get("kamailio")

    def per_binding(m):
        if not m or not m["bindings"] or "pss_after" not in m:
            return None
        return (m["pss_after"] - m["pss_before"]) * 1024 / m["bindings"]

    def per_alive(m, phase):
        if not m or not m.get(f"{phase}_alive"):
            return None
        return (m[f"{phase}_pss_busy"] - m[f"{phase}_pss_after"]) * 1024 / m[f"{phase}_alive"]

    rows = [("PSS per binding, bytes (after the REGISTER transactions ended)", per_binding),
            ("PSS per REGISTER transaction waiting out timer J, bytes",
             lambda m: per_alive(m, "reg")),
            ("PSS per ended call waiting out its timers (INVITE+BYE transactions, "
             "both legs, and the dialog), bytes", lambda m: per_alive(m, "call"))]
    for label, f in rows:
        a, b = f(sw), f(km)
        if a is None and b is None:
            continue
        mlines.append(f"| {label} | {fmt(a, '.0f')} | {fmt(b, '.0f')} | {ratio(a, b)} |")
    for n, m in (("sipwake", sw), ("kamailio", km)):
        if m and "pss_after" in m:
            cell = (f"{m['bindings']} / {m['pss_before'] / 1024:.1f} → "
                    f"{m['pss_after'] / 1024:.1f} ({m['rss_after'] / 1024:.1f})")
            mlines.append(f"| {n}: bindings / PSS before → after (RSS sum after), MiB | "
                          + (cell if n == "sipwake" else "") + " | "
                          + (cell if n == "kamailio" else "") + " | |")
    for phase, what in (("reg", "REGISTER transactions"), ("call", "calls")):
        cells = []
        for n, m in (("sipwake", sw), ("kamailio", km)):
            if m and f"{phase}_alive" in m:
                cells.append(f"{m[f'{phase}_alive']:.0f} / {m[f'{phase}_pss_busy'] / 1024:.1f}"
                             f" → {m[f'{phase}_pss_after'] / 1024:.1f}")
            else:
                cells.append("")
        if any(cells):
            mlines.append(f"| {what} in the last {TX_WINDOW:.0f} s / PSS right after → "
                          f"once ended, MiB | {cells[0]} | {cells[1] if len(cells) > 1 else ''} | |")
    rd = mem.get("sipwake-redis")
    if rd and rd.get("redis_aors"):
        n = rd["redis_aors"]
        used = (rd["redis_used_after"] - rd["redis_used_before"]) / n
        own = (rd["pss_after"] - rd["pss_before"]) * 1024 / n
        km_b = per_binding(km)
        mlines.append(f"| Redis store: Redis used_memory (INFO memory) per binding (one AOR "
                      f"each), bytes | {used:.0f} | | |")
        mlines.append(f"| Redis store: sipwake's own PSS per binding, bytes | {fmt(own, '.0f')} "
                      f"| | |")
        tot = used + own if own is not None else None
        mlines.append(f"| Redis store: Redis used_memory + sipwake PSS per binding, bytes | "
                      f"{fmt(tot, '.0f')} | {fmt(km_b, '.0f')} | {ratio(tot, km_b)} |")
        mlines.append(f"| Redis store: bindings / Redis used_memory before → after (Redis RSS "
                      f"after), MiB | {n} / {rd['redis_used_before'] / 2**20:.1f} → "
                      f"{rd['redis_used_after'] / 2**20:.1f} "
                      f"({rd['redis_rss_after'] / 1024:.1f}) | | |")
    if wake and wake.get("parked"):
        pk = wake["parked"]
        mlines.append(f"| PSS growth per 10k parked calls, MiB ({pk['parked']} parked) | "
                      f"{pk['bytes_per_call'] * 1e4 / 2**20:.1f} "
                      f"({pk['bytes_per_call']:.0f} B/call) | n/a (no push) | |")
    mlines += ["", memory_targets(per_binding(sw), per_alive(sw, "reg"), per_alive(sw, "call"),
                                  wake and wake.get("parked"))]
    mtable = "\n".join(mlines)

    wlines = []
    if wake:
        wlines = ["| push-wake (sipwake only) | offered/s | achieved wakes/s | failed | "
                  "200 OK→INVITE median / p99 / max ms | REGISTER sent→INVITE median / p99 ms | "
                  "CPU-µs per wake call | load core busy |",
                  "|---|---|---|---|---|---|---|---|"]
        for s in wake.get("steps", []):
            wlines.append(f"| UDP, {s['duration']} s | {s['rate']} | {s['achieved']:.0f} | "
                          f"{s['failed']} | {s['lat_median']:.3f} / {s['lat_p99']:.3f} / "
                          f"{s['lat_max']:.3f} | {reg_invite(s)} | "
                          f"{fmt(s['cpu_us_per_call'], '.1f')} | {s['load_core_busy'] * 100:.0f}% |")
    xt = xwake_table(xwake)
    if xt:
        wlines += ["", xt] if wlines else [xt]
    wtable = "\n".join(wlines)
    return table, mtable, wtable


# issue 13's memory targets, bytes: per binding and per parked call as the issue sets
# them; per transaction the bound this project states for itself (an answered REGISTER
# keeps its response and a table entry for timer J; an ended call its INVITE and BYE
# transactions on both legs and the dialog until timers K/J/H/I run out)
MEM_TARGETS = (("binding (PSS, once its REGISTER transaction ended)", 1024),
               ("parked call (PSS growth per call parked for a phone that never wakes)", 8192),
               ("REGISTER transaction waiting out timer J", 1024),
               ("ended call waiting out its timers", 8192))


def memory_targets(binding, reg_tx, call, parked):
    """The memory targets table: each figure of this run beside its target."""
    lines = ["| memory target, sipwake | this run, bytes | target, bytes | met? |",
             "|---|---|---|---|"]
    got = (binding, parked and parked.get("bytes_per_call"), reg_tx, call)
    for (what, target), v in zip(MEM_TARGETS, got):
        ok = "–" if v is None or v != v else ("yes" if v < target else "no")
        lines.append(f"| {what} | {fmt(v, '.0f')} | < {target:,} | {ok} |")
    return "\n".join(lines)


def versions(binary):
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "Cargo.toml",
                            "Cargo.lock"], capture_output=True, text=True).stdout.strip()
    kv = "not installed"
    if shutil.which("kamailio"):
        kv = subprocess.run(["kamailio", "-v"], capture_output=True,
                            text=True).stdout.splitlines()[0].replace("version: ", "").strip()
    sv = subprocess.run(["sipp", "-v"], capture_output=True, text=True).stdout.strip()
    sv = " ".join(sv.split()[:2]) if sv else "unknown"
    rv = "not installed"
    if shutil.which("redis-server"):
        rv = subprocess.run(["redis-server", "--version"], capture_output=True,
                            text=True).stdout.strip()
        rv = " ".join(w for w in rv.split()[:3] if not w.startswith("sha=")) or "unknown"
    return {"sipwake": rev + (" + uncommitted changes in src/" if dirty else ""),
            "kamailio": kv, "sipp": sv, "redis": rv}


KINDS = ("register", "refresh", "call", "tcp", "wake", "xwake")
STORES = ("sqlite", "redis")
# wake calls/s across nodes: three nodes and Redis share the proxy core, and a call
# woken across nodes costs them about twice a local one
XWAKE_RATES = "250,500"
TX_WINDOW = 32.0   # timer J (64 * T1): how long an answered REGISTER transaction stays


def make_step(kind, rate, dur, ramp=False):
    label = {"register": "REGISTER, new AOR, UDP", "refresh": "REGISTER, refresh, UDP",
             "call": "call, UDP", "tcp": "call, caller leg TCP"}[kind]
    sid = f"{'ramp-' if ramp else ''}{kind}{rate}"
    st = dict(id=sid, kind="call" if kind == "tcp" else kind, rate=rate, duration=dur,
              transport="tcp" if kind == "tcp" else "udp", group=kind,
              label=f"{'ramp: ' if ramp else ''}{label}, {dur} s")
    if kind in ("register", "refresh"):
        st["users"] = f"{'ramp' if ramp else 'reg'}{rate}"
    return st


def passed(r):
    """A step passed: under 0.1 % failed and at least 90 % of the offered rate (the
    achieved rate of a short step counts the last call's own length)."""
    total = r["ok"] + r["failed"]
    return (not r["timed_out"] and total > 0 and r["failed"] * 1000 < total
            and r["achieved"] >= 0.9 * r["rate"])


def tx_alive(results_of, t_meas):
    """REGISTERs answered within TX_WINDOW before t_meas, from each step's end time and
    rate (answers spread evenly over the step)."""
    n = 0.0
    for r in results_of:
        if r["elapsed"] <= 0:
            continue
        t1, t0 = r["t_end"], r["t_end"] - r["elapsed"]
        lo = max(t0, t_meas - TX_WINDOW)
        if t1 > lo:
            n += r["ok"] * (t1 - lo) / (t1 - t0)
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="~40 s version for CI")
    ap.add_argument("--no-kamailio", action="store_true")
    ap.add_argument("--stores", default=",".join(STORES),
                    help="sipwake's stores to measure, comma-separated: sqlite, redis "
                    "(a redis-server started here; also what xwake needs)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--binary", default=None,
                    help="sipwake binary to measure (default: target/release/sipwake, built "
                    "first unless --no-build)")
    ap.add_argument("--only", default=",".join(KINDS),
                    help=f"comma-separated subset of {','.join(KINDS)} (a refresh step "
                    "registers its users first, unmeasured, when register is left out)")
    ap.add_argument("--duration", type=int, default=None,
                    help="seconds per fixed step (default 15; smoke 3)")
    ap.add_argument("--no-ramp", action="store_true", help="skip the highest-rate ramp")
    ap.add_argument("--probe-rate", type=int, default=100,
                    help="most requests/s of the fine-clock latency probe beside SIPp in "
                    "every step, at most 5 %% of the step's rate (bench/latency_probe.py; "
                    "0: none)")
    ap.add_argument("--floor-batch", action="store_true",
                    help="the kernel floor takes and answers datagrams in batches "
                    "(recvmmsg/sendmmsg) instead of one recvfrom + one sendto each")
    ap.add_argument("--no-floor", action="store_true",
                    help="skip the kernel floor (examples/udp_floor.rs) in the REGISTER and UDP call steps")
    ap.add_argument("--ramp-duration", type=int, default=None,
                    help="seconds per ramp step (default 5; smoke 2)")
    ap.add_argument("--ramp-steps", type=int, default=None,
                    help="most ramp steps per kind (default 5; smoke 1)")
    ap.add_argument("--settle", type=int, default=None,
                    help="seconds to wait for transactions to end before memory is "
                    "read (default 40; smoke 2)")
    ap.add_argument("--out", default=None,
                    help="markdown file to write (full run: docs/BENCHMARKS.md; smoke "
                    "or subset: none)")
    ap.add_argument("--json", default=None, help="also write the raw figures here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a sipwake setting for this run, e.g. STORE__REFRESH_WRITE_BEHIND_MS=0 "
                    "(repeatable; never writes docs/BENCHMARKS.md)")
    args = ap.parse_args()
    only = [k.strip() for k in args.only.split(",") if k.strip()]
    bad_kinds = [k for k in only if k not in KINDS]
    if bad_kinds:
        log(f"--only: unknown {bad_kinds}; known: {', '.join(KINDS)}")
        return 2
    stores = [k.strip() for k in args.stores.split(",") if k.strip()]
    if not stores or any(k not in STORES for k in stores):
        log(f"--stores: expected a comma-separated subset of {', '.join(STORES)}")
        return 2
    if "xwake" in only and "redis" not in stores:
        log("--stores without redis: the wake across nodes (xwake) is skipped")
        only.remove("xwake")
    if "redis" in stores and not shutil.which("redis-server"):
        log("redis-server not found (Debian package redis-server); or --stores sqlite")
        return 2
    full = (not args.smoke and set(only) == set(KINDS) and args.duration is None
            and set(stores) == set(STORES)
            and not args.set and not args.binary
            and not args.no_ramp and args.ramp_duration is None and args.ramp_steps is None)
    out = args.out if args.out is not None else (
        os.path.join(ROOT, "docs", "BENCHMARKS.md") if full else None)
    t_start = time.monotonic()
    for tool in ("sipp", "taskset"):
        if not shutil.which(tool):
            log(f"{tool} not found")
            return 2
    if os.cpu_count() < 2:
        log("needs 2 cores (proxy on core 0, load on core 1)")
        return 2
    have_kam = not args.no_kamailio and shutil.which("kamailio") is not None
    if not have_kam and not args.no_kamailio:
        log("kamailio not installed: sipwake only")

    # absolute: the proxies run in the work directory
    binary = os.path.abspath(args.binary or os.path.join(ROOT, "target", "release", "sipwake"))
    if not args.no_build and not args.binary:
        log("cargo build --release")
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True,
                       timeout=900)
    floor_bin = None
    if not args.no_floor and ("register" in only or "refresh" in only or "call" in only):
        floor_bin = os.path.join(ROOT, "target", "release", "examples", "udp_floor")
        if not args.no_build:
            subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "udp_floor"],
                           cwd=ROOT, check=True, timeout=900)
        if not os.path.exists(floor_bin):
            log(f"{floor_bin} missing (cargo build --release --example udp_floor); "
                "no kernel floor in this run")
            floor_bin = None

    if args.smoke:
        reg_rates, call_rates, dur = [200], [100], 3
        ramp_dur, ramp_steps, settle = 2, 1, 2
        wake_args = ["--rates", "50", "--duration", "3", "--parked", "300"]
        xwake_args = ["--rates", "50", "--duration", "2"]
    else:
        reg_rates, call_rates, dur = [2000, 8000], [500, 2000], 15
        ramp_dur, ramp_steps, settle = 5, 5, 40
        wake_args = ["--rates", "500,1000", "--duration", "15", "--parked", "10000"]
        xwake_args = ["--rates", XWAKE_RATES, "--duration", "15"]
    dur = args.duration or dur
    ramp_dur = args.ramp_duration or ramp_dur
    ramp_steps = args.ramp_steps if args.ramp_steps is not None else ramp_steps
    settle = args.settle if args.settle is not None else settle
    if args.duration and not args.smoke:
        wake_args = ["--rates", "500", "--duration", str(dur), "--parked", "2000"]
        xwake_args = ["--rates", XWAKE_RATES.split(",")[0], "--duration", str(dur)]

    steps = []
    for r in reg_rates:
        if "register" in only or "refresh" in only:
            st = make_step("register", r, dur)
            st["measured"] = "register" in only
            steps.append(st)
        if "refresh" in only:
            steps.append(make_step("refresh", r, dur))
    for kind in ("call", "tcp"):
        if kind in only:
            steps += [make_step(kind, r, dur) for r in call_rates]

    work = tempfile.mkdtemp(prefix="sipwake-bench-")
    results = {}
    mem = {}
    wake = xwake = None
    ramps = {}
    ramp_shown = []
    args.users = {}
    try:
        proxies = [start_sipwake(work, binary, args.set, store=st) for st in stores]
        if have_kam:
            proxies.append(start_kamailio(work))
        floor = start_floor(work, floor_bin, args.floor_batch) if floor_bin else None
        # every process on the proxy core, for the wait before each step
        everyone = proxies + ([floor] if floor else [])
        log("started: " + ", ".join(f"{p.name} pid {p.pid} on {p.hostport()}"
                                    + (f" (redis-server pid {p.redis.pid} on port "
                                       f"{p.redis_port})" if p.redis else "")
                                    for p in proxies + ([floor] if floor else [])))
        time.sleep(1)
        for p in proxies:
            rss, pss = bl.tree_memory_kib(p.pid)
            mem[p.name] = dict(pss_before=pss, rss_before=rss, bindings=0)
            if p.redis:
                mem[p.name]["redis_used_before"] = int(
                    bl.redis_info(p.redis_port)["used_memory"])
                mem[p.name]["redis_keys_before"] = bl.redis_command(p.redis_port, "DBSIZE")

        def run_pair(i, st, among=None):
            results.setdefault(st["id"], {})
            # the floor answers REGISTERs and relays UDP calls (not when batched),
            # and has no ramp of its own
            with_floor = (floor is not None and among is None
                          and (st["kind"] in ("register", "refresh")
                               or (st["transport"] == "udp" and not args.floor_batch)))
            among = [p for p in proxies if among is None or p.name in among]
            if with_floor:
                among.append(floor)
            order = among if i % 2 == 0 else list(reversed(among))
            for p in order:
                if not p.alive():
                    raise RuntimeError(f"{p.name} died; see {p.logfile}")
                waited = wait_quiet(everyone)
                if waited > 1.0:
                    log(f"{st['id']:>14} {p.name:8}: waited {waited:.1f} s for the "
                        "proxies to go quiet (the step before still being worked off)")
                r = run_step(p, st, work, args)
                r["waited_quiet_s"] = waited
                results[st["id"]][p.name] = r
                log(f"{st['id']:>14} {p.name:8}: {r['achieved']:7.0f}/s ok {r['ok']} "
                    f"failed {r['failed']} p50/p99 {r['p50']}/{r['p99']} ms "
                    f"probe p50/p99 {r['probe'].get('p50_us')}/{r['probe'].get('p99_us')} us "
                    f"cpu {r['cpu_us_per_op']:.1f} us/op "
                    f"switches {r['switches_per_op']:.2f}+{r['preempted_per_op']:.2f}/op (proxy {r['proxy_cpu']:.2f} s, "
                    f"sipp {r['sipp_cpu']:.2f} s, wall {r['wall']:.1f} s, "
                    f"core0 {r['core0_busy'] * 100:.0f}% core1 {r['core1_busy'] * 100:.0f}%)")

        def read_memory(phase, step_ids):
            """PSS right after a phase, then once its transactions have ended."""
            t_meas = time.monotonic()
            now = {p.name: bl.tree_memory_kib(p.pid) for p in proxies}
            time.sleep(settle)
            for p in proxies:
                rss, pss = bl.tree_memory_kib(p.pid)
                rs = [results[s][p.name] for s in step_ids if p.name in results.get(s, {})]
                m = mem[p.name]
                m[f"{phase}_pss_busy"] = now[p.name][1]
                m[f"{phase}_pss_after"] = pss
                m[f"{phase}_rss_after"] = rss
                m[f"{phase}_alive"] = tx_alive(rs, t_meas)
                if phase == "reg":
                    m.update(pss_after=pss, rss_after=rss)
                    if p.redis:
                        m["redis_used_after"] = int(bl.redis_info(p.redis_port)["used_memory"])
                        # one key per AOR, each with one binding here: counted in Redis,
                        # since a REGISTER SIPp gave up on may still have been stored
                        m["redis_aors"] = (bl.redis_command(p.redis_port, "DBSIZE")
                                           - m["redis_keys_before"])
                        m["redis_rss_after"] = bl.tree_memory_kib(p.redis.pid)[0]
                log(f"memory {p.name} after {phase}: {m}")

        for i, st in enumerate(steps):
            run_pair(i, st)
            if st["kind"] == "register":
                for p in proxies:
                    mem[p.name]["bindings"] += results[st["id"]][p.name]["ok"]
            last_of_phase = (i + 1 == len(steps)
                             or (steps[i + 1]["kind"] == "call") != (st["kind"] == "call"))
            if last_of_phase:
                ids = [s["id"] for s in steps if (s["kind"] == "call") == (st["kind"] == "call")]
                read_memory("call" if st["kind"] == "call" else "reg", ids)

        if not args.no_ramp:
            for kind in ("register", "refresh", "call", "tcp"):
                if kind not in only:
                    continue
                fixed = [s for s in steps if s["group"] == kind and s.get("measured", True)]
                # the smoke run keeps CI short: the Redis store skips its ramp there
                ramped = [p for p in proxies if not (args.smoke and p.name == "sipwake-redis")]
                best = {p.name: max([s["rate"] for s in fixed
                                     if passed(results[s["id"]][p.name])], default=0)
                        for p in ramped}
                rate = max(s["rate"] for s in fixed)
                # only a proxy that passed the highest fixed rate ramps on: one that
                # failed it already has its figure, and a backlog left from that step
                # (Kamailio's calls at 2,000/s) would only fail the next one's set-up
                live = {p.name for p in ramped if best[p.name] == rate}
                for k in range(ramp_steps if live else 0):
                    rate = int(rate * 1.5)
                    st = make_step(kind, rate, ramp_dur, ramp=True)
                    if kind == "refresh":
                        # fresh users to refresh, registered (unmeasured) just before
                        prime = make_step("register", rate, ramp_dur, ramp=True)
                        prime["id"] = st["users"] = prime["users"] = f"prime{rate}"
                        run_pair(k, prime, live)
                        # a proxy that could not register them all cannot refresh them
                        # all either: its ramp ends at the rate before
                        for name in sorted(live):
                            got = args.users.get((name, prime["users"]), {}).get("n", 0)
                            if got < rate * ramp_dur:
                                log(f"ramp refresh: {name} registered only {got} of "
                                    f"{rate * ramp_dur} users at {rate}/s; its ramp ends")
                                live.discard(name)
                        if not live:
                            break
                    run_pair(k, st, live)
                    ramp_shown.append(st)
                    for name, r in results[st["id"]].items():
                        if passed(r):
                            best[name] = max(best[name], rate)
                        else:
                            live.discard(name)
                    if not live:
                        break
                ramps[kind] = dict(best=best, last_rate=rate, duration=ramp_dur,
                                   capped=sorted(live))
                log(f"ramp {kind}: {ramps[kind]}")

        for p in proxies:
            if not p.alive():
                raise RuntimeError(f"{p.name} died; see {p.logfile}")
        # the proxies are done; the wake step starts its own sipwake (memory store
        # off: durable like the others), so stop them to free the cores
        kill_all()
        if "wake" in only:
            wjson = os.path.join(work, "wake.json")
            cmd = [sys.executable, os.path.join(ROOT, "bench", "wake_load.py"), "--binary",
                   binary, "--json", wjson, "--workdir", os.path.join(work, "wake")] + wake_args
            log("push-wake: " + " ".join(cmd[1:]))
            wr = subprocess.run(cmd, timeout=400)
            if os.path.exists(wjson):
                with open(wjson) as f:
                    wake = json.load(f)
            if wr.returncode != 0:
                log(f"wake_load.py exited with {wr.returncode}")
        if "xwake" in only:
            xjson = os.path.join(work, "xwake.json")
            cmd = [sys.executable, os.path.join(ROOT, "bench", "wake_load.py"), "--binary",
                   binary, "--cluster", "--parked", "0", "--json", xjson,
                   "--workdir", os.path.join(work, "xwake")] + xwake_args
            log("push-wake across nodes: " + " ".join(cmd[1:]))
            wr = subprocess.run(cmd, timeout=400)
            if os.path.exists(xjson):
                with open(xjson) as f:
                    xwake = json.load(f)
            if wr.returncode != 0:
                log(f"wake_load.py --cluster exited with {wr.returncode}")
    finally:
        kill_all()

    shown = [s for s in steps if s.get("measured", True)] + ramp_shown
    table, mtable, wtable = build_tables(shown, results, mem, wake, have_kam, ramps, xwake)
    ver = versions(binary)
    notes = []
    for st in shown:
        for n, r in results[st["id"]].items():
            notes.append(f"- {st['label']} at {st['rate']}/s, {n}: {limit_note(r)}; "
                         f"{r['retrans']} SIPp retransmissions; cores busy in total "
                         f"(ours included, /proc/stat): core 0 {r['core0_busy'] * 100:.0f}%, "
                         f"core 1 {r['core1_busy'] * 100:.0f}%.")
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    machine = (f"{os.cpu_count()} cores, {bl.cpu_model()}, Linux {platform.release()}")
    elapsed = time.monotonic() - t_start
    report = "\n".join([
        f"Run {when} ({'smoke' if args.smoke else 'full' if full else 'subset: ' + ','.join(only)}, "
        f"{elapsed:.0f} s) on {machine}.",
        f"sipwake {ver['sipwake']} (release build, "
        f"{' and '.join(s.replace('sqlite', 'SQLite').replace('redis', 'Redis') for s in stores)} "
        f"store{'s' if len(stores) > 1 else ''}, log warn"
        f"{''.join('; ' + kv for kv in args.set)}); "
        f"{ver['kamailio']} (-x fm -X fm -m 256 -M 32 -n 2, in-memory usrloc); {ver['sipp']}"
        + (f"; {ver['redis']} (appendonly yes, appendfsync everysec, "
              "hash-max-listpack-value 2048)" if "redis" in stores
           else "") + ".",
        "Proxy pinned to core 0 (with its Redis), SIPp (and the phone fleet) to core 1."
        + ((" The kernel floor (examples/udp_floor.rs: "
            + ("one recvmmsg and one sendmmsg per batch of waiting REGISTERs"
               if args.floor_batch else "one recvfrom and one sendto per REGISTER")
            + ", a fixed 200 OK, nothing stored) runs on core 0 beside them in the "
            "REGISTER steps" + ("" if args.floor_batch else
                                ", and relays the UDP calls (6 datagrams in, 7 out per "
                                "call, nothing parsed)") + ".") if floor_bin else ""),
        "", table, "", mtable, "", wtable, "", "Limits per step:", "", *notes])
    print(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(results=results, memory=mem, wake=wake, xwake=xwake, ramps=ramps,
                       versions=ver,
                           machine=machine, date=when), f, indent=1)
    if out:
        write_markdown(out, report)
        log(f"wrote {out}")
    if args.keep:
        log(f"work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    bad = [(st["id"], n) for st in steps for n, r in results[st["id"]].items()
           if r["ok"] == 0 or r["timed_out"]]
    missing = [k for k, res in (("wake", wake), ("xwake", xwake))
               if k in only and res is None]
    if bad or missing:
        log(f"steps without a result: {bad or missing}")
        return 1
    failed = [k for k, res in (("wake", wake), ("xwake", xwake)) if res and not res.get("ok")]
    if failed:
        log(f"push-wake calls failed at the first rate: {failed}")
        return 1
    return 0


def write_markdown(path, report):
    """Replace the generated section of docs/BENCHMARKS.md, keeping the prose."""
    begin, end = "<!-- bench/run.py: begin -->", "<!-- bench/run.py: end -->"
    body = f"{begin}\n{report}\n{end}"
    text = ""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    if begin in text and end in text:
        text = text[:text.index(begin)] + body + text[text.index(end) + len(end):]
    else:
        text = "# Benchmarks\n\n" + body + "\n" + text
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    def on_signal(sig, frame):
        kill_all()
        sys.exit(130)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        sys.exit(main())
    finally:
        kill_all()
