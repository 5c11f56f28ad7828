"""Kernel cost of a candidate index, measured on the index itself, and the search budget.

Candidates are compared at matched *real* kernel cost: each candidate's index is built for the
calibration input and its key tiles are counted by the scoring op (`ops.search_score`, C core), then
priced by a cost model calibrated on the kernel:

    time per head ~ tile_seconds * (kept block_k-key tiles) + block_seconds * (query blocks)

Defaults: `tile_seconds` = one 128 x 64 tile at head dim 128 (4 * 128 * 64 * 128 FLOP) at the
380 TFLOP/s the block-sparse kernel sustains over kept tiles on an H200 (benchmarks/RESULTS.md,
2026-11-28): 11.04 ns. `block_seconds` (per query block: Q load, O store, softmax finish) defaults to
half a tile, an estimate (the H200 A-shape runs are within 3% of the tile term alone). Both are
parameters: `fit_cost_model` recalibrates them from timings, `time_cost_samples` takes such timings
on a GPU.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Optional, Sequence, Union

import torch

from .. import ops
from ..sparse_index import SparseIndex

H200_TILE_TFLOPS = 380.0
_TILE_FLOP = 4 * 128 * 64 * 128


@dataclasses.dataclass(frozen=True)
class CostModel:
    """Kernel time per head: `tile_seconds * tiles + block_seconds * query_blocks` (block_q x
    block_k tiles)."""

    tile_seconds: float = _TILE_FLOP / (H200_TILE_TFLOPS * 1e12)
    block_seconds: float = 0.5 * _TILE_FLOP / (H200_TILE_TFLOPS * 1e12)
    block_q: int = 128
    block_k: int = 64

    def __post_init__(self):
        for name in ("tile_seconds", "block_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.tile_seconds == 0 and self.block_seconds == 0:
            raise ValueError("tile_seconds: tile_seconds and block_seconds cannot both be 0")
        for name in ("block_q", "block_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")

    def seconds(self, tiles: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        """float64 cost of per-head `tiles` and non-empty `blocks` counts (same shapes)."""
        return tiles.double() * self.tile_seconds + blocks.double() * self.block_seconds

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def index_work(index: SparseIndex, seq: int, heads: int, block_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 `(heads,)` kept key tiles and non-empty query blocks of `index` (batch element 0),
    counted by the C core (`ops.search_score` with no rows)."""
    device = index.kv_ranges.device
    probs = torch.zeros((heads, 0, seq), dtype=torch.float32, device=device)
    rows = torch.zeros(0, dtype=torch.int32, device=device)
    modality = torch.zeros(seq, dtype=torch.int32, device=device)
    _, _, block_tiles = ops.search_score(probs, rows, modality, index, num_modalities=1, block_k=block_k)
    block_tiles = block_tiles.long()
    return block_tiles.sum(-1).cpu(), (block_tiles > 0).sum(-1).cpu()


def index_cost(index: SparseIndex, seq: int, heads: int, model: CostModel) -> torch.Tensor:
    """float64 `(heads,)` modelled kernel seconds of `index`."""
    tiles, blocks = index_work(index, seq, heads, model.block_k)
    return model.seconds(tiles, blocks)


def dense_cost(seq: int, model: CostModel) -> float:
    """Modelled kernel seconds of one head's full causal attention at `seq` tokens."""
    return float(index_cost(SparseIndex.causal(seq, seq, model.block_q), seq, 1, model)[0])


