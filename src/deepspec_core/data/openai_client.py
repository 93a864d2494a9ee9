"""The ``openai`` regen backend: OpenAI-compatible ``/v1/chat/completions`` servers (vLLM, SGLang).

Stdlib HTTP (``urllib``) in a thread pool: each worker drives one conversation turn by turn, so
concurrency is the number of requests in flight. Requests go round-robin over the servers that
answered the probe; timeouts, connection errors, 429 and 5xx are retried with exponential backoff
(on the next server), other 4xx fail the conversation at once (a rerun retries it).
"""

from __future__ import annotations

import http.client
import itertools
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from deepspec_core.data.backend import Outcome, Sampling, TurnResult, conversation_turns, turn_seed
from deepspec_core.data.tokenize import split_thinking
from deepspec_core.errors import ServerError


class RequestFailed(Exception):
    """One request failed; ``retry`` says whether another attempt can help."""

    def __init__(self, message: str, retry: bool):
        super().__init__(message)
        self.retry = retry


def normalize_url(url: str) -> str:
    """'host:8000', 'http://host:8000/', 'http://host:8000/v1' → 'http://host:8000'."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _request(url: str, body: dict[str, Any] | None, timeout: float, api_key: str | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    req.add_header("Content-Type", "application/json")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        detail = err.read()[:300].decode(errors="replace")
        raise RequestFailed(f"HTTP {err.code} from {url}: {detail}", retry=err.code >= 500 or err.code == 429) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise RequestFailed(f"{url}: {type(reason).__name__}: {reason}", retry=True) from None
    except json.JSONDecodeError:
        raise RequestFailed(f"{url} answered with something that is not JSON", retry=True) from None


def request_body(model: str, history: list[dict[str, Any]], sampling: Sampling, thinking: bool, seed: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m["role"], "content": m["content"]} for m in history],
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens,
        # vLLM and SGLang read these as top-level extras (the OpenAI API has no such fields).
        "top_k": sampling.top_k if sampling.top_k > 0 else -1,
        "min_p": sampling.min_p,
        "chat_template_kwargs": {"enable_thinking": thinking},
    }
    if seed is not None:
        body["seed"] = seed
    return body


def parse_answer(resp: dict[str, Any], thinking: bool) -> TurnResult:
    try:
        choice = resp["choices"][0]
        msg = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise RequestFailed(f"response has no choices[0].message: {str(resp)[:200]}", retry=True) from None
    content = msg.get("content") or ""
    # vLLM/SGLang reasoning parsers put the thinking here; without a parser it stays in the content.
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if not thinking and reasoning and not content.strip():
        # A reasoning parser on a model run with thinking off files the whole answer as reasoning.
        raise RequestFailed(
            "the server returned the answer in reasoning_content and left content empty while thinking is off "
            "(its reasoning parser split the output): serve without --reasoning-parser, or regenerate with "
            "--thinking", retry=False)
    if reasoning is None and thinking:
        content, reasoning = split_thinking(content)
    tokens = int((resp.get("usage") or {}).get("completion_tokens") or 0)
    finish = "length" if choice.get("finish_reason") == "length" else "stop"
    return TurnResult(content.strip(), reasoning.strip() if reasoning else None, finish, tokens)


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        servers: list[str],
        concurrency: int = 64,
        timeout: float = 600.0,
        max_retries: int = 5,
        served_model: str | None = None,
        backoff: float = 0.5,
        probe_timeout: float = 10.0,
        api_key: str | None = None,
        seed: bool = True,
    ):
        if not servers:
            raise ServerError("the openai backend needs at least one server", "pass --server http://host:8000 (repeatable)")
        self.servers = [normalize_url(s) for s in servers]
        self.concurrency, self.timeout, self.max_retries = concurrency, timeout, max_retries
        self.backoff, self.probe_timeout, self.api_key, self.seed = backoff, probe_timeout, api_key, seed
        self.model_name = served_model or ""
        self.warnings: list[str] = []
        self._cycle = itertools.cycle(self.servers)
        self._lock = threading.Lock()

    def probe(self) -> None:
        """Keep the servers whose /v1/models answers; learn the served model. One error if none does."""
        alive: list[str] = []
        models: list[Any] = []  # the "id" values the servers list (JSON)
        for url in self.servers:
            try:
                listed = _request(f"{url}/v1/models", None, self.probe_timeout, self.api_key)
                alive.append(url)
                models.extend(m.get("id") for m in listed.get("data", []) if isinstance(m, dict))
            except RequestFailed as err:
                self.warnings.append(f"server {url} does not answer ({err}); skipping it")
        if not alive:
            raise ServerError(
                f"no inference server answered at {', '.join(self.servers)}",
                "start one (e.g. `vllm serve MODEL` or SGLang) and check --server / data.regen.servers",
            )
        if not self.model_name:
            if not models:
                raise ServerError(f"{alive[0]}/v1/models lists no model", "pass --served-model NAME")
            self.model_name = models[0]
        self.servers = alive
        self._cycle = itertools.cycle(alive)

    def _next_server(self) -> str:
        with self._lock:
            return next(self._cycle)

    def chat(self, history: list[dict[str, Any]], sampling: Sampling, thinking: bool, seed: int | None = None) -> TurnResult:
        """One chat completion, retried with exponential backoff (and jitter) on transient errors."""
        body = request_body(self.model_name, history, sampling, thinking, seed)
        for attempt in range(self.max_retries + 1):
            url = self._next_server()
            try:
                return parse_answer(_request(f"{url}/v1/chat/completions", body, self.timeout, self.api_key), thinking)
            except RequestFailed as err:
                if not err.retry or attempt == self.max_retries:
                    raise RequestFailed(f"{err} (after {attempt + 1} attempts)", retry=False) from None
                time.sleep(min(self.backoff * 2**attempt, 30.0) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def _conversation(self, conv: dict[str, Any], sampling: Sampling, thinking: bool) -> Outcome:
        gen = conversation_turns(conv, self.name, self.model_name, sampling, thinking)
        history = next(gen)
        turn = 0
        try:
            while True:
                # A per-turn seed derived from the id makes sampled answers reproducible across reruns
                # on servers that honour it (vLLM, SGLang); ``seed=False`` for those that reject it.
                seed = turn_seed(sampling.seed, conv["id"], turn) if self.seed else None
                answer = self.chat(history, sampling, thinking, seed)
                history = gen.send(answer)
                turn += 1
        except StopIteration as stop:
            return stop.value
        except RequestFailed as err:
            return Outcome(error=str(err))

    def run(self, jobs: Iterator[tuple[int, dict[str, Any]]], sampling: Sampling, thinking: bool) -> Iterator[tuple[int, Outcome]]:
        # At most `concurrency` conversations in flight, and none further than a window ahead of the
        # oldest unfinished one, so the ordered writer's buffer stays bounded.
        window = 8 * self.concurrency
        # Servers that stopped answering would otherwise fail every remaining conversation, slowly.
        give_up_after = max(2 * self.concurrency, 10)
        failures_in_a_row = 0
        pending: dict[Future, int] = {}
        jobs = iter(jobs)
        next_seq = 0
        exhausted = False
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            while True:
                oldest = min(pending.values(), default=next_seq)
                while not exhausted and len(pending) < self.concurrency and next_seq - oldest < window:
                    job = next(jobs, None)
                    if job is None:
                        exhausted = True
                        break
                    seq, conv = job
                    pending[pool.submit(self._conversation, conv, sampling, thinking)] = seq
                    next_seq = seq + 1
                if not pending:
                    return
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    outcome = fut.result()
                    failures_in_a_row = failures_in_a_row + 1 if outcome.error else 0
                    yield pending.pop(fut), outcome
                    if failures_in_a_row >= give_up_after:
                        for f in pending:
                            f.cancel()
                        raise ServerError(
                            f"{failures_in_a_row} conversations in a row failed; last error: {outcome.error}",
                            "check the servers, then rerun the same command: finished conversations are kept",
                        )
