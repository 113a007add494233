#!/usr/bin/env python3
"""Builds the seed corpora of the fuzz targets into fuzz/corpus/<target>/.

Seeds: the RFC 4475 torture messages (../shared/conformance/rfc4475, byte for byte)
and every message the SIPp scenarios (sipp-scenarios/*.xml) send, with the SIPp
keywords ([call_id], [local_ip], [last_Via:] ...) replaced by plausible values and
[len] computed, over UDP and TCP.

    python3 fuzz/seed.py            # from the repository root or from fuzz/

parse:   one message per file.
handler: a flags byte + message per chunk, chunks separated by b"\\0--\\0" (see
         fuzz_targets/handler.rs); single messages under several flows, and each
         scenario's messages chained, so that REGISTER-then-INVITE sequences exist.
uri:     the URIs and Contact values of those messages, and push token examples.
"""
import hashlib
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RFC4475 = os.path.join(ROOT, "..", "shared", "conformance", "rfc4475")
SIPP = os.path.join(ROOT, "sipp-scenarios")
SEP = b"\0--\0"

BODY_SDP = None  # the scenarios carry their own bodies


def values(transport, n, last_method):
    local_port = "5061"
    ip = "127.0.0.1"
    return {
        "call_id": f"{n}-4242@{ip}",
        "call_number": str(n),
        "pid": "4242",
        "branch": f"z9hG4bK-4242-{n}-0",
        "local_ip": ip,
        "local_ip_type": "4",
        "local_port": local_port,
        "remote_ip": ip,
        "remote_port": "5060",
        "media_ip": ip,
        "media_ip_type": "4",
        "media_port": "6000",
        "service": "alice",
        "transport": transport,
        "next_url": f"sip:alice@{ip}:5071;transport={transport.lower()}",
        "routes": f"Route: <sip:{ip}:5060;transport={transport.lower()};lr>",
        "last_Via:": f"Via: SIP/2.0/{transport} {ip}:5060;branch=z9hG4bKsw1a2b3c;rport=5060;received={ip}",
        "last_Record-Route:": f"Record-Route: <sip:{ip}:5060;transport={transport.lower()};lr>",
        "last_From:": f"From: sipp <sip:sipp@{ip}:5071>;tag=4242SIPpTag00{n}",
        "last_To:": "To: <sip:alice@127.0.0.1:5060>",
        "last_Call-ID:": f"Call-ID: {n}-4242@{ip}",
        "last_CSeq:": f"CSeq: 1 {last_method}",
    }


def render(cdata, vals):
    lines = cdata.replace("\r\n", "\n").split("\n")
    lines = [l.strip() for l in lines]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    text = "\n".join(lines)

    def sub(m):
        key = m.group(1)
        return vals.get(key, m.group(0))

    text = re.sub(r"\[([A-Za-z_0-9:+-]+)\]", sub, text)
    if "\n\n" in text:
        head, body = text.split("\n\n", 1)
        body = body.replace("\n", "\r\n") + "\r\n"
    else:
        head, body = text, ""
    head = head.replace("[len]", str(len(body.encode())))
    return (head.replace("\n", "\r\n") + "\r\n\r\n" + body).encode()


def sipp_messages():
    """(scenario name, [message bytes]) per scenario and transport."""
    out = []
    for name in sorted(os.listdir(SIPP)):
        if not name.endswith(".xml"):
            continue
        xml = open(os.path.join(SIPP, name), encoding="iso-8859-1").read()
        for transport in ("UDP", "TCP"):
            msgs = []
            last_method = "INVITE"
            # walk <recv request=...> and <send> in order, so [last_CSeq:] fits
            for m in re.finditer(r'<recv[^>]*request="([A-Z]+)"|<send[^>]*>\s*<!\[CDATA\[(.*?)\]\]>', xml, re.S):
                if m.group(1):
                    last_method = m.group(1)
                    continue
                msgs.append(render(m.group(2), values(transport, 1, last_method)))
            out.append((f"{name}-{transport}", msgs))
    return out


def rfc4475_messages():
    out = []
    for d in (RFC4475, os.path.join(RFC4475, "variants")):
        for name in sorted(os.listdir(d)):
            if name.endswith(".dat"):
                out.append((name, open(os.path.join(d, name), "rb").read()))
    return out


