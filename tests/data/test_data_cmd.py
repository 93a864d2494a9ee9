"""`deepspec data show` and the regen option resolution (spec section + CLI overrides)."""

import json

import pytest
from typer.testing import CliRunner

from deepspec_cli.main import app
from deepspec_core.data.regen import resolve_settings
from deepspec_core.errors import SpecError

pytestmark = pytest.mark.integration

CONV = {"id": "s1", "meta": {}, "messages": [
    {"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris is the capital."},
    {"role": "user", "content": "And 1 + 2?"}, {"role": "assistant", "content": "It is 3."}]}


@pytest.fixture
def conv_file(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(CONV) + "\n" + json.dumps(dict(CONV, id="s2")) + "\n")
    return path


def test_show_prints_samples_and_coverage(conv_file, tiny_model_dir):
    res = CliRunner().invoke(app, ["data", "show", str(conv_file), "--target", str(tiny_model_dir), "--n", "1"])
    assert res.exit_code == 0, res.output
    assert "s1" in res.output and "s2" not in res.output
    assert "14 supervised · coverage 1.00" in res.output and "1 of 1 samples usable" in res.output
    assert "warning" not in res.output


def test_show_json_lists_the_supervised_spans_of_each_sample(conv_file, tiny_model_dir, tmp_path):
    empty = {"id": "e", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]}
    conv_file.write_text(conv_file.read_text() + json.dumps(empty) + "\n")
    res = CliRunner().invoke(app, ["data", "show", str(conv_file), "--target", str(tiny_model_dir), "--n", "3", "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert rows[0] == {"id": "s1", "spans": ["Paris is the capital.<|im_end|>", "It is 3.<|im_end|>"],
                       "supervised_tokens": 14, "tokens": 61, "coverage": 1.0, "truncated": False}
    assert rows[1]["id"] == "s2"
    assert rows[2] == {"id": "e", "skipped": "empty assistant answer",
                       "hint": "regenerate the empty answers (`deepspec data regen`); fetch drops them from sources"}


def test_show_warns_when_the_template_drops_answers(conv_file, tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = "{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}\n{% endif %}{% endfor %}"
    tok.save_pretrained(tmp_path / "tok")
    res = CliRunner().invoke(app, ["data", "show", str(conv_file), "--target", str(tmp_path / "tok")])
    assert res.exit_code == 0, res.output
    assert "skipped s1: answer not rendered by the chat template" in res.output
    assert "warning: 2 of 2 skipped" in res.output and "set target.chat_template" in res.output


def test_regen_settings_from_spec_with_cli_overrides():
    s = resolve_settings("tiny-eagle3", None, None, temperature=0.0, servers=[], top_k=None)
    assert s.target == "tiny" and s.thinking is False
    assert (s.regen.temperature, s.regen.top_k, s.regen.top_p) == (0.0, 20, 0.8)  # flag wins, spec fills the rest
    assert resolve_settings(None, "some/model", True, backend="openai", servers=["h:1"]).regen.servers == ["h:1"]
    with pytest.raises(SpecError, match="top_p"):
        resolve_settings(None, "m", None, top_p=2.0)
    with pytest.raises(SpecError, match="no target"):
        resolve_settings(None, None, None)


def test_regen_cli_errors_are_one_line(tmp_path):
    res = CliRunner().invoke(app, ["data", "regen", "--in", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o.jsonl"),
                                   "--target", "x", "--backend", "local"])
    assert res.exit_code == 1 and "does not exist" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["data", "regen", "--in", "a", "--out", "b", "--target", "x", "--backend", "grpc"])
    assert res.exit_code == 2 and "backend" in res.output
