"""A TLS handshake with Python's ssl module (OpenSSL), for xturn's TLS listener.

usage: tls_probe.py HOST PORT CAFILE [ALPN,...]

Verifies the server's certificate against CAFILE (name: HOST), offers the ALPN ids
given, then sends a STUN Binding request over the connection and reads the answer's
header. Prints one JSON line: {"ok", "version", "alpn", "answer_type"} or
{"ok": false, "error"}.
"""

import json
import os
import socket
import ssl
import sys


def main(host, port, cafile, alpn):
    ctx = ssl.create_default_context(cafile=cafile)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    try:
        with socket.create_connection((host, port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as s:
                tid = os.urandom(12)
                s.sendall(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + tid)
                head = b""
                while len(head) < 20:
                    chunk = s.recv(20 - len(head))
                    if not chunk:
                        break
                    head += chunk
                answer = int.from_bytes(head[:2], "big") if len(head) == 20 and head[8:] == tid else None
                print(json.dumps({
                    "ok": True,
                    "version": s.version(),
                    "alpn": s.selected_alpn_protocol(),
                    "answer_type": answer,
                }))
                return 0
    except (ssl.SSLError, OSError) as e:
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        return 1


if __name__ == "__main__":
    alpn = sys.argv[4].split(",") if len(sys.argv) > 4 and sys.argv[4] else []
    sys.exit(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], alpn))
