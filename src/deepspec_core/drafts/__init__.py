"""Draft models. ``build_draft(spec, target_config, embed, lm_head)`` picks the class by ``draft.algo``.

Adding an algorithm: one module ``<algo>.py`` defining its spec (a DraftSpecBase subclass) and a
DraftModel subclass registered with ``@DRAFTS.register``, and its name in the import line below
(registration order is the order of demos and tables).
"""

from . import eagle3, dflash, dspark  # noqa: E402,F401,I001  (registration, in this order)
from .base import (
    DRAFTS,
    DraftBatch,
    DraftLoss,
    DraftModel,
    Drafter,
    Proposal,
    build_draft,
    collate_samples,
    frozen_weights_from_model,
    load_frozen_weights,
)

__all__ = [
    "DRAFTS", "DraftBatch", "DraftLoss", "DraftModel", "Drafter", "Proposal", "build_draft", "collate_samples",
    "frozen_weights_from_model", "load_frozen_weights",
]
