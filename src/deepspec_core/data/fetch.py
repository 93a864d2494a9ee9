"""``data fetch``: a hub dataset or a local file → a conversations JSONL plus a held-out split.

One bad row never stops a fetch: it is dropped and counted under its reason. Exact duplicates
(same messages) are removed. Ids are the source's own when it has them, else a content hash, so a
re-fetch of the same data gives the same ids (regen resumes by id).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepspec_core.data.conversations import BadRow, content_hash, dumps, make_conversation, normalize_row
from deepspec_core.errors import DataError
from deepspec_core.io import atomic_path, atomic_write_json, output_file, sha256_file

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclass
class FetchResult:
    source: str
    out: Path
    heldout: Path | None
    rows_in: int = 0
    kept: int = 0
    train: int = 0
    heldout_count: int = 0
    duplicates: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason → rows
    user_turns: int = 0
    assistant_turns: int = 0
    with_system: int = 0


def heldout_path(out: Path | str) -> Path:
    """``x.jsonl`` → ``x.heldout.jsonl`` (beside the train file)."""
    out = Path(out)
    return out.with_name(f"{out.stem}.heldout{out.suffix or '.jsonl'}")


class _Unreadable:
    """Marker for a source row that could not even be parsed (e.g. a broken JSONL line)."""


def _iter_jsonl(path: Path) -> Iterator[Any]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                yield _Unreadable()


def _iter_json(path: Path) -> Iterator[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON: {err.msg} at line {err.lineno}", "for one record per line use .jsonl") from None
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), None)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records", "or an object holding one list, e.g. {'data': [...]}")
    yield from data


def _iter_parquet(path: Path) -> Iterator[Any]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        yield from batch.to_pylist()


def _iter_hub(source: str, subset: str | None, split: str, streaming: bool) -> Iterator[Any]:
    import datasets

    from deepspec_core.hub import OFFLINE_HINT, hub_reachable

    if not hub_reachable():
        raise DataError(f"cannot fetch dataset {source!r}: the Hugging Face hub is unreachable",
                        f"{OFFLINE_HINT} (a local .jsonl, .json or .parquet file works the same)")

    try:
        ds = datasets.load_dataset(source, subset, split=split, streaming=streaming)
    except Exception as err:  # datasets raises many unrelated types for "not found / offline"
        raise DataError(
            f"cannot load dataset {source!r} (split {split!r}) from the hub: {type(err).__name__}: {err}",
            "check the id, --subset/--split and network access, or pass a local .jsonl/.json/.parquet file",
        ) from err
    yield from ds


def iter_source(source: str, subset: str | None = None, split: str = "train", limit: int | None = None) -> Iterator[Any]:
    """Rows of a local file (by suffix) or a hub dataset id."""
    path = Path(source).expanduser()
    if path.exists():
        if path.suffix == ".jsonl":
            return _iter_jsonl(path)
        if path.suffix == ".json":
            return _iter_json(path)
        if path.suffix == ".parquet":
            return _iter_parquet(path)
        raise DataError(f"{source}: unsupported file type {path.suffix!r}", f"use one of {', '.join(LOCAL_SUFFIXES)}")
    if path.suffix in LOCAL_SUFFIXES or source.startswith((".", "/", "~")):
        raise DataError(f"data file {source} does not exist", "check the path")
    # Streaming avoids downloading a 1.3M-row dataset to take a few rows.
    return _iter_hub(source, subset, split, streaming=limit is not None)


def normalize_rows(rows: Iterable[Any], result: FetchResult, limit: int | None) -> list[dict[str, Any]]:
    """Normalise, drop bad rows (counted by reason), remove exact duplicates, assign unique ids."""
    seen_content: set[str] = set()
    seen_ids: set[str] = set()
    kept: list[dict[str, Any]] = []
    for row in rows:
        if limit is not None and len(kept) >= limit:
            break
        result.rows_in += 1
        if isinstance(row, _Unreadable):
            result.dropped["invalid JSON"] += 1
            continue
        try:
            messages, source_id, meta = normalize_row(row)
        except BadRow as err:
            result.dropped[err.reason] += 1
            continue
        digest = content_hash(messages)
        if digest in seen_content:
            result.duplicates += 1
            continue
        seen_content.add(digest)
        conv_id = source_id if source_id is not None else digest[:16]
        if conv_id in seen_ids:  # same source id, different content: keep both, ids stay unique
            conv_id = f"{conv_id}-{digest[:8]}"
        seen_ids.add(conv_id)
        kept.append(make_conversation(messages, conv_id, meta))
    return kept


def split_heldout(n: int, test_size: float, seed: int) -> set[int]:
    """Indices of the held-out rows: a fraction (< 1) or a count (>= 1), drawn with ``seed``."""
    k = int(round(test_size * n)) if test_size < 1 else int(test_size)
    k = min(k, max(n - 1, 0))
    return set(random.Random(seed).sample(range(n), k)) if k > 0 else set()


def _dump(path: Path, convs: Iterable[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for c in convs:
            f.write(dumps(c))


def provenance_path(out: Path) -> Path:
    return out.with_name(out.name + ".fetch.json")


def _provenance(source: str, subset: str | None, split: str, test_size: float, limit: int | None,
                seed: int) -> dict[str, Any]:
    path = Path(source).expanduser()
    return {"source": source, "source_sha256": sha256_file(path) if path.is_file() else None, "subset": subset,
            "split": split, "test_size": test_size, "limit": limit, "seed": seed}


def _check_outputs(out: Path, record: dict[str, Any], overwrite: bool) -> None:
    """Refuse to replace a train / held-out pair that other inputs or settings made."""
    existing = [p for p in (out, heldout_path(out)) if p.exists()]
    if overwrite or not existing:
        return
    side = provenance_path(out)
    old = json.loads(side.read_text()) if side.is_file() else None
    if old == record:
        return  # the same fetch again: it rewrites the same files
    diffs = "unknown settings (no record of how it was made)" if old is None else ", ".join(
        f"{k} {old.get(k)!r} → {record[k]!r}" for k in record if old.get(k) != record[k])
    raise DataError(
        f"{existing[0]} already holds a fetch made with other inputs: {diffs}",
        "choose another --out, or pass --overwrite to replace the train and held-out files",
    )


def fetch(
    source: str,
    out: Path | str,
    subset: str | None = None,
    split: str = "train",
    test_size: float = 0.05,
    limit: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> FetchResult:
    """Write ``out`` (train) and ``heldout_path(out)`` (held-out), both in source order, as one unit
    (with ``test_size`` 0 a held-out file left from earlier is removed). Raises DataError when they
    exist from another fetch, unless ``overwrite``."""
    if test_size < 0:
        raise DataError(f"--test-size must be >= 0, got {test_size}", "0.05 holds out 5%; 100 holds out 100 rows")
    out = output_file(out, "--out", DataError)
    rows = iter_source(source, subset, split, limit)  # a missing file fails here, before the outputs are checked
    record = _provenance(source, subset, split, test_size, limit, seed)
    _check_outputs(out, record, overwrite)
    result = FetchResult(source=source, out=out, heldout=heldout_path(out) if test_size > 0 else None)
    convs = normalize_rows(rows, result, limit)
    if not convs:
        reasons = ", ".join(f"{r}: {n}" for r, n in result.dropped.most_common(3)) or "the source is empty"
        raise DataError(f"no usable conversation in {source} ({result.rows_in} rows; {reasons})",
                        "expected ShareGPT 'conversations', OpenAI 'messages' or {'turns': [...]} rows")
    if test_size >= 1 and int(test_size) >= len(convs):  # a count: it would leave (almost) nothing to train on
        raise DataError(f"--test-size {int(test_size)} would hold out every row: {source} has {len(convs)} usable "
                        "conversations", "ask for a count below that, or a fraction such as 0.05")
    held = split_heldout(len(convs), test_size, seed)
    result.kept = len(convs)
    result.heldout_count = len(held)
    result.train = len(convs) - len(held)
    for c in convs:
        result.user_turns += sum(m["role"] == "user" for m in c["messages"])
        result.assistant_turns += sum(m["role"] == "assistant" for m in c["messages"])
        result.with_system += c["messages"][0]["role"] == "system"
    # Both files first to temporaries, then renamed together, then the record of how they were made.
    with atomic_path(out) as train_tmp:
        _dump(train_tmp, (c for i, c in enumerate(convs) if i not in held))
        if result.heldout is not None:
            with atomic_path(result.heldout) as held_tmp:
                _dump(held_tmp, (c for i, c in enumerate(convs) if i in held))
        else:  # no held-out split now: one left from an earlier fetch would no longer match
            heldout_path(out).unlink(missing_ok=True)
    atomic_write_json(provenance_path(out), record)
    return result
