"""Regen engine: multi-turn logic, input order, resume by id, failures, truncation; local backend."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deepspec_core.data.backend import Outcome, Sampling, TurnResult, conversation_turns
from deepspec_core.data.local_backend import LocalBackend, generate_answers
from deepspec_core.data.regen import (
    errors_path,
    index_done,
    partial_path,
    regenerate,
)
from deepspec_core.errors import DataError

pytestmark = pytest.mark.integration


def write_convs(path: Path, n: int, turns: int = 2) -> list[str]:
    rows = []
    for i in range(n):
        msgs = [{"role": "system", "content": "Be brief."}] if i % 4 == 0 else []
        for t in range(turns):
            msgs += [{"role": "user", "content": f"q{i}.{t}"}, {"role": "assistant", "content": "old answer"}]
        rows.append({"id": f"c{i:03d}", "messages": msgs, "meta": {"i": i}})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [r["id"] for r in rows]


class FakeBackend:
    """Answers 'A(<last user turn>)'; completes jobs in a scrambled order; can fail or truncate ids."""

    name = "fake"
    model_name = "fake-model"

    def __init__(self, fail: set[str] = frozenset(), truncate: set[str] = frozenset(), crash_after: int | None = None):
        self.fail, self.truncate, self.crash_after, self.seen = set(fail), set(truncate), crash_after, []

    def run(self, jobs, sampling, thinking):
        jobs = list(jobs)
        order = [j for k in range(3) for j in jobs[k::3]]  # 0,3,6,...,1,4,...: out of order
        for n, (seq, conv) in enumerate(order):
            if self.crash_after is not None and n == self.crash_after:
                raise KeyboardInterrupt
            self.seen.append(conv["id"])
            if conv["id"] in self.fail:
                yield seq, Outcome(error="boom")
                continue
            gen = conversation_turns(conv, self.name, self.model_name, sampling, thinking)
            history = next(gen)
            try:
                while True:
                    reason = "length" if conv["id"] in self.truncate else "stop"
                    history = gen.send(TurnResult(f"A({history[-1]['content']})", None, reason, 3))
            except StopIteration as stop:
                yield seq, stop.value


def ids_of(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in open(path)]


def test_conversation_turns_multi_turn():
    conv = {"id": "x", "meta": {"k": 1}, "messages": [
        {"role": "system", "content": "S"}, {"role": "user", "content": "u1"}, {"role": "user", "content": "u1b"},
        {"role": "assistant", "content": "old"}, {"role": "user", "content": "u2"}]}
    gen = conversation_turns(conv, "b", "m", Sampling(), thinking=True)
    assert next(gen) == [{"role": "system", "content": "S"}, {"role": "user", "content": "u1"}, {"role": "user", "content": "u1b"}]
    second = gen.send(TurnResult("a1", "t1", "stop", 5))
    assert second[-2] == {"role": "assistant", "content": "a1", "thinking": "t1"} and second[-1]["content"] == "u2"
    with pytest.raises(StopIteration) as stop:
        gen.send(TurnResult("a2", None, "length", 7))
    out = stop.value.value
    assert [m["role"] for m in out.record["messages"]] == ["system", "user", "user", "assistant", "user", "assistant"]
    assert out.record["regen"]["finish_reason"] == "length" and out.record["regen"]["finish_reasons"] == ["stop", "length"]
    assert out.record["regen"]["thinking"] is True and out.record["meta"] == {"k": 1}
    assert out.tokens == 12 and out.truncated


@pytest.mark.parametrize(
    ("answer", "thinking", "error"),
    [
        (TurnResult("", None, "stop", 1), False, "answer 1: the target returned an empty answer"),
        (TurnResult("  ", None, "length", 9), False, "max_tokens ran out after 9 tokens, before any content"),
        (TurnResult("", "let me see", "stop", 9), True, "the answer is empty after its reasoning"),
        (TurnResult("", "let me see", "length", 9), True, None),  # cut inside its reasoning: kept, truncated
        (TurnResult("", "let me see", "stop", 9), False, "the target returned an empty answer"),
    ],
)
def test_no_empty_answer_is_a_success(answer, thinking, error):
    conv = {"id": "x", "messages": [{"role": "user", "content": "u1"}]}
    gen = conversation_turns(conv, "b", "m", Sampling(), thinking=thinking)
    next(gen)
    with pytest.raises(StopIteration) as stop:
        gen.send(answer)
    out = stop.value.value
    if error is None:
        assert out.record is not None and out.truncated and out.record["messages"][-1]["thinking"] == "let me see"
    else:
        assert out.record is None and error in out.error


def test_order_failures_truncation_and_retry(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_convs(src, 10)
    r = regenerate(src, out, FakeBackend(fail={"c003", "c007"}, truncate={"c005"}), Sampling(), thinking=False)
    assert (r.ok, r.failed, r.truncated, r.tokens, r.written) == (8, 2, 1, 8 * 2 * 3, 8)
    assert ids_of(out) == [i for i in ids if i not in ("c003", "c007")]  # input order despite scrambled completion
    assert ids_of(errors_path(out)) == ["c003", "c007"] and r.errors == errors_path(out)
    assert not partial_path(out).exists()
    rec = json.loads(open(out).readline())
    assert rec["messages"][1] == {"role": "user", "content": "q0.0"} and rec["messages"][2]["content"] == "A(q0.0)"
    assert rec["regen"]["backend"] == "fake" and rec["regen"]["sampling"]["top_k"] == 20
    # The rerun retries exactly the failures and restores input order.
    again = FakeBackend()
    r2 = regenerate(src, out, again, Sampling(), thinking=False)
    assert again.seen == ["c003", "c007"]
    assert (r2.already_done, r2.ok, r2.failed, r2.written) == (8, 2, 0, 10)
    assert ids_of(out) == ids and not errors_path(out).exists()
    # Nothing left: a third run does nothing.
    third = FakeBackend()
    assert regenerate(src, out, third, Sampling(), thinking=False).ok == 0 and third.seen == []


def test_interrupt_keeps_partial_in_order_and_resumes(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_convs(src, 12)
    with pytest.raises(KeyboardInterrupt):
        regenerate(src, out, FakeBackend(crash_after=7), Sampling(), thinking=False)
    assert not out.exists()
    # Completed 0,3,6,9,1,4,7 out of order; only the in-order prefix 0,1 was written, the rest was buffered.
    assert ids_of(partial_path(out)) == ["c000", "c001"]
    with open(partial_path(out), "a") as f:  # a torn line, as after kill -9 in the middle of a write
        f.write('{"id": "c002", "messa')
    regenerate(src, out, FakeBackend(), Sampling(), thinking=False)
    assert ids_of(out) == ids


def test_limit_and_input_errors(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_convs(src, 6)
    assert regenerate(src, out, FakeBackend(), Sampling(), False, limit=4).written == 4
    assert ids_of(out) == ids[:4]
    assert regenerate(src, out, FakeBackend(), Sampling(), False).ok == 2  # a larger run extends it
    assert ids_of(out) == ids
    with pytest.raises(DataError, match="is the input file"):
        regenerate(src, src, FakeBackend(), Sampling(), False)
    dup = tmp_path / "dup.jsonl"
    dup.write_text(open(src).readline() * 2)
    with pytest.raises(DataError, match="occurs more than once"):
        regenerate(dup, tmp_path / "o2.jsonl", FakeBackend(), Sampling(), False)
    (tmp_path / "bad.jsonl.partial").write_text("not json\n")
    with pytest.raises(DataError, match="not a conversation record"):
        index_done([tmp_path / "bad.jsonl.partial"])


# -- local backend on a real (random, tiny) model --------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_generate_answers_batch_matches_single(tiny_lm):
    model, tok = tiny_lm
    histories = [[{"role": "user", "content": "hi"}],
                 [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]]
    greedy = Sampling(temperature=0.0, max_tokens=8)
    batched = generate_answers(model, tok, histories, greedy, thinking=False)
    single = [generate_answers(model, tok, [h], greedy, thinking=False)[0] for h in histories]
    assert batched == single  # left padding does not change answers
    assert all(a.finish_reason in ("stop", "length") and 1 <= a.tokens <= 8 for a in batched)
    sampled = generate_answers(model, tok, histories, Sampling(temperature=1.0, top_k=5, min_p=0.05, max_tokens=4), False)
    assert all(a.tokens <= 4 for a in sampled)


def test_sampled_answers_depend_on_the_seed_alone(tiny_lm, tmp_path):
    """T = 0.7: the same command gives the same answers, whatever the batch size (a conversation's
    turn t samples with turn_seed(seed, id, t)); another seed gives other answers."""
    model, tok = tiny_lm
    src = tmp_path / "in.jsonl"
    write_convs(src, 6, turns=2)
    sampling = Sampling(temperature=0.7, top_p=0.8, top_k=20, max_tokens=8, seed=3)

    def answers(out: str, batch_size: int, s: Sampling = sampling) -> list[list[dict]]:
        regenerate(src, tmp_path / out, LocalBackend(model, tok, "tiny-random", batch_size), s, thinking=False)
        return [json.loads(line)["messages"] for line in open(tmp_path / out)]

    first = answers("a.jsonl", batch_size=4)
    assert answers("b.jsonl", batch_size=4) == first
    assert answers("c.jsonl", batch_size=1) == first  # rows do not share a random stream
    assert answers("d.jsonl", 4, Sampling(**{**sampling.__dict__, "seed": 4})) != first
    assert json.loads(open(tmp_path / "a.jsonl").readline())["regen"]["sampling"]["seed"] == 3


def test_local_backend_refuses_prompts_beyond_the_context(tiny_lm, tmp_path):
    """prompt + max_tokens over the target's 2,048 positions: an error with both numbers, no answer."""
    model, tok = tiny_lm
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_convs(src, 2, turns=1)
    r = regenerate(src, out, LocalBackend(model, tok, "tiny-random"), Sampling(temperature=0.0, max_tokens=2040),
                   thinking=False)
    assert (r.ok, r.failed) == (0, 2)
    errors = [json.loads(line)["error"] for line in open(errors_path(out))]
    assert all(e.startswith("prompt of ") and "+ max_tokens 2040 = " in e and "context of 2048 tokens" in e
               for e in errors), errors


