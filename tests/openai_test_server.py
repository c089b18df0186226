"""A canned OpenAI-protocol TEST server (stdlib http.server) for the openai backend's tests.

Not a model: it answers POST /v1/chat/completions with canned answers chosen by a marker in the
user message, and records every request so tests can check what the client sent:

  [[valid]] (or no marker)  a valid answer with as many strings as the response_format schema asks
  [[invalid_json]]          text that is not JSON
  [[schema]]                JSON of the wrong shape (too few paraphrases)
  [[truncated]]             a cut-off answer with finish_reason "length"
  [[empty]]                 an empty message
  [[500_once]]              HTTP 500 on the first request for that question, then a valid answer
  [[429_once]]              HTTP 429 (Retry-After: 0) on the first request, then a valid answer
  [[always_500]]            HTTP 500 every time
  [[slow]]                  a valid answer after `slow_s` seconds (for client timeouts)
  [[garbage_body]]          HTTP 200 with a body that is not a chat completion
  [[unauthorized]]          HTTP 401 (a configuration error, not a per-item failure)

Every answer takes at least `delay_s` so that concurrent requests overlap; `max_in_flight` is the
most requests handled at once. Loopback only. Usable in-process (`CannedServer`) or as a CLI:
`python tests/openai_test_server.py --port 0` prints the chosen port.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MARKER = re.compile(r"\[\[(\w+)\]\]")


def _counts_from_schema(body: dict) -> tuple[int, int]:
    schema = body["response_format"]["json_schema"]["schema"]
    props = schema["properties"]
    return props["paraphrases"]["minItems"], props["negatives"]["minItems"]


def _question(body: dict) -> str:
    user = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
    first = user.splitlines()[0]
    return first.removeprefix("Question: ").strip()


class CannedServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, delay_s: float = 0.05, slow_s: float = 3.0):
        self.delay_s = delay_s
        self.slow_s = slow_s
        self.requests: list[dict] = []  # {"path", "headers", "body", "marker"}
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.seen: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, status: int, payload, headers: dict | None = None):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": "canned-test-model", "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    server._handle(self, body)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://{host}:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _handle(self, handler, body: dict) -> None:
        question = _question(body)
        match = MARKER.search(question)
        marker = match.group(1) if match else "valid"
        with self.lock:
            self.requests.append(
                {"path": handler.path, "headers": dict(handler.headers.items()), "body": body, "marker": marker}
            )
            count = self.seen.get(question, 0) + 1
            self.seen[question] = count
        time.sleep(self.delay_s)
        n, m = _counts_from_schema(body)
        stem = MARKER.sub("", question).strip(" ?")
        valid = json.dumps(
            {
                "paraphrases": [f"Paraphrase {i + 1} of: {stem}?" for i in range(n)],
                "negatives": [f"Negative {i + 1} about: {stem}?" for i in range(m)],
            }
        )
        if marker == "500_once" and count == 1 or marker == "always_500":
            handler._send(500, {"error": {"message": "canned internal error"}})
            return
        if marker == "429_once" and count == 1:
            handler._send(429, {"error": {"message": "canned rate limit"}}, {"Retry-After": "0"})
            return
        if marker == "unauthorized":
            handler._send(401, {"error": {"message": "canned: invalid API key"}})
            return
        if marker == "garbage_body":
            handler._send(200, b"<html>not a completion</html>")
            return
        if marker == "slow":
            time.sleep(self.slow_s)
        text, finish = {
            "invalid_json": ("Sure! Here are some paraphrases: 1. ...", "stop"),
            "schema": (json.dumps({"paraphrases": ["only one?"], "negatives": []}), "stop"),
            "truncated": (valid[: len(valid) // 2], "length"),
            "empty": ("", "stop"),
        }.get(marker, (valid, "stop"))
        handler._send(
            200,
            {
                "id": f"chatcmpl-canned-{len(self.requests)}",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            },
        )

    def __enter__(self) -> CannedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="canned OpenAI-protocol test server (not a model)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-s", type=float, default=0.05)
    args = parser.parse_args(argv)
    with CannedServer(port=args.port, delay_s=args.delay_s) as server:
        print(server.base_url, flush=True)
        try:
            server.thread.join()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