class Budget:
    """Per-head kernel-time budget of the search.

    Spec strings: a number f > 0 (`"0.1"`): f times the dense causal cost at the calibration length;
    `"ashape:SINK:LOCAL"`: the cost of an A-shape with that sink and local window (the paper's
    budget is `ashape:1024:4096`); `"seconds:T"`: T seconds per head per layer."""

    def __init__(self, spec: Union[str, float]):
        self.spec = str(spec)
        text = self.spec.strip().lower()
        self.kind, self.value, self.sink, self.local = "fraction", 0.0, 0, 0
        match_ashape = re.fullmatch(r"ashape:(\d+):(\d+)", text)
        try:
            if match_ashape:
                self.kind, self.sink, self.local = "ashape", int(match_ashape[1]), int(match_ashape[2])
                if self.local < 1:
                    raise ValueError
            elif text.startswith("seconds:"):
                self.kind, self.value = "seconds", float(text.split(":", 1)[1])
            else:
                self.value = float(text)
        except ValueError:
            raise ValueError(f"budget: expected a fraction of dense cost (e.g. 0.1), 'ashape:SINK:LOCAL' or "
                             f"'seconds:T', got {self.spec!r}") from None
        if self.kind != "ashape" and (not math.isfinite(self.value) or self.value <= 0):
            raise ValueError(f"budget: must be > 0, got {self.spec!r}")

    def seconds(self, seq: int, model: CostModel) -> float:
        """The budget in modelled seconds per head for a `seq`-token input."""
        if self.kind == "fraction":
            return self.value * dense_cost(seq, model)
        if self.kind == "seconds":
            return self.value
        index = ops.build_a_shape_index(seq, seq, block_q=model.block_q, block_k=model.block_k,
                                        sink=self.sink, local=self.local)
        return float(index_cost(index, seq, 1, model)[0])

    def __repr__(self) -> str:
        return f"Budget({self.spec!r})"


def fit_cost_model(samples: Sequence[tuple[int, int, float]], block_q: int = 128, block_k: int = 64) -> CostModel:
    """Least-squares `(tile_seconds, block_seconds)` >= 0 from `(tiles, query_blocks, seconds)`
    samples (per head, or totals: the model is linear)."""
    if len(samples) < 2:
        raise ValueError(f"samples: need at least 2 timings, got {len(samples)}")
    a = torch.tensor([[float(t), float(b)] for t, b, _ in samples], dtype=torch.float64)
    y = torch.tensor([float(s) for _, _, s in samples], dtype=torch.float64)
    coef = torch.linalg.lstsq(a, y[:, None]).solution[:, 0]
    if coef[1] < 0:  # refit without the block term
        coef = torch.stack([(a[:, 0] @ y) / (a[:, 0] @ a[:, 0]), torch.tensor(0.0, dtype=torch.float64)])
    elif coef[0] < 0:
        coef = torch.stack([torch.tensor(0.0, dtype=torch.float64), (a[:, 1] @ y) / (a[:, 1] @ a[:, 1])])
    return CostModel(float(coef[0]), float(coef[1]), block_q, block_k)


def time_cost_samples(seq: int = 32768, heads: int = 28, kv_heads: int = 4, head_dim: int = 128,
                      locals_: Sequence[int] = (512, 2048, 8192, 32768), repeats: int = 5,
                      device: str = "cuda", block_q: int = 128, block_k: int = 64,
                      dtype: torch.dtype = torch.bfloat16) -> list[tuple[int, int, float]]:
    """Times `ops.sparse_attention` over A-shape indexes of several local windows and returns
    `(tiles, query_blocks, seconds)` per head for `fit_cost_model` (CUDA)."""
    gen = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(1, heads, seq, head_dim, device=device, dtype=dtype, generator=gen)
    k = torch.randn(1, kv_heads, seq, head_dim, device=device, dtype=dtype, generator=gen)
    v = torch.randn(1, kv_heads, seq, head_dim, device=device, dtype=dtype, generator=gen)
    samples = []
    for local in locals_:
        index = ops.build_a_shape_index(seq, seq, block_q=block_q, block_k=block_k, sink=block_k,
                                        local=local, device=device)
        tiles, blocks = index_work(index, seq, 1, block_k)
        ops.sparse_attention(q, k, v, index)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            ops.sparse_attention(q, k, v, index)
        torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / repeats / heads
        samples.append((int(tiles[0]), int(blocks[0]), seconds))
    return samples


def default_cost_model(block_q: Optional[int] = None, block_k: Optional[int] = None) -> CostModel:
    """The H200 defaults with the given tile shape."""
    base = CostModel()
    return dataclasses.replace(base, block_q=block_q or base.block_q, block_k=block_k or base.block_k)
