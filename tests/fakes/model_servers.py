"""Real HTTP servers on 127.0.0.1 that speak the Anthropic, OpenAI and Ollama wire formats.

Each server answers from a script (a queue of `Reply`s) and, when the script is empty, from its default
behaviour, and records every request it got. Tests drive the real SDK clients against them.

    with FakeOpenAIServer() as srv:
        srv.script(Reply.error(503), srv.tool_call({"focus": "x"}))
        ... AsyncOpenAI(base_url=srv.base_url, ...) ...
        assert srv.requests[1].json["model"] == "gpt-4o-mini"
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer: status, headers and body (dict → JSON, str/bytes sent as is), after `delay` s."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    @classmethod
    def error(cls, status: int, message: str = "", retry_after: str | None = None, **kw: Any) -> Reply:
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        body = {
            "type": "error",
            "error": {"type": f"http_{status}", "message": message or f"status {status}"},
        }
        return cls(status=status, body=body, headers=headers, **kw)

    @classmethod
    def malformed(cls) -> Reply:
        return cls(status=200, body=b'{"id": "broken", "content": [ {"type": "te', headers={})

    @classmethod
    def slow(cls, delay: float, body: Any = None) -> Reply:
        return cls(status=200, body=body if body is not None else {}, delay=delay)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: Any


class FakeModelServer:
    """A scripted loopback HTTP server in a background thread; subclasses define the default answers."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._got_request = threading.Condition(self._lock)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                req = RecordedRequest(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                with server._lock:
                    server.requests.append(req)
                    reply = server._script.popleft() if server._script else None
                    server._got_request.notify_all()
                if reply is None:
                    reply = server.default(req)
                if reply.delay:
                    server._closing.wait(reply.delay)  # released early when the server closes
                payload = reply.body
                if isinstance(payload, (dict, list)):
                    data = json.dumps(payload).encode()
                elif isinstance(payload, str):
                    data = payload.encode()
                else:
                    data = payload or b""
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", reply.headers.get("content-type", "application/json"))
                    for k, v in reply.headers.items():
                        if k.lower() != "content-type":
                            self.send_header(k, v)
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            do_GET = _handle  # noqa: N815 - http.server's naming
            do_POST = _handle  # noqa: N815

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name=type(self).__name__, daemon=True
        )

    # lifecycle ------------------------------------------------------------
    def start(self) -> FakeModelServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self):  # noqa: ANN204 - returns the subclass
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # scripting ------------------------------------------------------------
    def script(self, *replies: Reply) -> None:
        """Queue answers for the next requests, in order; afterwards the default behaviour resumes."""
        with self._lock:
            self._script.extend(replies)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least `count` requests arrived (poll-free), then return them all."""
        with self._got_request:
            if not self._got_request.wait_for(lambda: len(self.requests) >= count, timeout=timeout):
                raise TimeoutError(f"expected {count} requests, got {len(self.requests)}")
            return list(self.requests)

    def default(self, req: RecordedRequest) -> Reply:
        return Reply(status=404, body={"error": {"message": f"no route {req.path}"}})


class FakeAnthropicServer(FakeModelServer):
    """Speaks POST /v1/messages; by default answers with plain text."""

    @property
    def base_url(self) -> str:
        return self.url

    @staticmethod
    def tool_call(fields: dict[str, str], text: str = "", usage: tuple[int, int] = (120, 30)) -> Reply:
        content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        content.append({"type": "tool_use", "id": "toolu_01", "name": "emit_cmb", "input": fields})
        return Reply(body=_anthropic_message(content, "tool_use", usage))

    @staticmethod
    def text(text: str, usage: tuple[int, int] = (100, 20)) -> Reply:
        return Reply(body=_anthropic_message([{"type": "text", "text": text}], "end_turn", usage))

    def default(self, req: RecordedRequest) -> Reply:
        if req.method == "POST" and req.path.startswith("/v1/messages"):
            return self.text("nothing to add")
        return super().default(req)


def _anthropic_message(content: list[dict[str, Any]], stop: str, usage: tuple[int, int]) -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
    }


class FakeOpenAIServer(FakeModelServer):
    """Speaks POST /v1/chat/completions; by default answers with plain text."""

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @staticmethod
    def tool_call(fields: dict[str, str] | str, usage: tuple[int, int] = (120, 30)) -> Reply:
        arguments = fields if isinstance(fields, str) else json.dumps(fields)
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "emit_cmb", "arguments": arguments}}
            ],
        }
        return Reply(body=_openai_completion(message, "tool_calls", usage))

    @staticmethod
    def text(text: str, usage: tuple[int, int] = (100, 20)) -> Reply:
        return Reply(body=_openai_completion({"role": "assistant", "content": text}, "stop", usage))

    def default(self, req: RecordedRequest) -> Reply:
        if req.method == "POST" and req.path.startswith("/v1/chat/completions"):
            return self.text("nothing to add")
        return super().default(req)


def _openai_completion(message: dict[str, Any], finish: str, usage: tuple[int, int]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
    }


class FakeOllamaServer(FakeModelServer):
    """Speaks /api/chat and /api/tags like a local Ollama.

    Models in `no_tools` answer a request that carries tools the way Ollama does (HTTP 400, "does not support
    tools"); in JSON mode (`format: "json"`) every model answers with `json_reply` as its message content.
    """

    def __init__(
        self,
        models: list[str] | None = None,
        no_tools: set[str] | None = None,
        json_reply: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.models = list(models or ["llama3.2:3b"])
        self.no_tools = set(no_tools or ())
        self.json_reply = json_reply or {"focus": "json-mode reply", "issue": "none"}

    @property
    def base_url(self) -> str:
        return self.url

    @staticmethod
    def tool_call(fields: dict[str, Any], usage: tuple[int, int] = (120, 30)) -> Reply:
        message = {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "emit_cmb", "arguments": fields}}],
        }
        return Reply(body=_ollama_chat(message, usage))

    @staticmethod
    def text(text: str, usage: tuple[int, int] = (100, 20)) -> Reply:
        return Reply(body=_ollama_chat({"role": "assistant", "content": text}, usage))

    def default(self, req: RecordedRequest) -> Reply:
        if req.method == "GET" and req.path == "/api/tags":
            return Reply(body={"models": [{"name": m, "model": m} for m in self.models]})
        if req.method == "POST" and req.path == "/api/chat" and isinstance(req.json, dict):
            model = req.json.get("model")
            if model not in self.models and f"{model}:latest" not in self.models:
                return Reply(404, {"error": f"model '{model}' not found, try pulling it first"})
            if req.json.get("tools") and model in self.no_tools:
                return Reply(400, {"error": f"registry.ollama.ai/library/{model} does not support tools"})
            if req.json.get("format") == "json":
                return self.text(json.dumps(self.json_reply))
            return self.text("nothing to add")
        return super().default(req)


def _ollama_chat(message: dict[str, Any], usage: tuple[int, int]) -> dict[str, Any]:
    return {
        "model": "llama3.2:3b",
        "created_at": "2026-01-01T00:00:00Z",
        "message": message,
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": usage[0],
        "eval_count": usage[1],
    }


class FakeMistralServer(FakeOpenAIServer):
    """Speaks Mistral's /v1/chat/completions: OpenAI-shaped, but tool arguments may come as an object and
    errors as `{"object": "error", "message": ..., "type": ...}` (422 validation errors carry `detail`)."""

    @staticmethod
    def tool_call(fields: dict[str, str] | str, usage: tuple[int, int] = (120, 30)) -> Reply:
        message = {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "abc123XYZ", "type": "function", "function": {"name": "emit_cmb", "arguments": fields}}
            ],
        }
        return Reply(body=_openai_completion(message, "tool_calls", usage))

    @staticmethod
    def error(status: int, message: str, retry_after: str | None = None) -> Reply:
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        body = {
            "object": "error",
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
        return Reply(status=status, body=body, headers=headers)

    @staticmethod
    def validation_error(loc: list[str], msg: str) -> Reply:
        body = {
            "object": "error",
            "message": {"detail": [{"type": "extra_forbidden", "loc": loc, "msg": msg}]},
            "type": "invalid_request_message_error",
            "param": None,
            "code": None,
        }
        return Reply(status=422, body=body)
