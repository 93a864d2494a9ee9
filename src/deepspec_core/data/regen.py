"""``data regen``: regenerate every assistant turn with the target, resumably and in input order.

Multi-turn: system and user turns are kept, the original answers dropped, and an answer is
generated after each user turn, conditioned on the regenerated history. Each conversation is a
small generator (:func:`~deepspec_core.data.backend.conversation_turns`) that yields the prompt of
its next turn and receives the answer, so the batched local backend and the concurrent HTTP backend
drive the same logic. It and the types the three modules share live in ``backend.py``, below them.

Crash safety: finished conversations are appended to ``<out>.partial`` in input order (a
completion that arrives early waits in a buffer), flushed and fsynced. A rerun indexes the ids
already in ``<out>`` and ``<out>.partial`` (cutting a torn last line after ``kill -9``), generates
only the rest — earlier failures included — and finally writes ``<out>`` in input order through an
atomic rename. Failures go to ``<out>.errors.jsonl``.

Nothing finished is lost: ``<out>.regen.json`` records what produced ``<out>`` (input file and its
sha256, sampling, thinking); a rerun with another input, sampling or thinking mode refuses, naming
the difference, unless ``overwrite``. ``limit`` bounds the new conversations a run generates; every
record already written stays (a record whose id the input no longer has is kept at the end).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deepspec_core.data.backend import Backend, Outcome, Sampling
from deepspec_core.data.conversations import dumps, read_conversations
from deepspec_core.errors import DataError
from deepspec_core.io import atomic_path, atomic_write_json, output_file, sha256_file
from deepspec_core.progress import Progress, as_progress

# -- resume and ordered output ---------------------------------------------------------------------


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def errors_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.errors.jsonl")


def _repair_tail(path: Path) -> None:
    """Cut a torn last line (a ``kill -9`` during a write) so appends start on a line boundary."""
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(max(size - 1, 0))
        if f.read(1) == b"\n":
            return
        block = 1 << 16
        pos = size
        while pos > 0:
            start = max(pos - block, 0)
            f.seek(start)
            chunk = f.read(pos - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                f.truncate(start + nl + 1)
                return
            pos = start
        f.truncate(0)


def index_done(paths: list[Path]) -> dict[str, tuple[Path, int, int]]:
    """id → (file, byte offset, length) of every finished record; the first copy of an id wins."""
    done: dict[str, tuple[Path, int, int]] = {}
    for path in paths:
        if not path.exists():
            continue
        _repair_tail(path)
        with open(path, "rb") as f:
            offset = 0
            for lineno, line in enumerate(f, 1):
                try:
                    conv_id = json.loads(line)["id"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise DataError(f"{path}:{lineno} is not a conversation record",
                                    f"move {path} away to regenerate from scratch") from None
                done.setdefault(conv_id, (path, offset, len(line)))
                offset += len(line)
    return done


class OrderedSink:
    """Writes outcomes in sequence order: records to the partial file, errors to the errors file."""

    def __init__(self, partial: Path, errors: Path):
        self.partial = open(partial, "ab")
        self.errors = open(errors, "w", encoding="utf-8")
        self.next_seq = 0
        self.pending: dict[int, tuple[str, Outcome]] = {}
        self.failed = 0

    def put(self, seq: int, conv_id: str, outcome: Outcome) -> None:
        if outcome.record is None:
            # Failures are written at once (their order does not matter), so a run that stops
            # early still reports every failure it saw; only records wait for their turn.
            self.failed += 1
            self.errors.write(json.dumps({"id": conv_id, "error": outcome.error}) + "\n")
            self.errors.flush()
        self.pending[seq] = (conv_id, outcome)
        wrote = False
        while self.next_seq in self.pending:
            _, o = self.pending.pop(self.next_seq)
            if o.record is not None:
                self.partial.write(dumps(o.record).encode())
                wrote = True
            self.next_seq += 1
        if wrote:
            self.partial.flush()
            os.fsync(self.partial.fileno())

    def close(self) -> None:
        self.partial.close()
        self.errors.close()


def _finalize(out: Path, ids: list[str], done: dict[str, tuple[Path, int, int]]) -> int:
    """Write ``out`` from the indexed records (atomic): input order, then any record whose id the
    input does not hold (never dropped). Returns the records written."""
    handles: dict[Path, Any] = {}
    n = 0
    known = set(ids)
    order = [*ids, *(i for i in done if i not in known)]
    try:
        with atomic_path(out) as tmp, open(tmp, "wb") as f:
            for conv_id in order:
                if conv_id not in done:
                    continue
                path, offset, length = done[conv_id]
                src = handles.get(path) or handles.setdefault(path, open(path, "rb"))
                src.seek(offset)
                f.write(src.read(length))
                n += 1
            f.flush()
            os.fsync(f.fileno())
    finally:
        for h in handles.values():
            h.close()
    return n


@dataclass
class RegenResult:
    out: Path
    total: int = 0  # conversations in the input (after --limit)
    already_done: int = 0
    ok: int = 0
    failed: int = 0
    truncated: int = 0
    tokens: int = 0
    seconds: float = 0.0
    written: int = 0
    errors: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def provenance_path(out: Path) -> Path:
    return out.with_name(out.name + ".regen.json")


def _provenance(in_path: Path, sampling: Sampling, thinking: bool, model: str) -> dict[str, Any]:
    return {"input": str(in_path), "input_sha256": sha256_file(in_path), "model": model,
            "sampling": asdict(sampling), "thinking": thinking}


def _check_provenance(out: Path, record: dict[str, Any], overwrite: bool) -> None:
    """Refuse to mix answers made from another input or another sampling into ``out``."""
    path = provenance_path(out)
    if overwrite:
        for p in (out, partial_path(out), errors_path(out), path):
            p.unlink(missing_ok=True)
        return
    if not path.is_file() or not (out.exists() or partial_path(out).exists()):
        return
    old = json.loads(path.read_text())
    diffs = [k for k in ("input_sha256", "sampling", "thinking") if old.get(k) != record[k]]
    if diffs:
        what = "input" if "input_sha256" in diffs else " and ".join(diffs)
        raise DataError(
            f"{out} holds answers regenerated with another {what} ({old.get('input')} → {record['input']}); "
            "rerunning would mix or replace them",
            "choose another --out, or pass --overwrite to regenerate it from scratch",
        )


def regenerate(
    in_path: Path | str,
    out_path: Path | str,
    backend: Backend,
    sampling: Sampling,
    thinking: bool,
    limit: int | None = None,
    progress: Progress | bool | None = None,
    overwrite: bool = False,
) -> RegenResult:
    """Regenerate the answers of ``in_path`` into ``out_path``; rerun the same call to resume.

    ``limit`` bounds the conversations generated by this run; ``overwrite`` discards earlier
    output; ``progress`` gets a stage over the conversations to generate, with tokens/s
    (:mod:`deepspec_core.progress`). Raises DataError when ``out_path`` was made from another
    input or sampling."""
    in_path, out = Path(in_path), Path(out_path)
    if in_path.resolve() == out.resolve():
        raise DataError(f"--out {out} is the input file", "write the regenerated conversations to a new file")
    ids = [c["id"] for c in read_conversations(in_path)]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataError(f"{in_path}: conversation id {dup!r} occurs more than once", "regen resumes by id; ids must be unique")
    out.parent.mkdir(parents=True, exist_ok=True)
    record = _provenance(in_path, sampling, thinking, backend.model_name)
    _check_provenance(out, record, overwrite)
    partial, errors = partial_path(out), errors_path(out)
    done = index_done([out, partial])
    already = sum(i in done for i in ids)
    todo = len(ids) - already if limit is None else min(limit, len(ids) - already)
    result = RegenResult(out=out, total=already + todo, already_done=already)
    jobs_convs: dict[int, str] = {}

    def jobs() -> Iterator[tuple[int, dict[str, Any]]]:
        seq = 0
        for conv in read_conversations(in_path):
            if seq >= todo:
                return
            if conv["id"] not in done:
                jobs_convs[seq] = conv["id"]
                yield seq, conv
                seq += 1

    sink = OrderedSink(partial, errors)
    start = time.perf_counter()
    try:
        with as_progress(progress).stage("regen", total=todo, unit="conv") as stage:
            for seq, outcome in backend.run(jobs(), sampling, thinking):
                sink.put(seq, jobs_convs.pop(seq), outcome)
                if outcome.record is not None:
                    result.ok += 1
                    result.tokens += outcome.tokens
                    result.truncated += outcome.truncated
                # Tokens/s is what a target or its servers are judged by; failures must not hide in a log.
                stage.advance(1, tok_s=result.tokens / max(time.perf_counter() - start, 1e-9),
                              failed=sink.failed or None)
    finally:
        sink.close()
        result.seconds = time.perf_counter() - start
    result.failed = sink.failed
    atomic_write_json(provenance_path(out), record)
    result.written = _finalize(out, ids, index_done([out, partial]))
    partial.unlink(missing_ok=True)
    if result.failed:
        result.errors = errors
    else:
        errors.unlink(missing_ok=True)
    return result


# -- entry point used by the CLI -------------------------------------------------------------------


@dataclass
class RegenSettings:
    target: str
    thinking: bool
    regen: Any  # deepspec_core.spec.RegenSpec
    revision: str | None = None
    chat_template: str | None = None
    dtype: str = "auto"


def resolve_settings(spec: str | None, target: str | None, thinking: bool | None, **overrides: Any) -> RegenSettings:
    """Options from a spec's ``data.regen`` (or the defaults), with every non-None CLI value on top."""
    from pydantic import ValidationError

    from deepspec_core.errors import SpecError
    from deepspec_core.spec import RegenSpec, load_spec

    run = load_spec(spec) if spec else None
    base = run.data.regen if run else RegenSpec()
    given = {k: v for k, v in overrides.items() if v is not None and v != []}
    try:
        regen = RegenSpec.model_validate({**base.model_dump(), **given})
    except ValidationError as err:
        first = err.errors()[0]
        field_name = ".".join(str(p) for p in first["loc"])
        raise SpecError(f"data.regen.{field_name}: {first['msg']}", f"fix --{field_name.replace('_', '-')}") from None
    model = target or (run.target.model if run else None)
    if not model:
        raise SpecError("no target given", "pass --target MODEL (or 'tiny'), or --spec with target.model")
    think = thinking if thinking is not None else (run.target.thinking if run else False)
    # the spec's target settings apply only to the target it names
    same_target = run.target if run is not None and model == run.target.model else None
    return RegenSettings(
        target=model,
        thinking=think,
        regen=regen,
        revision=same_target.revision if same_target else None,
        chat_template=same_target.chat_template if same_target else None,
        dtype=same_target.dtype if same_target else "auto",
    )