def write(target, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    # libFuzzer names corpus files by their SHA-1; do the same so reruns dedupe
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def uri_seeds(msg):
    text = msg.decode("utf-8", "replace")
    seeds = []
    first = text.split("\r\n", 1)[0].split(" ")
    if len(first) == 3 and not first[0].startswith("SIP/"):
        seeds.append(first[1])
    for line in text.split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() in ("contact", "m", "from", "f", "to", "t", "route", "record-route"):
            seeds.append(value.strip())
    return seeds


PUSH_URIS = [
    "sip:alice@192.0.2.1:5060;transport=tcp;pn-provider=apns;pn-prid=" + "ab" * 32
    + ";pn-param=ABCDE12345.com.example.app.voip",
    "sip:alice@h;pn-provider=apns.dev;pn-prid=" + "cd" * 32 + ":voip&" + "ef" * 32
    + ":remote;pn-param=ABCDE12345.com.example.app.voip&remote",
    "sip:bob@h;pn-provider=fcm;pn-prid=fcm-token-1;pn-param=project-1",
    "sip:bob@h;pn-type=firebase;pn-tok=tok123;app-id=com.example",
    "sip:carol@h;xToken=" + "01" * 32,
    "<sip:dave@h;ob>;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-000000000001>\";reg-id=1\nX-Token-value-" + "9" * 20,
    "sip:%61lice@[::1]:5060;maddr=127.0.0.1;lr;transport=udp?Subject=x",
    "tel:+15551234567;phone-context=example.com",
]


def main():
    n = {"parse": 0, "handler": 0, "uri": 0}
    singles = [m for _, m in rfc4475_messages()]
    scenarios = sipp_messages()
    for _, msgs in scenarios:
        singles.extend(msgs)
    for m in singles:
        write("parse", m)
        n["parse"] += 1
        # local proxy from a trusted and an untrusted address (UDP), relay proxy, TCP
        # (flags & 3: 0 local, 1 relay, 2 relay with contact rewriting, 3 local + auth)
        for flags in (0x00, 0x04, 0x01, 0x12, 0x03):
            write("handler", bytes([flags]) + m)
            n["handler"] += 1
        for u in uri_seeds(m):
            write("uri", u.encode())
            n["uri"] += 1
    for name, msgs in scenarios:
        tcp = name.endswith("TCP")
        for proxy in (0, 1):
            flags = proxy | (0x10 if tcp else 0)
            write("handler", SEP.join(bytes([flags]) + m for m in msgs))
            n["handler"] += 1
    # a phone registers with a push token, then a call for it arrives (parks, pushes)
    reg = [m for name, msgs in scenarios if name == "register_push.xml-UDP" for m in msgs]
    inv = [m for name, msgs in scenarios if name == "uac.xml-UDP" for m in msgs]
    if reg and inv:
        write("handler", bytes([0x04]) + reg[0] + SEP + bytes([0]) + inv[0])
    # digest answers for the proxy with auth (flags 3): the nonce is stale or unknown,
    # but the Authorization header gets parsed and checked
    for algo, resp in (("MD5", "0" * 32), ("SHA-256", "0" * 64)):
        auth = (f'Authorization: Digest username="alice", realm="example.com", nonce="bm9uY2U", '
                f'uri="sip:example.com", response="{resp}", algorithm={algo}, qop=auth, '
                f'nc=00000001, cnonce="c1", opaque=""\r\n')
        for m in (r for name, msgs in scenarios if name.startswith("register") for r in msgs):
            m = m.replace(b"Content-Length:", auth.encode() + b"Content-Length:", 1)
            m = m.replace(b"127.0.0.1>", b"example.com>").replace(b"REGISTER sip:127.0.0.1", b"REGISTER sip:example.com")
            write("handler", bytes([0x03]) + m)
            write("parse", m)
    for u in PUSH_URIS:
        write("uri", u.encode())
        n["uri"] += 1
    for t, c in n.items():
        print(f"{t}: {c} seeds -> fuzz/corpus/{t}/")


if __name__ == "__main__":
    sys.exit(main())
