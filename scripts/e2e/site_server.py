"""The e2e site for browser runs: scripts/e2e/site/ over HTTP, plus /away, a redirect off the
allowlist, and /slow, the about page after a second and a half.

Usage: site_server.py HOST PORT
"""

import functools
import http.server
import os
import sys
import time


class Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(1.5)
            self.path = "/about.html"
        if self.path.startswith("/away"):
            self.send_response(302)
            self.send_header("Location", "https://elsewhere.not-allowed.example/")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args):
        pass


host, port = sys.argv[1], int(sys.argv[2])
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "site")
http.server.ThreadingHTTPServer((host, port), functools.partial(Handler, directory=root)).serve_forever()
