"""Codecs that turn one sample's features into bytes and back.

A :class:`Codec` pairs two tensor codecs: one for the K captured layers (``aux_hidden``) and one
for the final-norm hidden state (``final_hidden``). They are chosen separately because the two
tolerate error differently: the captured layers only feed the draft's fusion layer, while the
final hidden state defines the target distribution every loss is measured against (docs/reference.md, toolchain facts:
fp8 on it flips 2.9% of SmolLM2's top-1 predictions), so every codec but the most aggressive keeps
the final hidden state lossless.

Tensor codecs see rows: aux (T, K, H) is encoded as T·K rows of H values, final (T, H) as T rows,
so "per row" means per token per layer. Decoding returns bfloat16, the dtype of every sample
(docs/cache.md), whatever the target ran in.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import torch
import zstandard

from deepspec_core.errors import CacheError
from deepspec_core.registry import Registry

ZSTD_LEVEL = 3  # docs/reference.md (toolchain facts): levels 1–3 run at 170–290 MB/s; >= 9 buys ~2% for a large slowdown
FP8_MAX = 448.0  # largest finite float8_e4m3fn

FEATURE_DTYPE = torch.bfloat16


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)


def _unzstd(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompress(data)


def _bf16_bytes(x: torch.Tensor) -> np.ndarray:
    """(N, H) float → (N·H·2,) uint8 in little-endian bf16 layout."""
    return x.detach().to("cpu", FEATURE_DTYPE).contiguous().view(torch.int16).numpy().view(np.uint8).reshape(-1)


def _from_bf16_bytes(buf: np.ndarray, rows: int, cols: int) -> torch.Tensor:
    # A copy: buffers from bytes objects are read-only, and samples must be writable tensors.
    return torch.from_numpy(buf.view(np.int16).reshape(rows, cols).copy()).view(FEATURE_DTYPE)


# --------------------------------------------------------------------------------------------
# tensor codecs: (N, H) float rows <-> bytes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorCodec:
    """Base: subclasses implement ``encode`` and ``decode``; ``lossless`` is relative to bf16."""

    name: str = "bf16"
    lossless: bool = True

    def encode(self, x: torch.Tensor) -> bytes:  # x: (N, H)
        raise NotImplementedError

    def decode(self, data: bytes, rows: int, cols: int) -> torch.Tensor:  # → (N, H) bf16
        raise NotImplementedError


@dataclass(frozen=True)
class RawBF16(TensorCodec):
    """bf16 values as they are: the reference layout, the baseline of every ratio."""

    def encode(self, x: torch.Tensor) -> bytes:
        return _bf16_bytes(x).tobytes()

    def decode(self, data: bytes, rows: int, cols: int) -> torch.Tensor:
        return _from_bf16_bytes(np.frombuffer(data, np.uint8), rows, cols)


@dataclass(frozen=True)
class ByteSplitZstd(TensorCodec):
    """Lossless: the high bytes (sign + exponent, low entropy) and the low bytes (mantissa, near
    random) go to separate zstd streams, so the compressible plane is not diluted by the other."""

    name: str = "bf16-zstd"

    def encode(self, x: torch.Tensor) -> bytes:
        pairs = _bf16_bytes(x).reshape(-1, 2)  # little endian: [:, 0] low byte, [:, 1] high byte
        hi = _zstd(np.ascontiguousarray(pairs[:, 1]).tobytes())
        lo = _zstd(np.ascontiguousarray(pairs[:, 0]).tobytes())
        return struct.pack("<I", len(hi)) + hi + lo

    def decode(self, data: bytes, rows: int, cols: int) -> torch.Tensor:
        (n_hi,) = struct.unpack_from("<I", data)
        hi = np.frombuffer(_unzstd(data[4 : 4 + n_hi]), np.uint8)
        lo = np.frombuffer(_unzstd(data[4 + n_hi :]), np.uint8)
        pairs = np.empty((rows * cols, 2), np.uint8)
        pairs[:, 0], pairs[:, 1] = lo, hi
        return torch.from_numpy(pairs.view(np.int16).reshape(rows, cols)).view(FEATURE_DTYPE)


@dataclass(frozen=True)
class ScaledFP8Zstd(TensorCodec):
    """float8 e4m3 with one bf16 scale per row (absmax / 448), then zstd.

    The scale is what makes fp8 usable on residual streams: their outliers (24,960 on SmolLM2)
    overflow e4m3's ±448 under a plain cast. Relative error per element is at most 2^-4 (3
    mantissa bits), ~2–3% rms over a tensor. The scale is bf16 so that decoding is one bf16
    multiply: e4m3 × bf16 is exact in fp32, so its bf16 rounding equals the fp32 path's.
    """

    name: str = "fp8-zstd"
    lossless: bool = False

    def encode(self, x: torch.Tensor) -> bytes:
        x = x.detach().to("cpu", torch.float32)  # (N, H)
        amax = x.abs().amax(dim=1, keepdim=True)  # (N, 1)
        scale = (amax / FP8_MAX).clamp(min=torch.finfo(torch.bfloat16).tiny).to(torch.bfloat16)  # (N, 1)
        # Rounding the scale down can push absmax a little past 448: clamp, do not overflow.
        q = (x / scale.float()).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)  # (N, H)
        return _zstd(scale.view(torch.int16).numpy().tobytes() + q.view(torch.uint8).numpy().tobytes())

    def decode(self, data: bytes, rows: int, cols: int) -> torch.Tensor:
        raw = bytearray(_unzstd(data))
        scale = torch.frombuffer(raw, dtype=torch.int16, count=rows).view(torch.bfloat16).view(rows, 1)
        q = torch.frombuffer(raw, dtype=torch.uint8, offset=2 * rows).view(torch.float8_e4m3fn)
        return q.view(rows, cols).to(FEATURE_DTYPE) * scale


@dataclass(frozen=True)
class GroupIntZstd(TensorCodec):
    """Symmetric integers in [-L, L] (L = 2^(bits-1) - 1) per group of ``group`` values along H,
    one bf16 scale (absmax / L) per group, two codes per byte (a·(2L+1) + b), then zstd.

    Pairs rather than bit-packing: zstd's Huffman stage then codes a pair alphabet (225 symbols
    for int4, 49 for int3) close to its entropy, which is below the fixed width on peaked rows.
    """

    name: str = "int4-zstd"
    lossless: bool = False
    bits: int = 4
    group: int = 32

    @property
    def levels(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def _padded(self, cols: int) -> int:
        return -(-cols // self.group) * self.group

    def _pair_table(self) -> torch.Tensor:
        """(256, 2): byte → its two signed codes; decoding is then one gather."""
        base = 2 * self.levels + 1
        b = torch.arange(256)
        return (torch.stack([b // base, b % base], dim=1) - self.levels).to(FEATURE_DTYPE)

    def encode(self, x: torch.Tensor) -> bytes:
        x = x.detach().to("cpu", torch.float32)  # (N, H)
        n, h = x.shape
        hp = self._padded(h)
        if hp != h:
            x = torch.nn.functional.pad(x, (0, hp - h))
        g = x.view(n, hp // self.group, self.group)  # (N, G, group)
        # bf16 scales (decoding multiplies in bf16, correctly rounded); the floor avoids a zero scale.
        scale = (g.abs().amax(dim=2, keepdim=True) / self.levels).clamp(min=2.0**-100).to(torch.bfloat16)
        q = torch.round(g / scale.float()).clamp(-self.levels, self.levels).to(torch.int16) + self.levels
        pairs = q.view(-1, 2)  # (N·G·group/2, 2) codes in 0..2L
        packed = (pairs[:, 0] * (2 * self.levels + 1) + pairs[:, 1]).to(torch.uint8)
        return _zstd(scale.view(torch.int16).numpy().tobytes() + packed.numpy().tobytes())

    def decode(self, data: bytes, rows: int, cols: int) -> torch.Tensor:
        hp = self._padded(cols)
        groups = hp // self.group
        raw = bytearray(_unzstd(data))
        scale = torch.frombuffer(raw, dtype=torch.int16, count=rows * groups).view(torch.bfloat16)
        packed = torch.frombuffer(raw, dtype=torch.uint8, offset=2 * rows * groups)
        q = self._pair_table()[packed.long()]  # (N·G·group/2, 2) signed codes, exact in bf16
        x = q.view(rows, groups, self.group) * scale.view(rows, groups, 1)
        return x.view(rows, hp)[:, :cols].contiguous()


# --------------------------------------------------------------------------------------------
# sample codecs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Codec:
    """How a sample's features are stored; ``*_bytes_per_value`` feed ``--estimate``.

    Bytes per value are measured by ``benchmarks/cache_codecs.py`` (docs/cache.md): the larger of
    the values on the trained tiny target and on Gaussian-like H=2560 features, so estimates err
    on the large side; raw bf16 is exact. ``max_rel_l2`` is the documented bound
    on the relative L2 error of a decoded tensor against its bf16 original.
    """

    name: str
    aux: TensorCodec
    final: TensorCodec
    aux_bytes_per_value: float
    final_bytes_per_value: float
    description: str
    max_rel_l2_aux: float = 0.0
    max_rel_l2_final: float = 0.0

    @property
    def lossless(self) -> bool:
        return self.aux.lossless and self.final.lossless

    def encode_features(self, aux: torch.Tensor, final: torch.Tensor) -> tuple[bytes, bytes]:
        """aux (T, K, H), final (T, H) → (aux bytes, final bytes)."""
        t, k, h = aux.shape
        return self.aux.encode(aux.reshape(t * k, h)), self.final.encode(final.reshape(t, h))

    def decode_features(
        self, aux_data: bytes, final_data: bytes, seq_len: int, num_layers: int, hidden: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        aux = self.aux.decode(aux_data, seq_len * num_layers, hidden).view(seq_len, num_layers, hidden)
        final = self.final.decode(final_data, seq_len, hidden)
        return aux, final


CODECS: Registry[Codec] = Registry("cache codec", error=CacheError)


def _add(codec: Codec) -> None:
    CODECS.add(codec.name, codec)


_add(Codec(
    "bf16", RawBF16("bf16"), RawBF16("bf16"), 2.0, 2.0,
    "raw bf16 (the reference layout); the baseline",
))
_add(Codec(
    "bf16-zstd", ByteSplitZstd(), ByteSplitZstd(), 1.42, 1.42,
    "lossless: byte-plane split + zstd",
))
_add(Codec(
    "fp8-zstd", ScaledFP8Zstd(), ByteSplitZstd(), 0.82, 1.42,
    "captured layers: e4m3 with a per-token-per-layer scale + zstd; final hidden lossless",
    max_rel_l2_aux=0.03,
))
_add(Codec(
    "int4-zstd", GroupIntZstd(), ByteSplitZstd(), 0.49, 1.42,
    "captured layers: int4 in groups of 32 with bf16 scales + zstd; final hidden lossless",
    max_rel_l2_aux=0.12,
))
_add(Codec(
    "int3-fp8", GroupIntZstd("int3-zstd", bits=3), ScaledFP8Zstd(), 0.35, 0.83,
    "most aggressive: captured layers int3 (groups of 32), final hidden scaled fp8 + zstd",
    max_rel_l2_aux=0.25, max_rel_l2_final=0.03,
))
_add(Codec(
    "int4-fp8", GroupIntZstd(), ScaledFP8Zstd(), 0.49, 0.83,
    "aggressive: captured layers int4 (groups of 32), final hidden scaled fp8 + zstd",
    max_rel_l2_aux=0.12, max_rel_l2_final=0.03,
))


def get_codec(name: str) -> Codec:
    return CODECS.get(name)
