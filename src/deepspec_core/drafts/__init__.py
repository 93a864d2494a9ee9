"""Draft models. ``build_draft(spec, target_config, embed, lm_head)`` picks the class by ``draft.algo``.

Adding an algorithm: a module defining a DraftModel subclass registered with ``@DRAFTS.register``,
and one import line below.
"""

from . import dflash, dspark, eagle3  # noqa: E402,F401  (registration)
from .base import (
    DRAFTS,
    DraftBatch,
    DraftLoss,
    DraftModel,
    Proposal,
    build_draft,
    collate_samples,
    frozen_weights_from_model,
    load_frozen_weights,
)

__all__ = [
    "DRAFTS", "DraftBatch", "DraftLoss", "DraftModel", "Proposal", "build_draft", "collate_samples",
    "frozen_weights_from_model", "load_frozen_weights",
]
