"""``train(spec, runtime) → TrainResult``: the training loop, top to bottom.

Numerics: the draft's parameters are fp32 (master weights) and gradients accumulate in fp32 over
the micro-steps of a global batch; bf16 is used only inside autocast (on GPU by default). Each
micro-batch's loss is divided by the number of micro-steps so that the update is the mean over
the global batch whatever the process count. Randomness inside a forward pass (e.g. anchor
sampling) is seeded from (seed, step, micro-batch index in the global batch), so results do not
depend on how many processes share the batch, and resuming is exact.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from deepspec_core.distributed import (
    DistEnv,
    detect_env,
    init_distributed,
    leaving_process_group,
    pick_device,
)
from deepspec_core.drafts.base import FROZEN_PREFIXES
from deepspec_core.errors import CheckpointError, DeepspecError
from deepspec_core.hardware import cpu_has_fast_bf16
from deepspec_core.progress import Progress, as_progress
from deepspec_core.runs import RunDir, checkpoint_config, load_weights
from deepspec_core.spec import RunSpec, Schedule, TrainSpec, derive_schedule
from deepspec_core.train import checkpoint as ckpt
from deepspec_core.train.data import (
    DataPlan,
    TrainParts,
    build_parts,
    init_vocab_mapping,
    val_batches,
)
from deepspec_core.train.launch import StopRequest
from deepspec_core.train.metrics import MetricsLogger, metrics_of, pooled_metrics


@dataclass
class Runtime:
    """How (not what) to run: the process environment and the knobs a caller or test may turn."""

    env: DistEnv | None = None  # default: detected from the environment (torchrun, accelerate, SLURM)
    device: str = "auto"
    fresh: bool = False
    # Where the training stage reports (deepspec_core.progress): None, the CLI's renderer if any;
    # False, nothing. Only the main process reports.
    progress: Progress | bool | None = None
    say: Callable[[str], None] = print  # one-line notes for a user (main process only)
    # End (with a checkpoint) after this many optimizer steps, as a preemption would.
    stop_after: int | None = None


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    total_steps: int
    resumed_from: int | None
    finished: bool
    checkpoint: Path | None
    val: dict[str, Any] = field(default_factory=dict)  # last validation metrics
    val_step: int | None = None  # the step they were measured at
    stopped_by: str | None = None  # the signal that stopped the run early (SIGINT, SIGTERM, ...)
    train_tokens_per_s: float = 0.0
    minutes: float = 0.0


def lr_at(step: int, sched: Schedule, train: TrainSpec) -> float:
    """Linear warmup to ``train.lr``, then cosine down to ``min_lr_ratio · lr`` at the last step."""
    if step < sched.warmup_steps:
        return train.lr * (step + 1) / sched.warmup_steps
    span = max(1, sched.total_steps - sched.warmup_steps)
    progress = min(1.0, (step - sched.warmup_steps) / span)
    floor = train.min_lr_ratio
    return train.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def _micro_seed(seed: int, step: int, index: int) -> int:
    return (seed * 1_000_003 + step) * 10_007 + index


def _autocast(spec: RunSpec, device: torch.device) -> contextlib.AbstractContextManager:
    mp = spec.train.mixed_precision
    if mp == "bf16" or (mp == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _wrap(draft: nn.Module, spec: RunSpec, env: DistEnv, device: torch.device) -> nn.Module:
    """DDP (default) or FSDP2 over the draft; its ``forward`` is ``forward_train``, so the hooks run."""
    if not env.distributed:
        return draft
    if spec.train.distributed == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        bf16 = device.type == "cuda" and spec.train.mixed_precision != "no"
        mp = (
            MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            if bf16
            else MixedPrecisionPolicy()
        )
        # One group over the whole draft: drafts are a few layers, and some call layer methods other
        # than forward (DFlash projects context keys/values), which per-layer groups would not unshard.
        # What FSDP saves here is the sharded optimizer state and gradients. The frozen target
        # embedding / lm_head stay whole on every process (no all-gather of the vocabulary each step).
        kw: dict[str, Any] = {}
        if "ignored_params" in inspect.signature(fully_shard).parameters:
            kw["ignored_params"] = {p for p in draft.parameters() if not p.requires_grad}
        return cast(nn.Module, fully_shard(draft, mp_policy=mp, **kw))
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    # Buffers (rotary tables, vocabulary maps) are equal on every process: no per-forward sync.
    if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters:
        return DDP(draft, device_ids=ids, forward_sync_buffers=False)
    return DDP(draft, device_ids=ids, broadcast_buffers=False)


def _no_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient all-reduce on all but the last micro-step (gradients accumulate locally)."""
    if sync:
        return contextlib.nullcontext()
    wrapped: Any = model  # DDP / FSDP2 methods, not in nn.Module's type
    if hasattr(wrapped, "no_sync"):
        return wrapped.no_sync()
    if hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2
        wrapped.set_requires_gradient_sync(False)
        return contextlib.nullcontext()
    return contextlib.nullcontext()


