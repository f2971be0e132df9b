"""Few-shot memory bank: patch features of normal references per level, with nearest-neighbour search."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: elements of the (queries x bank) similarity block computed at once; bounds search memory. 4M
#: (16 MiB in fp32) was 2.4x faster than 16M on a 2-core EPYC for a batch of 8 frames at 320 px
#: (1.45 vs 3.5 ms per frame on one thread): the block is reduced by amax while still in cache
SEARCH_BLOCK_ELEMENTS = 1 << 22


def greedy_coreset(
    features: torch.Tensor, size: int, projection_dim: int = 128, seed: int = 0
) -> torch.Tensor:
    """Indices of a greedy k-center coreset (PatchCore): each pick is the point farthest from the others.

    Distances are computed on a random projection (Johnson–Lindenstrauss) to keep selection cheap;
    the bank keeps the full features of the chosen points. Each step is one matrix-vector product
    (squared distances through the norms), so thousands of picks from 100k patches take seconds.
    """
    n = features.shape[0]
    if size >= n:
        return torch.arange(n, device=features.device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    # past ~64k candidates a random pre-selection bounds the time (one pass per pick) while
    # keeping at least 16 candidates per pick, which costs little coverage
    limit = max(16 * size, 1 << 16)
    if n > limit:
        candidates = torch.randperm(n, generator=gen)[:limit].to(features.device)
        return candidates[greedy_coreset(features[candidates], size, projection_dim, seed)]
    x = features.float()
    if x.shape[1] > projection_dim:
        proj = torch.randn(x.shape[1], projection_dim, generator=gen).to(x.device)
        x = x @ (proj / math.sqrt(projection_dim))
    sq = (x * x).sum(dim=1)
    picks = torch.empty(size, dtype=torch.long, device=x.device)
    pick = int(torch.randint(n, (1,), generator=gen))
    min_dist = torch.full((n,), float("inf"), device=x.device)
    for i in range(size):
        picks[i] = pick
        dist = sq + sq[pick] - 2.0 * (x @ x[pick])
        torch.minimum(min_dist, dist, out=min_dist)
        pick = int(torch.argmax(min_dist))
    return picks


#: subtracted from every product so that all are negative (see ``_row_max``): cos - 1 - 2^-6 < 0
#: even where rounding takes a cosine a little above 1
_SHIFT = 2.0**-6


def nearest_distances(queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """For each row of ``queries`` (Q, C) the cosine distance ``1 - max cos`` to the nearest row of
    ``bank`` (N, C), in fp32. Both inputs must already be L2-normalised.

    The products run in the bank's dtype. With a constant column appended (-1 - 2^-6 to the
    queries, 1 to the bank) each product is ``cos - 1 - 2^-6``, minus the distance: values near 0
    rather than near 1, so a bf16 or fp16 result keeps its precision where it matters (bf16 rounds
    a cosine of 0.9 to steps of 0.004, a distance of 0.1 to steps of 0.0005). Works in blocks so
    memory stays bounded for any Q, N.
    """
    q_count, n = queries.shape[0], bank.shape[0]
    if n == 0:
        raise ValueError("nearest_distances: the bank level is empty")
    dtype = bank.dtype
    q_aug = queries.new_empty((q_count, queries.shape[1] + 1), dtype=dtype)  # one copy, cast in place
    q_aug[:, :-1] = queries
    q_aug[:, -1] = -1.0 - _SHIFT
    bank_t = torch.cat([bank, bank.new_ones((n, 1))], dim=1).T
    bank_step = max(1, min(n, SEARCH_BLOCK_ELEMENTS // max(1, min(q_count, 4096))))
    q_step = max(1, SEARCH_BLOCK_ELEMENTS // bank_step)
    out = torch.empty(q_count, dtype=torch.float32, device=queries.device)
    for qs in range(0, q_count, q_step):
        q = q_aug[qs : qs + q_step]
        best = _row_max(q @ bank_t[:, :bank_step])
        for bs in range(bank_step, n, bank_step):
            best = torch.maximum(best, _row_max(q @ bank_t[:, bs : bs + bank_step]))
        out[qs : qs + q_step] = best.neg() - _SHIFT
    return out


def _row_max(products: torch.Tensor) -> torch.Tensor:
    """Row maxima of negative products. bf16 has no vectorised reduction on CPUs (amax converts
    each element: 1 ms for a 4096 x 1024 block); read as int16, negative bf16 values order
    inversely to their magnitudes, so the maximum is the int16 minimum, 10x faster and exact."""
    if products.dtype == torch.bfloat16:
        return products.view(torch.int16).amin(dim=1).view(torch.bfloat16)
    return products.amax(dim=1)


def search_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The dtype bank searches run in: bf16 on CPUs with native bf16 dot products (AVX512-BF16,
    AMX), where the search takes half the time of fp32 (distances within about 0.001,
    docs/benchmarks.md); else the inspector's own dtype (fp16 on GPUs, fp32 on other CPUs, where
    bf16 is emulated)."""
    if device.type == "cpu" and dtype == torch.float32 and _native_bf16():
        return torch.bfloat16
    return dtype


def _native_bf16() -> bool:
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


@dataclass
class MemoryBank:
    """One (N_i, C_i) matrix of L2-normalised normal patch features per backbone level."""

    levels: list[torch.Tensor]

    @classmethod
    def from_patches(cls, per_level: list[torch.Tensor], max_size: int | None = None) -> MemoryBank:
        """Build from per-level (N_i, C_i) normal patch descriptors, coreset-reduced to ``max_size``."""
        levels = []
        for flat in per_level:
            flat = F.normalize(flat.float(), dim=1)
            if max_size is not None and flat.shape[0] > max_size:
                flat = flat[greedy_coreset(flat, max_size)]
            levels.append(flat.contiguous())
        return cls(levels)

    @property
    def sizes(self) -> list[int]:
        return [lv.shape[0] for lv in self.levels]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> MemoryBank:
        return MemoryBank([lv.to(device=device, dtype=dtype or lv.dtype) for lv in self.levels])

    def distance_maps(self, per_level: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per level, ``1 - max cos(patch, bank)`` as fp32 (B, 1, h_i, w_i) maps for normalised features."""
        if len(per_level) != len(self.levels):
            raise ValueError(f"bank has {len(self.levels)} levels, features have {len(per_level)}")
        maps = []
        for feats, bank in zip(per_level, self.levels, strict=True):
            b, c, h, w = feats.shape
            q = feats.permute(0, 2, 3, 1).reshape(-1, c)
            maps.append(nearest_distances(q, bank).view(b, 1, h, w))
        return maps
