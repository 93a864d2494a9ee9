"""The run spec: one pydantic model that drives every stage.

Every field has a description (it is the CLI help and the docs), every model forbids unknown
fields, and the draft section is a discriminated union on ``algo``. Derived quantities
(accumulation steps, warmup steps, total steps) are computed in :func:`derive_schedule` and
nowhere else.
"""

from __future__ import annotations

import difflib
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SerializeAsAny, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from deepspec_core import paths
from deepspec_core.errors import SpecError
from deepspec_core.registry import Registry
from deepspec_core.specbase import DraftSpecBase, Section, check_draft_length

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


_Section = Section


# --------------------------------------------------------------------------------------------
# target / data / cache
# --------------------------------------------------------------------------------------------


class TargetSpec(_Section):
    model: str = Field("tiny", description="Hub id or local directory of the frozen target; 'tiny' is the embedded tiny target.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of the target.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Dtype the target runs in; 'auto' is bfloat16 on GPU and float32 on CPU."
    )
    layer_ids: list[int] = Field(
        [1, 9, 17, 25, 33],
        description="Decoder layers whose outputs (residual stream after the layer, counted from 0) feed the draft.",
    )
    thinking: bool = Field(False, description="Render chats with thinking mode on (Qwen3-style templates).")
    chat_template: str | None = Field(
        None, description="Path of a Jinja chat template that replaces the tokenizer's own."
    )
    mask_token_id: int | None = Field(
        None, ge=0, description="Token id used for the mask slots of block drafters (an unused embedding row)."
    )
    trust_remote_code: bool = Field(False, description="Allow custom modelling code from the target repository.")

    @field_validator("layer_ids")
    @classmethod
    def _layers_sorted(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("must list at least one layer id, e.g. [1, 9, 17]")
        if any(i < 0 for i in v):
            raise ValueError(f"layer ids count from 0; got {v}")
        if sorted(set(v)) != v:
            raise ValueError(f"layer ids must be strictly increasing; got {v}")
        return v


class RegenSpec(_Section):
    backend: Literal["local", "openai"] = Field("local", description="'local' runs transformers in-process; 'openai' calls OpenAI-compatible servers.")
    servers: list[str] = Field([], description="Base URLs of OpenAI-compatible servers (round-robin), e.g. http://host:8000.")
    served_model: str | None = Field(None, description="Model name to send to the servers; default: the first model they list.")
    concurrency: int = Field(64, ge=1, description="Requests in flight at once over all servers (openai backend).")
    batch_size: int = Field(16, ge=1, description="Conversations generated together (local backend).")
    temperature: float = Field(0.7, ge=0.0, description="Sampling temperature for regenerated answers.")
    top_p: float = Field(0.8, gt=0.0, le=1.0, description="Nucleus sampling threshold.")
    top_k: int = Field(20, ge=0, description="Top-k sampling (0 disables).")
    min_p: float = Field(0.0, ge=0.0, le=1.0, description="Min-p sampling threshold (0 disables).")
    max_tokens: int = Field(4096, ge=1, description="Maximum new tokens per assistant turn.")
    seed: int = Field(
        0, description="Sampling seed: each answer samples with a seed derived from (seed, conversation id, turn)."
    )
    request_timeout: float = Field(600.0, gt=0, description="Seconds before one HTTP request is abandoned and retried.")
    max_retries: int = Field(5, ge=0, description="Retries per request on timeouts, connection errors and 5xx.")


class DataSpec(_Section):
    source: str = Field("mlabonne/open-perfectblend", description="Prompt source for `data fetch`: hub dataset id or local file.")
    train: list[str] = Field([], description="Conversation files (JSONL, docs/data.md) the draft trains on.")
    eval: list[str] = Field(
        [],
        description="Held-out conversations to validate on (their first train.val_samples); cached with the training data "
        "and never trained on. Default: none, validation holds back the last train.val_samples training samples.",
    )
    max_length: int = Field(4096, ge=8, description="Tokens per training sample; longer conversations are truncated.")
    min_loss_tokens: int = Field(8, ge=1, description="Samples with fewer supervised tokens are skipped.")
    drop_truncated: bool = Field(
        False,
        description="Skip conversations with an answer cut by max_tokens (default: keep them, with no end-of-turn token supervised).",
    )
    regen: RegenSpec = Field(default_factory=RegenSpec, description="How answers are regenerated by the target.")


class CacheSpec(_Section):
    path: str | None = Field(None, description="Feature cache directory; default: <output.root>/<project>/features.")
    # Lossless by default: fp8-zstd cost 2.1% of greedy τ on SmolLM2 (+0.2% on the tiny target), above
    # the 1% we accept for a default (docs/cache.md, "What the lossy codec costs in accepted length").
    codec: str = Field("bf16-zstd", description="Codec of the feature shards (see `deepspec data cache --help`).")
    online: bool = Field(False, description="Skip the cache: run the target inside training to produce features.")
    allow_stale: bool = Field(
        False, description="Train on a cache whose target weights or training files changed since it was built."
    )
    shard_size_mb: int = Field(256, ge=1, description="Approximate size of one shard file in MB.")
    batch_size: int = Field(8, ge=1, description="Sequences per target forward pass when writing the cache.")


# --------------------------------------------------------------------------------------------
# drafts: each algorithm's spec lives in its own file (drafts/<algo>.py) and is found by `algo`
# --------------------------------------------------------------------------------------------

DEFAULT_ALGO = "dspark"


def draft_spec_class(algo: str) -> type[DraftSpecBase]:
    """The spec class of a registered draft algorithm (importing the drafts registers them)."""
    from deepspec_core.drafts import DRAFTS

    return DRAFTS.get(algo).spec_class


def algorithms() -> list[str]:
    """Registered draft algorithms in registration order (the order demos and tables use)."""
    from deepspec_core.drafts import DRAFTS

    return DRAFTS.registered()


# --------------------------------------------------------------------------------------------
# train / eval / output
# --------------------------------------------------------------------------------------------


class TrainSpec(_Section):
    lr: float = Field(6e-4, gt=0.0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas (the reference: torch's default).")
    warmup_ratio: float = Field(0.04, ge=0.0, lt=1.0, description="Fraction of steps with linear warmup.")
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="Cosine schedule floor as a fraction of lr.")
    grad_clip: float = Field(1.0, ge=0.0, description="Gradient-norm clip (0 disables).")
    global_batch_size: int = Field(512, ge=1, description="Sequences per optimizer step over all processes.")
    micro_batch_size: int = Field(1, ge=1, description="Sequences per forward pass on one process.")
    epochs: int = Field(10, ge=1, description="Passes over the training data.")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; overrides epochs when set.")
    save_every: int = Field(1000, ge=1, description="Checkpoint every N optimizer steps (and at the end).")
    keep_last: int = Field(3, ge=1, description="Checkpoints kept; older ones are deleted.")
    log_every: int = Field(10, ge=1, description="Log metrics every N optimizer steps.")
    val_every: int = Field(500, ge=1, description="Validate every N optimizer steps (and at the end).")
    val_samples: int = Field(64, ge=0, description="Held-out sequences used for validation.")
    mixed_precision: Literal["auto", "bf16", "no"] = Field("auto", description=(
        "'auto' is bf16 autocast on GPU, fp32 on CPU. 'bf16' on a CPU pays only where it multiplies bf16 "
        "natively (AVX512-BF16 / AMX): elsewhere a step is ~12x slower than fp32 (docs/hardware.md)."
    ))
    fused_losses: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Triton fused vocabulary losses: 'auto' uses them on CUDA when triton is installed; 'on' requires them "
        "(CUDA, or CPU with TRITON_INTERPRET=1 for testing); 'off' keeps the eager torch losses.",
    )
    attention: Literal["auto", "sdpa", "flex"] = Field(
        "auto",
        description="Draft attention: 'flex' runs each mask as a flex-attention block mask (masked-out blocks are never "
        "computed; Eagle3's TTT and the block drafters' masks are mostly empty); 'sdpa' is dense; 'auto' is flex on CUDA.",
    )
    compile: bool = Field(
        False,
        description="torch.compile the draft's decoder layers (the first steps pay the compilation: ~40 s on a CPU).",
    )
    loss_memory_mb: int = Field(
        1024,
        ge=0,
        description="Memory the vocabulary losses may keep for backward (draft logits and softmax, the target's view); "
        "above it they are recomputed chunk by chunk in backward (more FLOPs, far less memory at 150k-token vocabularies).",
    )
    distributed: Literal["ddp", "fsdp"] = Field("ddp", description="Data parallelism strategy over processes.")
    num_workers: int = Field(2, ge=0, description="DataLoader workers decoding cache shards.")
    tensorboard: bool = Field(True, description="Write TensorBoard event files when tensorboard is installed.")
    wandb: bool = Field(False, description="Log to Weights & Biases (needs wandb installed and logged in).")


REFERENCE_BENCHMARKS = [
    "gsm8k", "math500", "aime25", "humaneval", "mbpp", "livecodebench", "mt-bench", "alpaca", "arena-hard-v2",
]


class EvalSpec(_Section):
    benchmarks: list[str] = Field(list(REFERENCE_BENCHMARKS), description="Benchmarks to evaluate on.")
    temperature: float = Field(1.0, ge=0.0, description="Sampling temperature; 0 is greedy.")
    max_new_tokens: int = Field(2048, ge=1, description="New tokens per turn.")
    num_draft_tokens: int | None = Field(
        None, ge=1, description="Tokens drafted per round; default: the draft's block size or TTT length."
    )
    limit: int | None = Field(None, ge=1, description="Samples per benchmark; default: the benchmark's own count.")
    data_dir: str | None = Field(None, description="Directory with <benchmark>.jsonl prompt files ({'turns': [...]}).")
    seed: int = Field(0, description="Sampling seed (sample i decodes with seed + i); subsets use the reference's fixed seed.")
    all_turns: bool = Field(
        False, description="Decode every user turn (mt-bench's second); default: the first user turn only, as the reference."
    )


class OutputSpec(_Section):
    root: str | None = Field(
        None, description="Root of run directories; default: $DEEPSPEC_HOME/checkpoints, else ~/checkpoints."
    )


class RunSpec(_Section):
    name: str = Field("run", min_length=1, description="Run name: the run directory is <output.root>/<project>/<name>.")
    project: str = Field("deepspec", min_length=1, description="Project folder grouping runs.")
    seed: int = Field(0, description="Seed of initialisation and data order.")
    target: TargetSpec = Field(default_factory=TargetSpec, description="The frozen target model.")
    data: DataSpec = Field(default_factory=DataSpec, description="Training data.")
    cache: CacheSpec = Field(default_factory=CacheSpec, description="Feature cache.")
    draft: SerializeAsAny[DraftSpecBase] = Field(
        default_factory=lambda: draft_spec_class(DEFAULT_ALGO).model_validate({}),
        description="The draft model; `algo` picks the algorithm (its fields are documented in docs/algorithms.md).",
    )
    train: TrainSpec = Field(default_factory=TrainSpec, description="Optimisation.")
    eval: EvalSpec = Field(default_factory=EvalSpec, description="Evaluation protocol.")
    output: OutputSpec = Field(default_factory=OutputSpec, description="Where runs are written.")

    @field_validator("draft", mode="before")
    @classmethod
    def _draft_of_its_algo(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        algo = value.get("algo", DEFAULT_ALGO)
        from deepspec_core.drafts import DRAFTS

        if algo not in DRAFTS:
            raise PydanticCustomError("unknown_algo", "unknown algo '{algo}'", {"algo": algo})
        return draft_spec_class(algo).model_validate({**value, "algo": algo})

    @model_validator(mode="after")
    def _cross_checks(self) -> RunSpec:
        if self.train.global_batch_size % self.train.micro_batch_size:
            raise ValueError(
                f"train.global_batch_size ({self.train.global_batch_size}) must be a multiple of "
                f"train.micro_batch_size ({self.train.micro_batch_size})"
            )
        if self.eval.num_draft_tokens is not None:
            check_draft_length(self.eval.num_draft_tokens, self.draft.max_k(), self.draft.algo)
        return self

    # -- resolved paths -----------------------------------------------------------------------
    def output_root(self) -> Path:
        return Path(self.output.root).expanduser() if self.output.root else paths.default_output_root()

    def run_dir(self) -> Path:
        return self.output_root() / self.project / self.name

    def cache_dir(self) -> Path:
        if self.cache.path:
            return Path(self.cache.path).expanduser()
        return self.output_root() / self.project / "features"

    def num_draft_tokens(self) -> int:
        """Chain length at decode time: eval.num_draft_tokens, else the draft's default."""
        return self.eval.num_draft_tokens or self.draft.default_k()


# --------------------------------------------------------------------------------------------
# derived values: computed here and only here
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    grad_accum_steps: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


def derive_schedule(train: TrainSpec, num_samples: int, world_size: int = 1) -> Schedule:
    """Accumulation, steps and warmup for ``num_samples`` training sequences on ``world_size`` processes."""
    per_pass = train.micro_batch_size * world_size
    if train.global_batch_size % per_pass:
        raise SpecError(
            f"train.global_batch_size ({train.global_batch_size}) is not a multiple of "
            f"micro_batch_size × processes ({train.micro_batch_size} × {world_size})",
            "change train.global_batch_size or train.micro_batch_size",
        )
    if num_samples < 1:
        raise SpecError("there are no training samples", "check data.train / the feature cache")
    steps_per_epoch = max(1, num_samples // train.global_batch_size)
    total = train.max_steps or steps_per_epoch * train.epochs
    return Schedule(
        grad_accum_steps=train.global_batch_size // per_pass,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        warmup_steps=math.ceil(train.warmup_ratio * total),
    )


def check_registered(spec: RunSpec) -> None:
    """Fields whose valid values live in a registry (cache codec, benchmarks), checked without
    loading anything. Raises SpecError naming the field and listing the valid names."""
    from deepspec_core.cache.codecs import CODECS
    from deepspec_core.eval.benchmarks import BENCHMARKS

    checks: list[tuple[str, str, Registry[Any]]] = [
        ("cache.codec", spec.cache.codec, CODECS),
        *(("eval.benchmarks", b, BENCHMARKS) for b in spec.eval.benchmarks),
    ]
    for field, value, registry in checks:
        if value not in registry:
            raise SpecError(f"{field}: unknown {registry.kind} {value!r}", f"choose one of: {', '.join(registry.names())}")


def check_against_target(spec: RunSpec, target_config: Any) -> None:
    """Checks that need the target's config — layer ids vs depth, mask token and draft vocabulary
    vs the vocabulary — run where the config is first known, before anything is written.

    Raises SpecError naming the field, the value and the target's limit."""
    cfg = target_config.get_text_config() if hasattr(target_config, "get_text_config") else target_config
    num_hidden_layers, vocab_size = int(cfg.num_hidden_layers), int(cfg.vocab_size)
    bad = [i for i in spec.target.layer_ids if i >= num_hidden_layers]
    if bad:
        raise SpecError(
            f"target.layer_ids {bad} are beyond the target's depth ({num_hidden_layers} decoder layers)",
            f"use ids in 0..{num_hidden_layers - 1}",
        )
    if spec.target.mask_token_id is not None and spec.target.mask_token_id >= vocab_size:
        raise SpecError(
            f"target.mask_token_id {spec.target.mask_token_id} is outside the target's vocabulary ({vocab_size} tokens)",
            f"pick an unused token id below {vocab_size}",
        )
    check_init_layers(spec, target_config, cfg)
    dv = spec.draft.draft_vocab_size
    if dv is not None and dv > vocab_size:
        raise SpecError(
            f"draft.draft_vocab_size {dv} exceeds the target's vocabulary ({vocab_size} tokens)",
            f"use at most {vocab_size}, or leave it unset for the full vocabulary",
        )


def check_init_layers(spec: RunSpec, target_config: Any, cfg: Any) -> None:
    """``draft.init_layers`` must name one existing target layer per draft layer, of a family whose
    layers the draft reuses with the target's widths (else the weights do not fit). ``cfg`` is the
    text part of ``target_config``."""
    ids = getattr(spec.draft, "init_layers", None)
    if not ids:
        return
    from deepspec_core.drafts.layers import family_of

    depth = int(cfg.num_hidden_layers)
    if len(ids) != spec.draft.num_layers:
        raise SpecError(
            f"draft.init_layers has {len(ids)} ids for {spec.draft.num_layers} draft layers",
            "give one target layer id per draft layer",
        )
    bad = [i for i in ids if not 0 <= i < depth]
    if bad:
        raise SpecError(f"draft.init_layers {bad} are outside the target's layers 0..{depth - 1}",
                        f"use ids in 0..{depth - 1}")
    if not family_of(target_config).native:
        raise SpecError(
            f"draft.init_layers needs the draft to reuse the target's layers, but {cfg.model_type!r} targets get "
            "Qwen3 stand-in layers",
            "leave draft.init_layers unset for this target",
        )
    width = spec.draft.intermediate_size
    if width is not None and width != int(cfg.intermediate_size):
        raise SpecError(
            f"draft.init_layers copies the target's MLP (width {cfg.intermediate_size}), but draft.intermediate_size "
            f"is {width}",
            "unset draft.intermediate_size, or unset draft.init_layers",
        )


# --------------------------------------------------------------------------------------------
# loading, overrides, TOML
# --------------------------------------------------------------------------------------------


def _format_validation_error(err: ValidationError, source: str, data: dict[str, Any]) -> SpecError:
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    field = ".".join(loc) or "(spec)"
    msg = first["msg"]
    hint = None
    if first["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1], data)
        known = list(parent.model_fields) if parent else []
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else (f"known fields: {', '.join(known)}" if known else None)
        msg = "unknown field"
    elif first["type"] == "unknown_algo":
        field = "draft.algo"
        hint = f"choose one of: {', '.join(algorithms())}"
    elif first["type"] == "value_error":  # our validators' own words; across fields they name the fields
        msg = msg.removeprefix("Value error, ")
    elif "input" in first and not isinstance(first["input"], (dict, list)):
        msg = f"{msg} (got {first['input']!r})"
    extra = f" [+{len(err.errors()) - 1} more]" if len(err.errors()) > 1 else ""
    where = f"{field}: " if loc or first["type"] != "value_error" else ""
    return SpecError(f"{source}: {where}{msg}{extra}", hint)


def _model_at(loc: list[str], data: Any) -> type[BaseModel] | None:
    """The section model at ``loc`` (the draft's class is read from the data's ``algo``)."""
    model: type[BaseModel] = RunSpec
    for part in loc:
        field = model.model_fields.get(part)
        if field is None:
            return None
        data = data.get(part, {}) if isinstance(data, dict) else {}
        if part == "draft":
            model = draft_spec_class(data.get("algo", DEFAULT_ALGO))
            continue
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return None
    return model


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=value`` → (['a', 'b'], value parsed as TOML, or the raw string if it is not TOML)."""
    if "=" not in item:
        raise SpecError(f"override {item!r} has no '='", "write --set section.field=value, e.g. --set train.lr=3e-4")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise SpecError(f"override {item!r} has an empty field name", "write --set section.field=value")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError as err:
        if raw.startswith(("[", "{", '"', "'")):  # meant as TOML, but broken: usually unquoted strings
            example = '--set \'data.train=["data/x.jsonl"]\'' if raw.startswith("[") else "--set 'a.b=\"text\"'"
            raise SpecError(
                f"--set {key}: {raw} is not valid TOML ({err.args[0] if err.args else err})",
                f"quote each string inside it and the whole argument for the shell, e.g. {example}",
            ) from None
        value = raw  # a bare word: the string itself (--set target.model=tiny)
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        if path == ["draft", "algo"] and isinstance(data.get("draft"), dict) and data["draft"].get("algo") != value:
            # Switching algorithm: fields of the old algorithm would be unknown to the new one.
            data["draft"] = {}
        node = data
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise SpecError(f"override {item!r}: '{part}' is a value, not a section")
            node = nxt
        node[path[-1]] = value
    return data


def spec_from_dict(data: dict[str, Any], source: str = "spec") -> RunSpec:
    try:
        return RunSpec.model_validate(data)
    except ValidationError as err:
        raise _format_validation_error(err, source, data) from err
    except SpecError as err:  # a cross-check that raised its own message
        raise SpecError(f"{source}: {err.message}", err.hint) from None


def load_spec(path_or_preset: str | Path, overrides: list[str] | None = None) -> RunSpec:
    """Load a preset name or a TOML file, apply ``--set`` overrides, validate."""
    from deepspec_core import presets

    name = str(path_or_preset)
    path = Path(name).expanduser()
    if path.suffix == ".toml" or path.exists():
        if path.is_dir():
            raise SpecError(f"spec {name} is a directory", "give a .toml spec file, or a preset name")
        if not path.is_file():
            raise SpecError(f"spec file {name} does not exist", f"presets: {', '.join(presets.names())}")
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise SpecError(f"{name} is not valid TOML: {err}") from err
        source = name
    else:
        data = presets.data(name)
        source = f"preset {name}"
    data = apply_overrides(data, overrides or [])
    return spec_from_dict(data, source if not overrides else f"{source} with --set")


def spec_to_toml(spec: RunSpec) -> str:
    import tomli_w

    return tomli_w.dumps(spec.model_dump(mode="json", exclude_none=True))


def save_spec(spec: RunSpec, path: Path) -> None:
    from deepspec_core.io import atomic_write_text

    atomic_write_text(path, spec_to_toml(spec))
