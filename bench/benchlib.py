"""Shared helpers for the benchmark scripts: CPU and memory of a process tree read
from /proc, free ports, pinning, and the redis-server the Redis store is measured
with. Standard library only; Linux only."""

import os
import socket
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    # the command name may contain spaces and parentheses: split after the last ')'
    return s[s.rindex(")") + 2:].split()


def descendants(root):
    """root and every process below it (Kamailio forks its workers)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ppid = int(_stat_fields(d)[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_cpu_seconds(root):
    """utime+stime of root and all its descendants (all their threads: the process
    line of /proc/PID/stat sums its threads), plus the CPU of children root has
    already reaped (cutime+cstime)."""
    total = 0
    for i, p in enumerate(descendants(root)):
        try:
            f = _stat_fields(p)
        except OSError:
            continue
        # fields after the name: state=0 ppid=1 ... utime=11 stime=12 cutime=13 cstime=14
        total += int(f[11]) + int(f[12])
        if i == 0:
            total += int(f[13]) + int(f[14])
    return total / CLK_TCK


def _sum_fields(paths, names):
    """Sum, over the /proc files at paths, of the first number after each of the
    `name:` fields in names (files gone meanwhile are skipped)."""
    sums = [0] * len(names)
    for path in paths:
        try:
            with open(path) as f:
                for line in f:
                    for i, name in enumerate(names):
                        if line.startswith(name):
                            sums[i] += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return sums


def tree_switches(root):
    """(voluntary, involuntary) context switches of every thread of root and its
    descendants, from /proc/PID/task/TID/status. A voluntary switch is a thread going
    to sleep (waiting for the next datagram, or for another thread), so one sleep and
    one wake-up that the kernel charges whatever the proxy's own code costs; an
    involuntary one is a thread preempted, on a shared core by another of its own."""
    paths = []
    for p in descendants(root):
        try:
            paths += [f"/proc/{p}/task/{t}/status" for t in os.listdir(f"/proc/{p}/task")]
        except OSError:
            continue
    vol, invol = _sum_fields(paths, ("voluntary_ctxt_switches:",
                                     "nonvoluntary_ctxt_switches:"))
    return vol, invol


def tree_memory_kib(root):
    """(RSS sum, PSS sum) in KiB over root and its descendants. PSS splits pages
    shared between processes (Kamailio's shared memory segment) among them, so the
    PSS sum counts each page once; the RSS sum counts shared pages once per process."""
    rss, pss = _sum_fields([f"/proc/{p}/smaps_rollup" for p in descendants(root)],
                           ("Rss:", "Pss:"))
    return rss, pss


def free_port():
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(100):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise RuntimeError("no free port")


def wait_sip_udp(port, timeout=15.0, proc=None, host="127.0.0.1"):
    """Wait until something answers an OPTIONS on host:port (UDP)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((host, port))
    s.settimeout(0.2)
    me, lp = s.getsockname()
    deadline = time.monotonic() + timeout
    n = 0
    try:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process exited with {proc.returncode} while starting")
            n += 1
            msg = (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {me}:{lp};branch=z9hG4bKprobe{n};rport\r\n"
                   f"Max-Forwards: 70\r\nFrom: <sip:probe@{me}>;tag=p{n}\r\n"
                   f"To: <sip:{host}:{port}>\r\nCall-ID: probe-{n}-{lp}\r\n"
                   f"CSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n")
            s.send(msg.encode())
            try:
                if s.recv(65535).startswith(b"SIP/2.0"):
                    return
            except (socket.timeout, ConnectionRefusedError):
                time.sleep(0.05)
        raise RuntimeError(f"nothing answers SIP on udp {host}:{port}")
    finally:
        s.close()


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def pct(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, int(round(q * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[i]


def redis_argv(workdir, port, core=None):
    """argv of a redis-server for the benchmarks: loopback only, its files in
    workdir, the append-only file on with one fsync a second (what the README
    recommends for the Redis store, with its memory setting), no RDB snapshots;
    pinned to `core` if given."""
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
            "--dir", workdir, "--appendonly", "yes", "--appendfsync", "everysec",
            "--save", "", "--daemonize", "no", "--maxmemory-policy", "noeviction",
            # an AOR hash of a few bindings (JSON of 0.7-1.2 KB each) stays one
            # compact listpack instead of a hash table: about 250 bytes less per AOR
            "--hash-max-listpack-value", "2048"]
    return (["taskset", "-c", str(core)] if core is not None else []) + argv


def _resp_read(f):
    """One RESP reply from the file f (simple strings, errors, integers, bulk
    strings, arrays)."""
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError("redis: " + rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise RuntimeError(f"redis: unexpected reply {line[:40]!r}")


def redis_command(port, *args, timeout=5.0):
    """Sends one command to the Redis on 127.0.0.1:port and returns its reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        parts = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            parts.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
        s.sendall(b"".join(parts))
        with s.makefile("rb") as f:
            return _resp_read(f)


def redis_info(port, section="memory"):
    """INFO section as a dict of strings."""
    text = redis_command(port, "INFO", section).decode()
    out = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def wait_redis(port, timeout=15.0, proc=None):
    """Wait until the Redis on 127.0.0.1:port answers PING."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode} while starting")
        try:
            if redis_command(port, "PING", timeout=0.5) == "PONG":
                return
        except (OSError, ConnectionError, RuntimeError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"redis-server does not answer PING on 127.0.0.1:{port}")
