"""The feature cache: codecs, on-disk format, resumable writer, random-access reader, online mode.

See docs/cache.md for the format and the measured codec table.
"""

from deepspec_core.cache.codecs import CODECS, Codec, get_codec
from deepspec_core.cache.estimate import estimate_bytes
from deepspec_core.cache.online import OnlineFeatures, compute_features
from deepspec_core.cache.reader import FeatureCache
from deepspec_core.cache.writer import CacheConfig, build_cache, write_cache

__all__ = [
    "CODECS", "Codec", "get_codec", "estimate_bytes", "OnlineFeatures", "compute_features",
    "FeatureCache", "CacheConfig", "build_cache", "write_cache",
]