def test_local_backend_multi_turn(tiny_lm, tmp_path):
    model, tok = tiny_lm
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_convs(src, 5, turns=2)
    backend = LocalBackend(model, tok, "tiny-random", batch_size=2)
    # Sampled: this random model's greedy choice is a special token, an empty answer (refused).
    r = regenerate(src, out, backend, Sampling(temperature=1.0, top_k=0, top_p=1.0, max_tokens=6), thinking=False)
    assert r.ok == 5 and r.failed == 0 and r.tokens > 0
    records = [json.loads(line) for line in open(out)]
    assert [c["id"] for c in records] == ids
    for rec in records:
        roles = [m["role"] for m in rec["messages"] if m["role"] != "system"]
        assert roles == ["user", "assistant", "user", "assistant"]
        assert all(m["content"] != "old answer" for m in rec["messages"])
        assert rec["regen"]["model"] == "tiny-random" and len(rec["regen"]["finish_reasons"]) == 2
    assert r.truncated == sum(rec["regen"]["finish_reason"] == "length" for rec in records)


# -- kill -9 in the middle of a real run -------------------------------------------------------------


def _regen_cmd(src: Path, out: Path, target: Path) -> list[str]:
    code = "from deepspec_cli.main import main; main()"
    return [sys.executable, "-c", code, "data", "regen", "--in", str(src), "--out", str(out), "--target", str(target),
            "--temperature", "0", "--max-tokens", "12", "--batch-size", "4", "--device", "cpu"]