def run_regen(
    in_path: Path | str,
    out_path: Path | str,
    settings: RegenSettings,
    limit: int | None = None,
    device: str = "auto",
    progress: Progress | bool | None = None,
    warn: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> RegenResult:
    """Build the backend the settings ask for (load the target, or probe the servers) and
    regenerate; an output made from another input or sampling is refused before anything loads."""
    regen = settings.regen
    if not Path(in_path).is_file():
        why = "is not a regular file" if Path(in_path).exists() else "does not exist"
        raise DataError(f"input file {in_path} {why}", "create it with `deepspec data fetch`")
    output_file(out_path, "--out", DataError)
    sampling = Sampling.from_spec(regen)
    _check_provenance(Path(out_path), _provenance(Path(in_path), sampling, settings.thinking, settings.target), overwrite)
    backend: Backend
    if regen.backend == "openai":
        from deepspec_core.data.openai_client import OpenAIBackend

        backend = OpenAIBackend(regen.servers, regen.concurrency, regen.request_timeout, regen.max_retries,
                                served_model=regen.served_model)
        backend.probe()
        for line in backend.warnings:
            if warn:
                warn(line)
    else:
        from deepspec_core.targets.hf import load_target

        t = load_target(settings.target, revision=settings.revision, dtype=settings.dtype, device=device,
                        chat_template=settings.chat_template)
        from deepspec_core.data.local_backend import LocalBackend

        backend = LocalBackend(t.model, t.tokenizer, settings.target, regen.batch_size)
    return regenerate(in_path, out_path, backend, sampling, settings.thinking, limit, progress)