def validate(
    parts: TrainParts, model: nn.Module, spec: RunSpec, env: DistEnv, device: torch.device
) -> dict[str, Any]:
    """Draft metrics (loss, per-position acceptance, τ estimates) pooled over the held-out slice."""
    if parts.num_val == 0:
        return {}
    records = []
    model.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
        for i, idx in enumerate(
            val_batches(list(range(parts.num_val)), spec.train.micro_batch_size, env.rank, env.world_size)
        ):
            torch.manual_seed(_micro_seed(spec.seed, -1, i))  # the same anchors at every validation
            with _autocast(spec, device):
                records.append(metrics_of(model(parts.val_batch(idx).to(device))))
    model.train()
    return pooled_metrics(records, env, device)


def train(spec: RunSpec, runtime: Runtime | None = None) -> TrainResult:
    """Train (or resume) the run of ``spec``; every process of a multi-process run calls this."""
    rt = runtime or Runtime()
    env = rt.env or detect_env()
    device = pick_device(env, rt.device)
    with leaving_process_group(init_distributed(env, device)):
        try:
            return _train(spec, rt, env, device)
        except Exception as exc:
            if not isinstance(exc, DeepspecError) and spec.run_dir().is_dir():
                exc.log_dir = spec.run_dir()  # type: ignore[attr-defined]  # the CLI's crash log goes beside the run
            raise


