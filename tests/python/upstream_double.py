"""A small OpenAI-compatible upstream for tests: `POST /v1/chat/completions`
and `GET /v1/models` on 127.0.0.1, port chosen by the OS.

It answers "echo: <last user message>" so a test can tell that the prompt
crossed the server intact, records every request it received (body and
headers), and can be scripted to fail: `fail_next(503, n)` makes the next n
chat requests answer that status. With `streaming=True` a request with
`"stream": true` is answered as an OpenAI server-sent-event stream (one
`chat.completion.chunk` per word of the answer, `chunk_delay` seconds apart,
then `data: [DONE]`); otherwise `"stream"` is ignored and one JSON completion
is sent. It lives in tests only; the product's real backends are
llama.cpp-class servers and the embedded engine.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class UpstreamDouble:
    def __init__(self, models=("small-model", "big-model"), streaming=False, chunk_delay=0.0):
        self.models = list(models)
        self.streaming = streaming
        self.chunk_delay = chunk_delay
        self.requests = []  # [{"path", "headers", "body"}] for chat requests
        self._failures = []  # statuses to answer, in order
        self._lock = threading.Lock()
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, status, obj, extra_headers=()):
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in extra_headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _stream(self, model, content):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

                def write(data):
                    event = f"data: {data}\n\n".encode()
                    self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                    self.wfile.flush()

                words = content.split(" ")
                for i, word in enumerate(words):
                    piece = word if i == len(words) - 1 else word + " "
                    chunk = {
                        "id": f"chatcmpl-double-{len(double.requests)}",
                        "object": "chat.completion.chunk",
                        "created": int(time.time()),
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "delta": {"content": piece},
                                "finish_reason": "stop" if i == len(words) - 1 else None,
                            }
                        ],
                    }
                    write(json.dumps(chunk))
                    if double.chunk_delay:
                        time.sleep(double.chunk_delay)
                write("[DONE]")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def do_GET(self):
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in double.models]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": "not found"}})
                    return
                body = json.loads(raw)
                with double._lock:
                    double.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    status = double._failures.pop(0) if double._failures else None
                if status is not None:
                    self._send(status, {"error": {"message": f"scripted {status}"}}, [("Retry-After", "1")])
                    return
                if body.get("model") not in double.models:
                    self._send(404, {"error": {"message": "model not found"}})
                    return
                last = [m for m in body["messages"] if m.get("role") == "user"][-1]["content"]
                content = f"echo: {last}"
                message = {"role": "assistant", "content": content}
                finish_reason = "stop"
                forced = body.get("tool_choice")
                if isinstance(forced, dict) and forced.get("type") == "function":
                    # A forced tool call (for tool-calling clients): call it with {}.
                    name = forced["function"]["name"]
                    message = {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "call_double_1", "type": "function", "function": {"name": name, "arguments": "{}"}}
                        ],
                    }
                    finish_reason = "tool_calls"
                if double.streaming and body.get("stream") is True and message.get("content"):
                    self._stream(body["model"], message["content"])
                    return
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-double-{len(double.requests)}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "message": message, "finish_reason": finish_reason}
                        ],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
                    },
                )

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def fail_next(self, status: int, count: int = 1):
        with self._lock:
            self._failures.extend([status] * count)

    def reset(self):
        with self._lock:
            self.requests.clear()
            self._failures.clear()

    def close(self):
        self._server.shutdown()
        self._server.server_close()