def test_kill_9_then_rerun_equals_uninterrupted_run(tiny_target, tmp_path):
    src = tmp_path / "in.jsonl"
    write_convs(src, 16, turns=2)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    ref, out = tmp_path / "ref.jsonl", tmp_path / "out.jsonl"
    subprocess.run(_regen_cmd(src, ref, tiny_target), check=True, env=env, capture_output=True)

    proc = subprocess.Popen(_regen_cmd(src, out, tiny_target), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = partial_path(out)
    deadline = time.time() + 120
    while time.time() < deadline and (not partial.exists() or len(partial.read_bytes().splitlines()) < 4):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(partial.read_bytes().splitlines())
    assert 4 <= written < 16 and not out.exists()

    done = subprocess.run(_regen_cmd(src, out, tiny_target), check=True, env=env, capture_output=True, text=True)
    assert "already done" in done.stdout
    assert out.read_bytes() == ref.read_bytes()  # no duplicate, no gap, same answers, same order


def test_nothing_finished_is_lost_on_a_rerun(tmp_path):
    """A finished regen rerun with --limit keeps every record (the limit bounds new work); an --out
    made from another input or sampling is refused with the difference, unless overwrite."""
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_convs(src, 8)
    assert regenerate(src, out, FakeBackend(), Sampling(), False).written == 8
    again = regenerate(src, out, FakeBackend(), Sampling(), False, limit=5)
    assert (again.already_done, again.ok, again.written) == (8, 0, 8) and ids_of(out) == ids

    other = tmp_path / "other.jsonl"
    write_convs(other, 1)
    with pytest.raises(DataError, match=r"holds answers regenerated with another input .*in.jsonl → .*other.jsonl") as info:
        regenerate(other, out, FakeBackend(), Sampling(), False)
    assert "--overwrite" in info.value.hint and ids_of(out) == ids  # untouched
    with pytest.raises(DataError, match="another sampling"):
        regenerate(src, out, FakeBackend(), Sampling(temperature=0.0), False)
    fresh = regenerate(other, out, FakeBackend(), Sampling(), False, overwrite=True)
    assert fresh.written == 1 and ids_of(out) == ["c000"]


def test_limit_bounds_new_work_and_an_edited_input_keeps_old_records(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    ids = write_convs(src, 6)
    assert regenerate(src, out, FakeBackend(), Sampling(), False, limit=2).written == 2
    assert regenerate(src, out, FakeBackend(), Sampling(), False, limit=3).written == 5  # 3 more, not 3 in all
    assert ids_of(out) == ids[:5]
