"""The sparse forward against dense float64 attention under the equivalent dense mask."""

import math
import random

import pytest
import torch

import mminference as mmi
from reference import dense_mask_from_index, masked_attention_float64, random_sparse_index, relative_error

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}


def _problem(rng, batch, q_heads, kv_heads, seq_q, seq_k, dim, dtype, device, layout="bhsd"):
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    q = torch.randn(batch, q_heads, seq_q, dim, generator=gen)
    k = torch.randn(batch, kv_heads, seq_k, dim, generator=gen)
    v = torch.randn(batch, kv_heads, seq_k, dim, generator=gen)
    if layout == "bshd":  # transformers' projections: (B, S, H, D) buffers seen as (B, H, S, D)
        q, k, v = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    return tuple(t.to(device=device, dtype=dtype) for t in (q, k, v))


def _check(q, k, v, index, causal, dtype):
    scale = 1.0 / math.sqrt(q.shape[-1])
    out, lse = mmi.sparse_attention(q, k, v, index.to(q.device), causal=causal, return_lse=True)
    mask = dense_mask_from_index(index.to("cpu"), q.shape[0], q.shape[1], q.shape[2], k.shape[2], causal)
    ref, ref_lse = masked_attention_float64(q.cpu(), k.cpu(), v.cpu(), mask, scale)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert torch.isfinite(out).all(), "output has NaN/inf"
    assert relative_error(out.cpu(), ref) < TOLERANCE[dtype]
    empty = ~mask.any(-1)
    assert torch.equal(torch.isinf(lse.cpu()) & (lse.cpu() < 0), empty), "lse = -inf exactly on empty rows"
    assert torch.all(out.cpu()[empty] == 0)
    assert torch.allclose(lse.cpu()[~empty].double(), ref_lse[~empty], atol=2e-2 if dtype != torch.float32 else 1e-4)


CASES = [
    # batch, q_heads, kv_heads, seq_q, seq_k, dim, block_q
    (1, 1, 1, 1, 1, 64, 64),
    (2, 4, 4, 130, 130, 64, 64),
    (1, 4, 1, 200, 333, 80, 128),
    (2, 7, 1, 97, 97, 96, 32),
    (1, 2, 2, 257, 300, 128, 128),
    (1, 3, 3, 129, 129, 128, 7),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_random_index_matches_masked_dense(device, dtype, case, seed):
    batch, q_heads, kv_heads, seq_q, seq_k, dim, block_q = case
    if device == "cuda" and (dtype == torch.float32 or block_q not in (64, 128)):
        pytest.skip("CUDA kernel: float16/bfloat16 and block_q 64/128 only")
    rng = random.Random(hash((case, seed)) & 0xFFFF)
    q, k, v = _problem(rng, batch, q_heads, kv_heads, seq_q, seq_k, dim, dtype, device,
                       layout=rng.choice(["bhsd", "bshd"]))
    index = random_sparse_index(rng, batch, q_heads, seq_q, seq_k, block_q, max_ranges=3, max_columns=20,
                                permute_q=rng.random() < 0.5, permute_k=rng.random() < 0.5,
                                broadcast=rng.random() < 0.3)
    _check(q, k, v, index, causal=rng.random() < 0.7 or seq_q > seq_k, dtype=dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("seq_q,seq_k,block_q", [(100, 100, 64), (1000, 1000, 128), (300, 700, 64)])
def test_full_causal_index_equals_dense_causal(device, dtype, seq_q, seq_k, block_q):
    if device == "cuda" and dtype == torch.float32:
        pytest.skip("CUDA kernel: float16/bfloat16 only")
    gen = torch.Generator().manual_seed(seq_q)
    q = torch.randn(1, 4, seq_q, 64, generator=gen).to(device, dtype)
    k = torch.randn(1, 2, seq_k, 64, generator=gen).to(device, dtype)
    v = torch.randn(1, 2, seq_k, 64, generator=gen).to(device, dtype)
    out = mmi.sparse_attention(q, k, v, mmi.SparseIndex.causal(seq_q, seq_k, block_q, device))
    mask = torch.ones(seq_q, seq_k, dtype=torch.bool).tril(diagonal=seq_k - seq_q)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.cpu().double(), k.cpu().double().repeat_interleave(2, 1), v.cpu().double().repeat_interleave(2, 1),
        attn_mask=mask)
    assert relative_error(out.cpu(), ref) < TOLERANCE[dtype]


def test_rows_without_keys_are_zero_with_lse_minus_inf():
    q, k, v = (torch.randn(1, 1, 64, 64) for _ in range(3))
    # Block 0 keeps only keys 32..63, so rows 0..31 have no causally allowed key.
    ranges = torch.tensor([[32, 64]], dtype=torch.int32).reshape(1, 1, 1, 1, 2)
    index = mmi.SparseIndex.from_ranges(64, ranges, torch.ones((1, 1, 1), dtype=torch.int32))
    out, lse = mmi.sparse_attention(q, k, v, index, return_lse=True)
    assert torch.all(out[0, 0, :32] == 0) and torch.all(lse[0, 0, :32] == float("-inf"))
    assert torch.isfinite(out).all() and torch.isfinite(lse[0, 0, 32:]).all()


def test_output_buffer_is_transformers_layout_and_inputs_are_not_copied():
    q = torch.randn(2, 10, 4, 64).transpose(1, 2)  # (B, H, S, D) view of (B, S, H, D)
    k = torch.randn(2, 10, 2, 64).transpose(1, 2)
    v = torch.randn(2, 10, 2, 64).transpose(1, 2)
    out = mmi.sparse_attention(q, k, v, mmi.SparseIndex.causal(10, 10, 64))
    assert out.shape == (2, 4, 10, 64)
    assert out.transpose(1, 2).is_contiguous()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k_layout,v_layout", [("bhsd", "bshd"), ("bshd", "bhsd"), ("bshd", "bshd")])
def test_key_and_value_layouts_may_differ(device, k_layout, v_layout):
    # Head dim 128 and block_q 128 take the Hopper kernel, whose full range tiles load with TMA
    # through one coordinate order for K and V (it must fall back to gathers when they differ).
    def in_layout(t, layout):
        return t.transpose(1, 2).contiguous().transpose(1, 2) if layout == "bshd" else t.contiguous()

    gen = torch.Generator().manual_seed(7)
    q = torch.randn(2, 4, 700, 128, generator=gen)
    k = in_layout(torch.randn(2, 2, 700, 128, generator=gen), k_layout)
    v = in_layout(torch.randn(2, 2, 700, 128, generator=gen), v_layout)
    q, k, v = (t.to(device=device, dtype=torch.bfloat16) for t in (q, k, v))
    index = mmi.SparseIndex.causal(700, 700, 128, device)
    _check(q, k, v, index, causal=True, dtype=torch.bfloat16)
