"""The load generator's simulated browser against a real HTTP/1.1 server: keep-alive, cookie, errors."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.load import Browser, TransportError


class Recorder(BaseHTTPRequestHandler):
    """Answers JSON describing the request; `/close` also closes the connection, `/broken` cuts the body short."""

    protocol_version = "HTTP/1.1"
    connections: list[int] = []
    seen: list[dict] = []

    def setup(self):
        super().setup()
        Recorder.connections.append(self.client_address[1])  # the client's port: one per connection

    def _answer(self, status, body: bytes, **headers):
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body) + (10 if self.path == "/broken" else 0)))
        self.end_headers()
        self.wfile.write(body)
        if self.path == "/broken":
            self.close_connection = True

    def do_GET(self):
        Recorder.seen.append({"path": self.path, "cookie": self.headers.get("Cookie")})
        body = json.dumps({"path": self.path, "text": "é"}).encode()
        extra = {"Connection": "close"} if self.path == "/close" else {}
        self._answer(503 if self.path == "/busy" else 200, body, Content_Type="application/json",
                     Set_Cookie="session=abc; HttpOnly; Path=/", Retry_After="3", **extra)

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Recorder.seen.append({"path": self.path, "body": json.loads(body), "type": self.headers["Content-Type"]})
        self._answer(202, b"", Location="/x")

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Recorder.connections.clear()
    Recorder.seen.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_one_connection_carries_the_requests_and_the_cookie_comes_back(server):
    browser = Browser(server)
    status, headers, body = browser.get("/a")
    assert (status, headers["Content-Type"], body) == (200, "application/json", {"path": "/a", "text": "é"})
    status, headers, body = browser.post("/api/jobs", {"prompt": "The cat sat"})
    assert (status, headers["Location"], body) == (202, "/x", None)
    assert browser.get("/b")[0] == 200
    assert len(Recorder.connections) == 1
    assert [s.get("cookie") for s in Recorder.seen] == [None, None, "session=abc"]
    assert Recorder.seen[1]["body"] == {"prompt": "The cat sat"} and Recorder.seen[1]["type"] == "application/json"


def test_an_error_answer_keeps_its_headers(server):
    status, headers, body = Browser(server).get("/busy")
    assert (status, headers["Retry-After"], body["path"]) == (503, "3", "/busy")


def test_a_connection_the_server_closes_is_replaced_before_the_next_request(server):
    browser = Browser(server)
    assert browser.get("/close")[0] == 200
    assert browser.get("/after")[0] == 200
    assert len(Recorder.connections) == 2


def test_a_response_cut_short_is_a_transport_error_and_the_next_request_reconnects(server):
    browser = Browser(server)
    with pytest.raises(TransportError):
        browser.get("/broken")
    assert browser.get("/after")[2]["path"] == "/after"
