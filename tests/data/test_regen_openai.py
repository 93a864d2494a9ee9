"""The openai regen backend against real HTTP servers on 127.0.0.1 serving the tiny target."""

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepspec_cli.main import app
from deepspec_core.data.backend import Sampling
from deepspec_core.data.local_backend import LocalBackend
from deepspec_core.data.openai_client import OpenAIBackend, normalize_url, parse_answer, request_body
from deepspec_core.data.regen import errors_path, regenerate
from deepspec_core.errors import ServerError

pytestmark = pytest.mark.integration

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from servers.openai_server import OpenAIServer  # noqa: E402

GREEDY = Sampling(temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, max_tokens=10)


def write_convs(path: Path, n: int) -> list[str]:
    rows = [{"id": f"o{i}", "meta": {}, "messages": [
        {"role": "user", "content": f"Write a function number {i}."}, {"role": "assistant", "content": "old"},
        {"role": "user", "content": "Now add a docstring."}]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [r["id"] for r in rows]


def ids_of(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in open(path)]


@pytest.fixture(scope="module")
def server(tiny_target):
    with OpenAIServer(tiny_target, name="tiny") as srv:
        yield srv


def test_request_and_response_schema():
    body = request_body("m", [{"role": "user", "content": "q", "thinking": "x"}], Sampling(top_k=0, min_p=0.1), True, 7)
    assert body["messages"] == [{"role": "user", "content": "q"}]
    assert (body["top_k"], body["min_p"], body["seed"]) == (-1, 0.1, 7)  # extras at top level, -1 = off (vLLM)
    assert body["chat_template_kwargs"] == {"enable_thinking": True}
    with_parser = {"choices": [{"message": {"content": "A", "reasoning_content": "R"}, "finish_reason": "length"}],
                   "usage": {"completion_tokens": 9}}
    r = parse_answer(with_parser, thinking=True)
    assert (r.content, r.thinking, r.finish_reason, r.tokens) == ("A", "R", "length", 9)
    raw = {"choices": [{"message": {"content": "<think>R</think>\n\nA"}, "finish_reason": "stop"}]}
    assert (parse_answer(raw, True).content, parse_answer(raw, True).thinking) == ("A", "R")
    assert normalize_url("localhost:8000/v1/") == "http://localhost:8000"


def test_regen_through_server_matches_local(server, tiny_target, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = tmp_path / "in.jsonl"
    ids = write_convs(src, 6)
    backend = OpenAIBackend([server.url], concurrency=4, timeout=60, max_retries=2)
    backend.probe()
    assert backend.model_name == "tiny"
    r = regenerate(src, tmp_path / "http.jsonl", backend, GREEDY, thinking=False)
    assert (r.ok, r.failed) == (6, 0) and r.tokens > 0
    assert ids_of(tmp_path / "http.jsonl") == ids
    local = LocalBackend(AutoModelForCausalLM.from_pretrained(tiny_target).eval(),
                         AutoTokenizer.from_pretrained(tiny_target), "tiny", batch_size=1)
    regenerate(src, tmp_path / "local.jsonl", local, GREEDY, thinking=False)
    http_recs = [json.loads(line) for line in open(tmp_path / "http.jsonl")]
    local_recs = [json.loads(line) for line in open(tmp_path / "local.jsonl")]
    assert [h["messages"] for h in http_recs] == [loc["messages"] for loc in local_recs]
    assert all(h["regen"]["backend"] == "openai" and h["regen"]["model"] == "tiny" for h in http_recs)


def test_seeded_sampling_gives_the_same_answers_over_http_and_in_process(server, tiny_target, tmp_path):
    """T = 0.7 with the same seed: the server gets turn_seed(seed, id, turn) per request, as the local
    backend uses per row, so both backends (and a rerun) write the same answers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = tmp_path / "in.jsonl"
    write_convs(src, 5)
    sampling = Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=10, seed=11)
    backend = OpenAIBackend([server.url], concurrency=3, timeout=60, max_retries=2)
    backend.probe()
    regenerate(src, tmp_path / "http.jsonl", backend, sampling, thinking=False)
    regenerate(src, tmp_path / "http2.jsonl", backend, sampling, thinking=False)
    local = LocalBackend(AutoModelForCausalLM.from_pretrained(tiny_target).eval(),
                         AutoTokenizer.from_pretrained(tiny_target), "tiny", batch_size=1)
    regenerate(src, tmp_path / "local.jsonl", local, sampling, thinking=False)

    def messages(name: str) -> list:
        return [json.loads(line)["messages"] for line in open(tmp_path / name)]

    assert messages("http.jsonl") == messages("http2.jsonl") == messages("local.jsonl")


def test_retries_ride_out_a_flaky_server(tiny_target, tmp_path):
    src = tmp_path / "in.jsonl"
    ids = write_convs(src, 6)
    with OpenAIServer(tiny_target, fail_rate=0.4, seed=1) as flaky:
        backend = OpenAIBackend([flaky.url], concurrency=3, max_retries=10, backoff=0.01)
        backend.probe()
        r = regenerate(src, tmp_path / "out.jsonl", backend, GREEDY, thinking=False)
        assert flaky.failures > 0
    assert (r.ok, r.failed) == (6, 0) and ids_of(tmp_path / "out.jsonl") == ids


def test_failures_are_recorded_then_retried_on_rerun(server, tiny_target, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_convs(src, 4)
    with OpenAIServer(tiny_target, fail_rate=1.0) as broken:
        backend = OpenAIBackend([broken.url], concurrency=2, max_retries=1, backoff=0.01)
        backend.probe()
        r = regenerate(src, out, backend, GREEDY, thinking=False)
    assert (r.ok, r.failed, r.written) == (0, 4, 0)
    errors = [json.loads(line) for line in open(errors_path(out))]
    assert sorted(e["id"] for e in errors) == ids and "HTTP 503" in errors[0]["error"] and "2 attempts" in errors[0]["error"]
    healthy = OpenAIBackend([server.url], concurrency=2)
    healthy.probe()
    r2 = regenerate(src, out, healthy, GREEDY, thinking=False)
    assert (r2.ok, r2.failed) == (4, 0) and ids_of(out) == ids and not errors_path(out).exists()


def test_gives_up_when_servers_keep_failing(tiny_target, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_convs(src, 40)
    with OpenAIServer(tiny_target, fail_rate=1.0) as broken:
        backend = OpenAIBackend([broken.url], concurrency=2, max_retries=0)
        backend.probe()
        with pytest.raises(ServerError, match="10 conversations in a row failed"):
            regenerate(src, out, backend, GREEDY, thinking=False)
        assert broken.requests < 40
    assert not out.exists() and len(open(errors_path(out)).readlines()) >= 10


def test_down_servers(server, tiny_target):
    down = OpenAIServer(tiny_target, down=True).start()
    backend = OpenAIBackend([down.url], probe_timeout=2)
    with pytest.raises(ServerError, match="no inference server answered"):
        backend.probe()
    mixed = OpenAIBackend([down.url, server.url], probe_timeout=2)
    mixed.probe()
    assert mixed.servers == [server.url] and "does not answer" in mixed.warnings[0]


def test_round_robin(server, tiny_target, tmp_path):
    src = tmp_path / "in.jsonl"
    write_convs(src, 4)
    with OpenAIServer(tiny_target) as second:
        before = server.requests
        backend = OpenAIBackend([server.url, second.url], concurrency=2)
        backend.probe()
        regenerate(src, tmp_path / "out.jsonl", backend, GREEDY, thinking=False)
        assert server.requests - before == second.requests == 4  # 8 requests (2 turns × 4), split evenly


def test_cli_openai_backend(server, tiny_target, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_convs(src, 3)
    args = ["data", "regen", "--in", str(src), "--out", str(out), "--target", "tiny", "--backend", "openai",
            "--max-tokens", "6", "--concurrency", "3"]
    res = CliRunner().invoke(app, [*args, "--server", server.url])
    assert res.exit_code == 0, res.output
    assert "tokens/s" in res.output and ids_of(out) == ids
    down = OpenAIServer(tiny_target, down=True).start()
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o2.jsonl"), "--server", down.url])
    assert res.exit_code == 1 and "no inference server answered" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize(
    ("mode", "thinking", "error", "attempts"),
    [
        ("5xx", False, "HTTP 502", 2),
        ("hang", False, "timed out", 2),
        ("context400", False, "HTTP 400 from", 1),
        ("empty", False, "answer 1: the target returned an empty answer", None),
        ("reasoning_only", False, "reasoning_content and left content empty while thinking is off", 1),
        ("reasoning_only", True, "answer 1: the answer is empty after its reasoning", None),
        ("length_empty", False, "max_tokens ran out after 10 tokens, before any content", None),
        ("not_json", False, "not JSON", 2),
    ],
)
def test_a_misbehaving_server_never_yields_a_success(tiny_target, tmp_path, mode, thinking, error, attempts):
    """No empty or invalid answer is written: each way a server fails ends in the errors file with
    a message that says what happened (and, for a reasoning parser, which flag to change)."""
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_convs(src, 2)
    with OpenAIServer(tiny_target, misbehave=mode, hang_s=2.0) as bad:
        backend = OpenAIBackend([bad.url], concurrency=2, timeout=0.5, max_retries=1, backoff=0.01)
        backend.probe()
        r = regenerate(src, out, backend, GREEDY, thinking=thinking)
    assert (r.ok, r.failed, r.written) == (0, 2, 0)
    errors = [json.loads(line)["error"] for line in open(errors_path(out))]
    assert all(error in e for e in errors), errors
    if attempts:
        assert all(f"after {attempts} attempts" in e for e in errors), errors
    if mode == "reasoning_only" and not thinking:
        assert "--reasoning-parser" in errors[0]
    if mode == "context400":
        assert "maximum context length is 2048 tokens" in errors[0]


def test_cli_reports_reasoning_only_answers_as_failures(tiny_target, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_convs(src, 2)
    with OpenAIServer(tiny_target, misbehave="reasoning_only") as bad:
        res = CliRunner().invoke(app, ["data", "regen", "--in", str(src), "--out", str(out), "--target", "tiny",
                                       "--backend", "openai", "--server", bad.url, "--max-tokens", "6"])
    assert res.exit_code == 0, res.output
    assert "2 conversations failed" in res.output and not out.read_text()
