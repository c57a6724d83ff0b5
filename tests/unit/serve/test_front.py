"""serve/front.py, the reverse proxy that faces the network when `ncl-ray serve` listens beyond loopback, in front
of a real HTTP server on 127.0.0.1 (standing in for Ray Serve's proxy): Ray's own /-/ paths hidden but the
liveness probe, everything else forwarded unchanged (query, headers, body, byte ranges), repeated headers refused."""

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ncl_ray.serve.front import Front
from raynodes import free_port


class Upstream(BaseHTTPRequestHandler):
    def _answer(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/-/healthz":
            data, status, extra = b"success", 200, {}
        elif self.headers.get("Range") == "bytes=2-5":
            data, status, extra = b"2345", 206, {"Content-Range": "bytes 2-5/10"}
        else:
            data = json.dumps({"method": self.command, "path": self.path, "body": body.decode(),
                               "headers": [[k.lower(), v] for k, v in self.headers.items()]}).encode()
            status, extra = 200, {"X-Custom": "kept"}
        self.send_response(status)
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def front():
    upstream = ThreadingHTTPServer(("127.0.0.1", free_port()), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = free_port()
    f = Front("127.0.0.1", port, upstream.server_address[1])
    yield port
    f.stop()
    upstream.shutdown()


def request(port, method, path, headers=(), body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for k, v in headers:
        conn.putheader(k, v)
    if body is not None:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    r = conn.getresponse()
    out = r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}
    conn.close()
    return out


def test_ray_paths_are_hidden_but_the_liveness_probe(front):
    status, body, _ = request(front, "GET", "/-/routes", [("Host", "h")])
    assert status == 404 and json.loads(body)["field"] == "path"
    assert request(front, "GET", "/-/healthz", [("Host", "h")])[:2] == (200, b"success")


def test_requests_and_responses_pass_unchanged(front):
    status, body, headers = request(front, "POST", "/search?q=a%20b", [("Host", "search.example"),
                                    ("Authorization", "Bearer t"), ("Content-Type", "application/json")], b'{"k":1}')
    seen = json.loads(body)
    assert status == 200 and headers["x-custom"] == "kept"
    assert seen["method"] == "POST" and seen["path"] == "/search?q=a%20b" and seen["body"] == '{"k":1}'
    got = dict(seen["headers"])
    assert got["host"] == "search.example" and got["authorization"] == "Bearer t"
    status, body, headers = request(front, "GET", "/videos/x", [("Host", "h"), ("Range", "bytes=2-5")])
    assert (status, body, headers["content-range"]) == (206, b"2345", "bytes 2-5/10")


def test_a_repeated_host_is_refused(front):
    status, body, _ = request(front, "GET", "/healthz", [("Host", "evil.example"), ("Host", "127.0.0.1")])
    assert status == 400
