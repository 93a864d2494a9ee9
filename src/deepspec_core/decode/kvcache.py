"""The target's KV cache as decoding uses it: created with rollback support, cropped after a round."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def new_cache(model: nn.Module) -> Any:
    from transformers import DynamicCache

    try:
        cache = DynamicCache(config=cast("PreTrainedModel", model).config)
    except TypeError:  # older transformers
        cache = DynamicCache()
    if hasattr(cache, "activate_past_recording"):
        # Sliding-window layers would otherwise drop states that a rejected round must roll back to.
        cache.activate_past_recording()
    return cache


def crop_cache(cache: Any, tokens_to_remove: int) -> None:
    # crop(-n) removes n tokens in transformers 5 and means "length − n" in 4.x: the same thing.
    if tokens_to_remove > 0:
        cache.crop(-tokens_to_remove)
