"""bench/webhook_receiver.py HOST PORT CERT KEY: an HTTPS receiver for the
event stream's webhook sink that takes every POST (200); used by
bench/events.sh. It keeps connections open (HTTP/1.1), as a receiver behind
nginx does, unless HOOK_CLOSE=1 in the environment."""
import http.server
import os
import ssl
import sys

CLOSE = os.environ.get("HOOK_CLOSE") == "1"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        if CLOSE:
            self.send_header("Connection", "close")
        self.end_headers()

    def log_message(self, *args):
        pass


srv = http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[3], sys.argv[4])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