def _train(spec: RunSpec, rt: Runtime, env: DistEnv, device: torch.device) -> TrainResult:
    say = rt.say if env.is_main else (lambda _msg: None)
    t_start = time.time()

    # 1. Check the run directory (resume, or refuse a changed spec) without writing: a start that
    # fails on its data or target must not claim the directory for the corrected command.
    _, resume_from = ckpt.prepare_run_dir(spec, fresh=rt.fresh, write=False)

    # 2. Data, target pieces and the draft. Every process builds the same initial weights.
    torch.manual_seed(spec.seed)
    parts = build_parts(spec, device, say)

    if resume_from is None:
        # A reduced draft vocabulary comes from the training data, before step 0 (a resumed run
        # loads it with the weights).
        coverage = init_vocab_mapping(parts, spec)
        if coverage is not None:
            say(f"draft vocabulary: the {spec.draft.draft_vocab_size:,} most frequent supervised tokens "
                f"(of {parts.draft.vocab_size:,}) cover {coverage:.1%} of the training targets")

    # 3. Claim the run directory (the main process writes).
    if env.is_main:
        run, resume_from = ckpt.prepare_run_dir(spec, fresh=rt.fresh, write=True)
    _barrier(env)
    if not env.is_main:
        run, resume_from = ckpt.prepare_run_dir(spec, fresh=False, write=False)
    draft = parts.draft
    num_train = parts.num_train
    sched = derive_schedule(spec.train, num_train, env.world_size)
    plan = DataPlan(
        num_train, spec.train.global_batch_size, spec.train.micro_batch_size, env.world_size, spec.seed
    )

    # 4. Resume: weights (before wrapping), optimizer, data position, RNG.
    state = ckpt.TrainState(world_size=env.world_size, total_steps=sched.total_steps)
    resumed_step = None
    if resume_from is not None:
        state = ckpt.load_train_state(resume_from)
        if state.total_steps != sched.total_steps:
            raise CheckpointError(
                f"{resume_from} belongs to a run of {state.total_steps} steps, this one would have {sched.total_steps}",
                "the training data changed; pass --fresh to start over",
            )
        draft.load_trainable_state_dict({k: v.to(device) for k, v in load_weights(resume_from).items()})
        resumed_step = state.step
        say(f"resuming {run.path} from {resume_from.name} (step {state.step}/{sched.total_steps})")
        if state.world_size != env.world_size:
            say(
                f"note: the checkpoint was written by {state.world_size} processes, now {env.world_size}: "
                "the data order is kept, per-process RNG streams restart"
            )
    else:
        say(
            f"training {spec.draft.algo} → {run.path}: {sched.total_steps} steps, {num_train} samples, "
            f"{draft.num_trainable_parameters():,} trainable parameters, {env.world_size} process(es) on {device.type}"
        )
        if getattr(draft, "mask_embedding", None) is not None:  # found at export time, it would mean retraining
            say(
                "note: target.mask_token_id is unset, so this draft learns its own mask embedding, which vLLM and "
                "SGLang cannot load; to serve it there, set target.mask_token_id to an unused token id of the target"
            )

    if env.is_main and device.type == "cpu" and spec.train.mixed_precision == "bf16" and not cpu_has_fast_bf16():
        say(
            "note: train.mixed_precision = \"bf16\" on a CPU without native bf16 (no AVX512-BF16 / AMX): "
            "each step emulates bf16 and is slower than fp32 here; set it to \"auto\" or \"no\""
        )
    model = _wrap(draft, spec, env, device)
    trainable = [p for p in model.parameters() if p.requires_grad]  # after wrapping: FSDP replaces them
    optimizer = torch.optim.AdamW(
        trainable,
        lr=spec.train.lr,
        betas=spec.train.betas,
        weight_decay=spec.train.weight_decay,
        foreach=device.type == "cuda",
    )
    if resume_from is not None:
        _load_optimizer(optimizer, model, spec, resume_from, env)
        if not ckpt.load_rng(resume_from, env.rank):
            torch.manual_seed(spec.seed + env.rank)
    state.world_size = env.world_size

    # 5. The loop.
    logger = MetricsLogger(run.path, spec, state.step, say) if env.is_main else None
    batches = parts.train_batches(plan, env.rank, state.step, sched.total_steps, spec.train.num_workers)
    window: list[dict[str, Any]] = []
    window_tokens, window_t0 = 0, time.time()
    tokens_run, t_loop0 = 0, time.time()
    val_metrics: dict[str, Any] = {}
    val_step: int | None = None
    last_ckpt: Path | None = None
    stop = sched.total_steps if rt.stop_after is None else min(sched.total_steps, rt.stop_after)
    if state.step == 0:  # the untrained baseline, so a run's log shows what training bought
        val_metrics, val_step = validate(parts, model, spec, env, device), state.step
        if val_metrics and logger:
            logger.log(0, "val", val_metrics)
            say(_val_line(0, val_metrics))
    window_t0 = t_loop0 = time.time()
    model.train()
    reporter = as_progress(rt.progress if env.is_main else False)
    with (
        reporter.stage("train", total=sched.total_steps, unit="steps", done=state.step) as progress,
        StopRequest(say) as stop_req,
    ):
        for step in range(state.step, stop):
            lr = lr_at(step, sched, spec.train)
            for group in optimizer.param_groups:
                group["lr"] = lr
            step_records, step_tokens = [], 0
            for a in range(plan.accum):
                batch = next(batches).to(device, non_blocking=True)
                step_tokens += int(batch.attention_mask.sum())
                torch.manual_seed(_micro_seed(spec.seed, step, a * env.world_size + env.rank))
                last = a == plan.accum - 1
                with _no_sync(model, last), _autocast(spec, device):
                    out = model(batch)
                (out.loss.float() / plan.accum).backward()
                step_records.append(metrics_of(out))
            if spec.train.distributed == "fsdp" and hasattr(model, "set_requires_gradient_sync"):
                cast(Any, model).set_requires_gradient_sync(True)
            grad_norm = float(
                torch.nn.utils.clip_grad_norm_(
                    trainable, spec.train.grad_clip if spec.train.grad_clip > 0 else math.inf
                )
            )
            if math.isfinite(grad_norm):
                optimizer.step()
            else:  # a NaN/inf gradient would poison the weights and the AdamW moments: skip the update
                state.skipped_steps += 1
                say(
                    f"step {step + 1}: non-finite gradient norm, update skipped ({state.skipped_steps} so far)"
                )
            optimizer.zero_grad(set_to_none=True)

            state.step = step + 1
            state.epoch, state.step_in_epoch = plan.position(state.step)
            state.samples_seen += spec.train.global_batch_size
            window += [{**r, "grad_norm": grad_norm} for r in step_records]
            window_tokens += step_tokens
            tokens_run += step_tokens

            if state.step % spec.train.log_every == 0 or state.step == stop:
                metrics = pooled_metrics(window, env, device)
                window_tokens = _sum_over_processes(window_tokens, env, device)
                state.tokens_seen += window_tokens
                tps = window_tokens / max(time.time() - window_t0, 1e-9)
                metrics.update(
                    lr=lr,
                    tokens_per_s=tps,
                    epoch=state.epoch,
                    samples=state.samples_seen,
                    tokens_seen=state.tokens_seen,
                )
                if logger:
                    logger.log(state.step, "train", metrics)
                progress.advance(
                    1, loss=metrics.get("loss"), tau=metrics.get("tau_expected"),
                    tau_greedy=metrics.get("tau_greedy"), lr=lr, tok_s=tps,
                )
                window, window_tokens, window_t0 = [], 0, time.time()
            else:
                progress.advance(1)

            if state.step % spec.train.val_every == 0 or state.step == sched.total_steps:
                val_metrics, val_step = validate(parts, model, spec, env, device), state.step
                if val_metrics and logger:
                    logger.log(state.step, "val", val_metrics)
                    say(_val_line(state.step, val_metrics))

            preempted = stop_req.agreed(env, device)
            if state.step % spec.train.save_every == 0 or state.step == stop or preempted:
                last_ckpt = _save(run, state, parts, model, optimizer, spec, env)
            if preempted:
                say(f"stopped at step {state.step} with a checkpoint; rerun the same command to resume")
                break
    if logger:
        logger.close()
    _barrier(env)
    elapsed = time.time() - t_loop0
    return TrainResult(
        run_dir=run.path,
        steps=state.step,
        total_steps=sched.total_steps,
        resumed_from=resumed_step,
        finished=state.step >= sched.total_steps,
        checkpoint=last_ckpt or run.latest(),
        val=val_metrics,
        val_step=val_step,
        stopped_by=stop_req.signal,
        train_tokens_per_s=_sum_over_processes(tokens_run, env, device) / max(elapsed, 1e-9),
        minutes=(time.time() - t_start) / 60,
    )


