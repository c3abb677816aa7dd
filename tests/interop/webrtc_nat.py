"""One browser peer of the NAT lab (Debian's chromium, headless).

usage: webrtc_nat.py controlling|controlled SIGNAL_DIR SERVER_HOST SERVER_PORT USER PASSWORD [CHROMIUM]

Serves webrtc_nat.html on 127.0.0.1 of the network namespace it runs in and starts
headless Chromium on it (its own process group, killed at the end). The page's SDP (all
candidates gathered) is written to SIGNAL_DIR/ROLE.json, the other side's is read from
there: two of these, in two namespaces behind two NATs, make one WebRTC data channel.
Waits up to 60 s for the page's result and prints it as one JSON line (the selected
candidate pair's types from getStats, and for the offerer how many of its 50 messages
came back); exits 0 when the channel worked.
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
role = sys.argv[1]
signal_dir = sys.argv[2]
other = "controlled" if role == "controlling" else "controlling"


class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, code, body=b"", kind="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = urllib.parse.urlparse(self.path).path
        if path == "/":
            with open(os.path.join(HERE, "webrtc_nat.html"), "rb") as f:
                self.reply(200, f.read(), "text/html; charset=utf-8")
        elif path == "/remote":
            p = os.path.join(signal_dir, other + ".json")
            if os.path.exists(p):
                with open(p, "rb") as f:
                    self.reply(200, f.read())
            else:
                self.reply(404)
        else:
            self.reply(404)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(min(n, 1 << 20))
        path = urllib.parse.urlparse(self.path).path
        if path == "/signal":
            tmp = os.path.join(signal_dir, "." + role + ".json")
            with open(tmp, "wb") as f:
                f.write(body)
            os.rename(tmp, os.path.join(signal_dir, role + ".json"))
        elif path == "/result":
            try:
                result.update(json.loads(body))
            except ValueError:
                result["error"] = "bad result: %r" % body[:200]
            got.set()
        self.reply(204)

    def log_message(self, *args):
        pass


def ok(r):
    if "error" in r or not r.get("pair"):
        return False
    return r.get("got") == 50 if role == "controlling" else True


def main():
    host, port, user, password = sys.argv[3:7]
    chromium = sys.argv[7] if len(sys.argv) > 7 else "/usr/bin/chromium"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    query = urllib.parse.urlencode(
        {"role": role, "host": host, "port": port, "user": user, "pass": password}
    )
    url = "http://127.0.0.1:%d/?%s" % (server.server_address[1], query)
    with tempfile.TemporaryDirectory() as profile:
        browser = subprocess.Popen(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                # Host candidates as addresses, not mDNS names (nothing resolves those
                # across the lab's namespaces; the NATs decide what reaches what).
                "--disable-features=WebRtcHideLocalIpsWithMdns",
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
