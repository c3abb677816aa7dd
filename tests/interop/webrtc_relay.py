"""Relay-only WebRTC through xturn in a real browser (Debian's chromium, headless).

usage: webrtc_relay.py TURN_URL USER PASSWORD [CHROMIUM]

Serves webrtc_relay.html on 127.0.0.1 (of the network namespace it runs in), starts
headless Chromium on it (its own process group, killed at the end), and waits up to 60 s
for the page's result: two RTCPeerConnections with iceTransportPolicy "relay" exchange 50
text messages and one 60 KB message over a data channel. Prints the result as one JSON
line; exits 0 only when every message arrived in order and byte-exact and both selected
candidate pairs are relay/relay.
"""

import http.server
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
result = {}
got = threading.Event()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if urllib.parse.urlparse(self.path).path != "/":
            self.send_error(404)
            return
        with open(os.path.join(HERE, "webrtc_relay.html"), "rb") as f:
            body = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(min(n, 1 << 20))
        try:
            result.update(json.loads(body))
        except ValueError:
            result["error"] = "bad result: %r" % body[:200]
        self.send_response(204)
        self.end_headers()
        got.set()

    def log_message(self, *args):
        pass


def ok(r):
    pairs = [r.get("a") or {}, r.get("b") or {}]
    return (
        "error" not in r
        and r.get("messages") == 50
        and r.get("inOrder") is True
        and r.get("bigOk") is True
        and r.get("bigLen") == 60 * 1024
        and all(p.get("local") == "relay" and p.get("remote") == "relay" for p in pairs)
    )


def main():
    turn, user, password = sys.argv[1], sys.argv[2], sys.argv[3]
    chromium = sys.argv[4] if len(sys.argv) > 4 else "/usr/bin/chromium"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    query = urllib.parse.urlencode({"turn": turn, "user": user, "pass": password})
    url = "http://127.0.0.1:%d/?%s" % (server.server_address[1], query)
    with tempfile.TemporaryDirectory() as profile:
        browser = subprocess.Popen(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",
                # turns: with the tests' own CA, made at test time.
                "--ignore-certificate-errors",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--user-data-dir=" + profile,
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            if not got.wait(60):
                result["error"] = "no result from the page within 60 s"
        finally:
            # The browser and its helpers: the process group this script started.
            try:
                os.killpg(browser.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, err = browser.communicate(timeout=10)
            if not ok(result):
                result["chromium_stderr_tail"] = err.decode(errors="replace")[-2000:]
    server.shutdown()
    print(json.dumps(result))
    return 0 if ok(result) else 1


if __name__ == "__main__":
    sys.exit(main())