def _val_line(step: int, m: dict[str, Any]) -> str:
    acc = " ".join(f"{x:.2f}" for x in m.get("accept_per_pos", []))
    return (
        f"val step {step}: loss {m.get('loss', float('nan')):.4f}  "
        f"τ≈{m.get('tau_expected', float('nan')):.3f} (greedy {m.get('tau_greedy', float('nan')):.3f})  "
        f"acceptance {acc}"
    )


def _sum_over_processes(value: int, env: DistEnv, device: torch.device) -> int:
    if not env.distributed:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t)
    return int(t.item())


def _barrier(env: DistEnv) -> None:
    if env.distributed:
        import torch.distributed as dist

        dist.barrier()


def _gather_rng(env: DistEnv) -> list[dict[str, Any]]:
    mine = ckpt.rng_state()
    if not env.distributed:
        return [mine]
    import torch.distributed as dist

    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, mine)
    return out


def _save(
    run: RunDir,
    state: ckpt.TrainState,
    parts: TrainParts,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    spec: RunSpec,
    env: DistEnv,
) -> Path | None:
    """Checkpoint collectively (FSDP gathers full tensors on every process); the main process writes."""
    if spec.train.distributed == "fsdp" and env.distributed:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        full = get_model_state_dict(model, options=opts)
        weights = {k: cast(torch.Tensor, v) for k, v in full.items() if not k.startswith(FROZEN_PREFIXES)}
        optim_state = get_optimizer_state_dict(model, optimizer, options=opts)
    else:
        weights = parts.draft.trainable_state_dict()
        optim_state = optimizer.state_dict()
    rngs = _gather_rng(env)
    path = None
    if env.is_main:
        path = ckpt.save_checkpoint(
            run,
            state,
            weights,
            checkpoint_config(spec, parts.draft, parts.target_path),
            optim_state,
            rngs,
            spec.train.keep_last,
        )
    _barrier(env)
    return path or run.step_dir(state.step)


def _load_optimizer(
    optimizer: torch.optim.Optimizer, model: nn.Module, spec: RunSpec, step_dir: Path, env: DistEnv
) -> None:
    saved = ckpt.load_optimizer_state(step_dir)
    if saved is None:
        return
    if spec.train.distributed == "fsdp" and env.distributed:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, saved, options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(saved)
