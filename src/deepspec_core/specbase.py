"""The pieces of the run spec that algorithm files build on: the strict section base, the draft
spec base every algorithm's spec derives from, and the one chain-length check.

An algorithm's spec (``drafts/<algo>.py``) says everything the rest of deepspec needs to know about
it: its fields, the default and largest chain length k, the protocol parameters evaluation records
(``draft_params``) and its preset knobs per target size. Nothing outside the algorithm's file
branches on the algorithm's name. This module imports no torch, so specs load fast.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from deepspec_core.errors import SpecError

PresetSize = Literal["tiny", "paper"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DraftSpecBase(Section):
    """Fields every draft has. Subclasses set ``algo`` to a ``Literal`` of their registered name."""

    algo: str = Field(description="The algorithm (a registered draft name).")
    num_layers: int = Field(1, ge=1, description="Decoder layers of the draft.")
    intermediate_size: int | None = Field(None, ge=1, description="MLP width of draft layers; default: the target's.")
    draft_vocab_size: int | None = Field(
        None,
        ge=2,
        description="Reduced draft vocabulary: a trainable head over the most frequent supervised tokens of the "
        "training data (tokens outside it are never drafted); default: the target's full vocabulary and frozen lm_head.",
    )
    init_std: float = Field(
        0.02,
        ge=0.0,
        description="Every trainable Linear and Embedding starts N(0, init_std), as HF post_init in the reference "
        "(a reduced head starts from the target's rows); 0 keeps each module's own initialisation.",
    )

    # Knobs a preset sets per target size ("tiny": the embedded target, "paper": the reference recipe).
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    def default_k(self) -> int:
        """Tokens drafted per round when eval.num_draft_tokens is unset."""
        raise NotImplementedError

    def max_k(self) -> int | None:
        """Most tokens one round can draft; None when unbounded (autoregressive drafts)."""
        return None

    def draft_params(self) -> dict[str, int | float | str | bool]:
        """The draft's protocol parameters recorded with every evaluation (informational)."""
        return {}

    @classmethod
    def preset(cls, size: PresetSize) -> DraftSpecBase:
        return cls(**cls.PRESETS.get(size, {}))


class BlockDraftSpec(DraftSpecBase):
    """Block drafters (DFlash family): one forward drafts a whole block."""

    num_layers: int = Field(5, ge=1, description="Decoder layers of the draft.")
    block_size: int = Field(7, ge=1, description="Tokens per draft block (predictions per forward pass).")
    num_anchors: int = Field(512, ge=1, description="Anchors sampled per training sequence.")
    predict_from_anchor: bool = Field(
        True,
        description="DeepSpec variant: the anchor slot predicts the first token (block of γ gives γ predictions). "
        "False: the original DFlash, anchor + γ masks where only the masks predict.",
    )
    loss_decay: float = Field(
        4.0, gt=0.0, description="Position weights w_k = exp(-(k-1)/loss_decay) (the reference uses 4.0 with block 7)."
    )
    init_layers: list[int] | None = Field(
        None,
        description="Target decoder layers whose weights start the draft's layers, one per draft layer (e.g. the "
        "last two); the final norm then starts as the target's. Default: random init, as the reference (measured "
        "better on SmolLM2, docs/algorithms.md). Needs a natively supported family and the target's MLP width.",
    )

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": dict(block_size=4, num_layers=1, num_anchors=32),
        "paper": dict(block_size=7, num_layers=5, num_anchors=512),
    }

    def default_k(self) -> int:
        return self.block_size

    def max_k(self) -> int:
        return self.block_size

    def draft_params(self) -> dict[str, int | float | str | bool]:
        return {"block_size": self.block_size, "predict_from_anchor": self.predict_from_anchor}


def check_draft_length(k: int, cap: int | None, algo: str, field: str = "eval.num_draft_tokens") -> None:
    """The one check of a chain length k against what a draft proposes per round (``cap``, None
    when unbounded). Spec validation, evaluation and the decoder all call it. Raises SpecError
    naming ``field``."""
    if k < 1:
        raise SpecError(f"{field} = {k}: a round drafts at least one token", "use 1 or more")
    if cap is not None and k > cap:
        raise SpecError(
            f"{field} = {k} exceeds what a {algo} draft proposes per round ({cap}, its block size)",
            f"use at most {cap}, or train with a larger draft.block_size",
        )
