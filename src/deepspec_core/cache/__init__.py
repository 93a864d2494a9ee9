"""The feature cache: codecs, on-disk format, resumable writer, random-access reader, online mode.

See docs/cache.md for the format and the measured codec table. Import the submodules
(``codecs``, ``format``, ``writer``, ``reader``, ``online``, ``estimate``); the package itself
imports nothing, so a command that does not touch the cache does not pay for torch.
"""
