"""Independent references for tests: dense masks expanded from a SparseIndex in plain PyTorch, dense
float64 attention under a mask, and random valid indexes. Nothing here calls the compiled ops."""

from __future__ import annotations

import random

import torch

from mminference import SparseIndex


def _entry(t: torch.Tensor, b: int, h: int) -> torch.Tensor:
    """t[b, h] with size-1 leading dims broadcast."""
    return t[b if t.shape[0] > 1 else 0, h if t.shape[1] > 1 else 0]


def dense_mask_from_index(index: SparseIndex, batch: int, heads: int, seq_q: int, seq_k: int,
                          causal: bool) -> torch.Tensor:
    """Bool mask `(B, H, Sq, Sk)` in ORIGINAL positions: query i may attend key j."""
    mask = torch.zeros((batch, heads, seq_q, seq_k), dtype=torch.bool)
    for b in range(batch):
        for h in range(heads):
            q_perm = _entry(index.q_perm, b, h).tolist() if index.q_perm is not None else list(range(seq_q))
            k_perm = _entry(index.k_perm, b, h).tolist() if index.k_perm is not None else list(range(seq_k))
            ranges = _entry(index.kv_ranges, b, h).tolist()
            n_ranges = _entry(index.kv_range_count, b, h).tolist()
            columns = _entry(index.kv_columns, b, h).tolist()
            n_columns = _entry(index.kv_column_count, b, h).tolist()
            for qb in range(index.num_q_blocks):
                slots = []
                for start, end in ranges[qb][: n_ranges[qb]]:
                    slots.extend(range(start, end))
                slots.extend(columns[qb][: n_columns[qb]])
                keys = torch.tensor([k_perm[s] for s in slots], dtype=torch.long)
                rows = [q_perm[s] for s in range(qb * index.block_q, min((qb + 1) * index.block_q, seq_q))]
                for row in rows:
                    mask[b, h, row, keys] = True
    if causal:
        offset = seq_k - seq_q
        allowed = torch.arange(seq_k)[None, :] <= torch.arange(seq_q)[:, None] + offset
        mask &= allowed
    return mask


def masked_attention_float64(q, k, v, mask, scale):
    """Dense attention in float64 under `mask` `(B, Hq, Sq, Sk)`; rows without keys give zeros and
    lse -inf. q `(B, Hq, Sq, D)`, k/v `(B, Hkv, Sk, D)` (GQA expanded here)."""
    groups = q.shape[1] // k.shape[1]
    q64, k64, v64 = (t.double() for t in (q, k, v))
    k64 = k64.repeat_interleave(groups, dim=1)
    v64 = v64.repeat_interleave(groups, dim=1)
    scores = torch.einsum("bhqd,bhkd->bhqk", q64, k64) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    weights = torch.exp(scores - lse[..., None].clamp_min(-1e300)).masked_fill(~mask, 0.0)
    out = torch.einsum("bhqk,bhkd->bhqd", weights, v64)
    out = torch.where(mask.any(-1, keepdim=True), out, torch.zeros_like(out))
    return out, lse


def random_sparse_index(rng: random.Random, batch: int, heads: int, seq_q: int, seq_k: int,
                        block_q: int, max_ranges: int, max_columns: int, permute_q: bool,
                        permute_k: bool, broadcast: bool = False) -> SparseIndex:
    """A random valid index: sorted disjoint ranges (some empty blocks), columns outside them."""
    ib, ih = (1, 1) if broadcast else (batch, heads)
    nqb = -(-seq_q // block_q)
    ranges = torch.zeros((ib, ih, nqb, max_ranges, 2), dtype=torch.int32)
    range_count = torch.zeros((ib, ih, nqb), dtype=torch.int32)
    columns = torch.zeros((ib, ih, nqb, max_columns), dtype=torch.int32)
    column_count = torch.zeros((ib, ih, nqb), dtype=torch.int32)
    for b in range(ib):
        for h in range(ih):
            for qb in range(nqb):
                cuts = sorted(rng.sample(range(seq_k + 1), k=min(2 * rng.randint(0, max_ranges), seq_k + 1)))
                pairs = [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2)]
                for r, (start, end) in enumerate(pairs):
                    ranges[b, h, qb, r] = torch.tensor([start, end])
                range_count[b, h, qb] = len(pairs)
                covered = set()
                for start, end in pairs:
                    covered.update(range(start, end))
                free = [j for j in range(seq_k) if j not in covered]
                picked = sorted(rng.sample(free, k=min(len(free), rng.randint(0, max_columns))))
                columns[b, h, qb, : len(picked)] = torch.tensor(picked, dtype=torch.int32)
                column_count[b, h, qb] = len(picked)
    def perm(n):
        out = torch.stack([torch.randperm(n, generator=torch.Generator().manual_seed(rng.randrange(2**31)))
                           for _ in range(ib * ih)]).reshape(ib, ih, n)
        return out.to(torch.int32)
    return SparseIndex(block_q, ranges, range_count, columns, column_count,
                       q_perm=perm(seq_q) if permute_q else None,
                       k_perm=perm(seq_k) if permute_k else None)


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64 (ref of zeros compares absolutely)."""
    diff = (out.double() - ref.double()).norm().item()
    norm = ref.double().norm().item()
    return diff / norm if norm > 0 else diff
