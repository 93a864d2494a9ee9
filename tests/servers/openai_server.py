"""A small OpenAI-compatible chat server for tests: a transformers model behind real HTTP on 127.0.0.1.

It speaks the subset of the chat-completions schema that vLLM and SGLang speak (``top_k``,
``min_p`` and ``chat_template_kwargs`` as top-level extras; ``reasoning_content`` when thinking).
Requests waiting at the same time are generated together in one batch (like a serving engine), so
client concurrency is measurable. ``fail_rate`` answers that share of chat requests with a 503;
``down=True`` reserves a port where nothing listens; ``misbehave`` answers every chat request in one
of the ways real servers fail (:data:`MISBEHAVIOURS`). Every request is bounded in time.

Run by hand: ``python tests/servers/openai_server.py MODEL_DIR --port 8000``.
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from deepspec_core.data.backend import Sampling
from deepspec_core.data.local_backend import generate_answers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# How a real server can fail a chat request, each seen in the field.
MISBEHAVIOURS = (
    "5xx",  # an overloaded or crashed engine behind a proxy
    "hang",  # no answer within the client's timeout (the handler gives up after ``hang_s``)
    "context400",  # vLLM's refusal of prompt + max_tokens beyond max_model_len
    "empty",  # content "" with finish_reason stop
    "reasoning_only",  # content null, the answer in reasoning_content (a reasoning parser, thinking off)
    "length_empty",  # content "" with finish_reason length
    "not_json",  # an HTML error page with status 200
)


class _Job:
    def __init__(self, body: dict[str, Any]):
        self.body = body
        self.done = threading.Event()
        self.result: Any = None
        self.error: Exception | None = None


class OpenAIServer:
    def __init__(self, model_dir: Path | str, name: str = "tiny", fail_rate: float = 0.0, down: bool = False,
                 max_batch: int = 16, seed: int = 0, port: int | None = None, misbehave: str | None = None,
                 hang_s: float = 3.0):
        if misbehave is not None and misbehave not in MISBEHAVIOURS:
            raise ValueError(f"misbehave must be one of {MISBEHAVIOURS}")
        self.model_dir, self.name, self.fail_rate, self.down, self.max_batch = Path(model_dir), name, fail_rate, down, max_batch
        self.misbehave, self.hang_s = misbehave, hang_s
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests = 0
        self.failures = 0
        self._rng = random.Random(seed)
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._httpd: ThreadingHTTPServer | None = None

    # -- model side: one worker thread batches waiting requests with equal sampling --------------

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(max(torch.get_num_threads(), 1))
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32).eval()

    @staticmethod
    def _key(body: dict[str, Any]) -> tuple:
        kwargs = body.get("chat_template_kwargs") or {}
        top_k = int(body.get("top_k", -1))
        return (float(body.get("temperature", 1.0)), float(body.get("top_p", 1.0)), max(top_k, 0),
                float(body.get("min_p", 0.0)), int(body.get("max_tokens", 256)), bool(kwargs.get("enable_thinking", True)))

    def _worker(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch = [first]
            time.sleep(0.005)  # let concurrent requests arrive
            while len(batch) < self.max_batch:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._jobs.put(None)
                    break
                batch.append(job)
            groups: dict[tuple, list[_Job]] = {}
            for job in batch:
                groups.setdefault(self._key(job.body), []).append(job)
            for key, jobs in groups.items():
                temperature, top_p, top_k, min_p, max_tokens, thinking = key
                sampling = Sampling(temperature, top_p, top_k, min_p, max_tokens)
                try:
                    # Like vLLM, a request's "seed" fixes its own sampling, whatever it is batched with.
                    seeds = [int(j.body.get("seed", 0)) for j in jobs]
                    answers = generate_answers(self.model, self.tokenizer, [j.body["messages"] for j in jobs],
                                               sampling, thinking, seeds)
                    for j, a in zip(jobs, answers, strict=True):
                        j.result = a
                except Exception as err:  # report to the client as a 500, keep serving
                    for j in jobs:
                        j.error = err
                for j in jobs:
                    j.done.set()

    # -- HTTP side ------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, code: int, obj: dict[str, Any]) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": server.name, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                server.requests += 1
                if server.fail_rate and server._rng.random() < server.fail_rate:
                    server.failures += 1
                    return self._send(503, {"error": {"message": "injected failure"}})
                if body.get("model") != server.name:
                    return self._send(404, {"error": {"message": f"model {body.get('model')!r} not served"}})
                if server.misbehave:
                    return self._misbehave(server.misbehave, body)
                job = _Job(body)
                server._jobs.put(job)
                job.done.wait()
                if job.error is not None:
                    return self._send(500, {"error": {"message": str(job.error)}})
                a = job.result
                msg = {"role": "assistant", "content": a.content, "reasoning_content": a.thinking}
                self._send(200, {
                    "id": f"chatcmpl-{server.requests}", "object": "chat.completion", "model": server.name,
                    "choices": [{"index": 0, "message": msg, "finish_reason": a.finish_reason}],
                    "usage": {"completion_tokens": a.tokens},
                })

            def _misbehave(self, mode: str, body: dict[str, Any]) -> None:
                if mode == "5xx":
                    return self._send(502, {"error": {"message": "bad gateway"}})
                if mode == "hang":
                    time.sleep(server.hang_s)
                    return self._send(504, {"error": {"message": "gateway timeout"}})
                if mode == "context400":
                    return self._send(400, {"error": {"type": "BadRequestError", "message": (
                        "This model's maximum context length is 2048 tokens. However, you requested "
                        f"{2000 + int(body.get('max_tokens', 0))} tokens (2000 in the messages, "
                        f"{body.get('max_tokens')} in the completion).")}})
                if mode == "not_json":
                    data = b"<html><body>502 Bad Gateway</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return None
                content, reasoning, finish = {"empty": ("", None, "stop"),
                                              "reasoning_only": (None, "The answer is 4.", "stop"),
                                              "length_empty": ("", None, "length")}[mode]
                tokens = int(body.get("max_tokens", 16)) if finish == "length" else 5
                return self._send(200, {
                    "id": "chatcmpl-x", "object": "chat.completion", "model": server.name,
                    "choices": [{"index": 0, "finish_reason": finish,
                                 "message": {"role": "assistant", "content": content, "reasoning_content": reasoning}}],
                    "usage": {"completion_tokens": tokens},
                })

        return Handler

    def start(self) -> OpenAIServer:
        if self.down:
            return self
        self._load()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        threading.Thread(target=self._worker, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._jobs.put(None)
            self._httpd = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--name", default="tiny")
    p.add_argument("--fail-rate", type=float, default=0.0)
    args = p.parse_args()
    srv = OpenAIServer(args.model_dir, name=args.name, fail_rate=args.fail_rate, port=args.port).start()
    print(f"serving {args.model_dir} as {args.name!r} at {srv.url}", flush=True)
    threading.Event().wait()
