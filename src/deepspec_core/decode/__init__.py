"""Decoding: lossless chain speculative decoding (``speculative``) and DSpark scheduling (``schedule``).

``from deepspec_core.decode.speculative import speculative_generate, target_generate``.
"""
