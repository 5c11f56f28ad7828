"""The attention function registered with transformers (`AttentionInterface`): sparse prefill for long
fresh prefills of a patched forward, the model's own dense implementation for everything else.

One function is registered per dense implementation it falls back to, under `mminference_<dense>`
(e.g. `mminference_sdpa`), with that implementation's mask function, so the masks a layer receives
are exactly the ones the dense implementation expects. Signature and shapes as
`transformers.integrations.sdpa_attention.sdpa_attention_forward`: query `(B, Hq, Sq, D)`, key / value
`(B, Hkv, Sk, D)` (GQA not expanded), output `(B, Sq, Hq, D)` contiguous.
"""

from __future__ import annotations

import sys
import warnings
from typing import Callable, Optional

import torch

from .. import attention, distributed, ops
from ..sparse_index import SparseIndex
from . import context
from .context import ElementPlan

PREFIX = "mminference_"


def dense_function(dense_name: str, module: torch.nn.Module) -> Callable:
    """The implementation `dense_name` as the layer would have called it ("eager" lives in the
    layer's own modeling module)."""
    if dense_name == "eager":
        return sys.modules[type(module).__module__].eager_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return ALL_ATTENTION_FUNCTIONS[dense_name]


def register(dense_name: str) -> str:
    """Registers (once) the sparse function falling back to `dense_name`; returns its name."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if dense_name != "eager" and dense_name not in ALL_ATTENTION_FUNCTIONS:
        raise ValueError(f"attn_implementation: the language model uses {dense_name!r}, which is not a registered "
                         f"attention function to fall back to")
    name = PREFIX + dense_name
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, make_attention_function(dense_name))
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS.get(dense_name, sdpa_mask))
    return name


def _allowed_keys(mask: Optional[torch.Tensor], b: int, row: int) -> Optional[torch.Tensor]:
    """bool `(Sk,)` keys query `row` of element `b` may see under a 4-D bool / additive mask."""
    m = mask[b if mask.shape[0] > 1 else 0, 0, row]
    return m if m.dtype == torch.bool else m > torch.finfo(m.dtype).min / 2


def _mask_matches(mask: Optional[torch.Tensor], b: int, plan: ElementPlan, seq: int) -> bool:
    """The mask agrees with the plan: the element's last token sees exactly keys [start, end) (O(S);
    a custom mask, e.g. packed sequences, falls back to dense, as do masks that are not 4-D tensors:
    flash attention's 2-D padding mask, flex attention's `BlockMask`)."""
    if mask is None:
        return plan.start == 0 and plan.end == seq
    if not torch.is_tensor(mask) or mask.dim() != 4:
        return False
    expected = torch.zeros(seq, dtype=torch.bool, device=mask.device)
    expected[plan.start:plan.end] = True
    return bool(torch.equal(_allowed_keys(mask, b, plan.end - 1), expected))


def _kernel_takes(query: torch.Tensor) -> bool:
    """The CUDA kernel takes float16 / bfloat16 only; float32 on a GPU runs dense (warned once)."""
    if query.is_cuda and query.dtype == torch.float32:
        warnings.warn("mminference: float32 attention on CUDA runs dense (the CUDA kernel takes float16 / "
                      "bfloat16); load the model in bfloat16", stacklevel=3)
        return False
    return True


def _prefill_eligible(module, query, key, dropout, is_causal, kwargs) -> bool:
    return (query.shape[2] == key.shape[2] > 1 and _kernel_takes(query)
            and not (dropout and module.training)
            and kwargs.get("sliding_window") is None
            and kwargs.get("softcap") is None
            and not kwargs.get("output_attentions", False)
            and is_causal is not False and getattr(module, "is_causal", True))


def _sparse_rows(state, module, q, k, v, layout, scaling) -> torch.Tensor:
    """`(G, Hq, L, D)` sparse attention of a group of elements sharing `layout`."""
    opts = state.options
    layer = int(getattr(module, "layer_idx", 0) or 0)
    if opts.parallel == "heads" and distributed.parallel_group() is not None:
        return distributed.head_parallel_sparse_attention(q, k, v, layout, state.head_config, layer=layer,
                                                          block_q=opts.block_q, block_k=opts.block_k,
                                                          last=opts.last, scale=scaling)
    if not opts.track_density:
        return attention.sparse_attention_for_layout(q, k, v, layout, state.head_config, layer=layer,
                                                     block_q=opts.block_q, block_k=opts.block_k, last=opts.last,
                                                     scale=scaling)
    index, _ = attention.build_layout_index(q, k, layout, state.head_config, layer, opts.block_q, opts.block_k,
                                            last=opts.last, scale=scaling)
    seq = q.shape[2]
    entries = int(index.kv_ranges.shape[0] * index.kv_ranges.shape[1])
    dense_pairs = SparseIndex.causal(seq, seq, opts.block_q).computed_pairs(seq)  # one (batch, head) entry
    state.stats.densities.append((layer, index.computed_pairs(seq) / (entries * dense_pairs)))
    return ops.sparse_attention(q, k, v, index, scale=scaling)


def make_attention_function(dense_name: str) -> Callable:
    def mminference_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                              is_causal=None, **kwargs):
        dense = dense_function(dense_name, module)

        def run_dense(q, k, v, mask):
            out, _ = dense(module, q, k, v, mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs)
            return out

        ctx = context.current()
        state = None if ctx is None else ctx.state
        if state is None or state.family is None or not _prefill_eligible(module, query, key, dropout, is_causal,
                                                                            kwargs):
            if state is not None:
                state.stats.dense += 1
            return dense(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                         is_causal=is_causal, **kwargs)
        plans = ctx.plan()
        batch, seq = query.shape[0], query.shape[2]
        if len(plans) != batch:
            raise ValueError(f"layouts: {len(plans)} batch elements planned, the attention call has {batch}")
        sparse_ok = [p.end - p.start >= state.options.min_prefill_tokens and _mask_matches(attention_mask, b, p, seq)
                     for b, p in enumerate(plans)]
        if not any(sparse_ok):
            state.stats.dense += 1
            return dense(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                         is_causal=is_causal, **kwargs)
        state.stats.sparse += 1
        out = query.new_empty(batch, seq, query.shape[1], query.shape[3])  # (B, S, Hq, D)
        groups: dict = {}
        for b, p in enumerate(plans):
            groups.setdefault((p.start, p.end, p.layout) if sparse_ok[b] else ("dense", b), []).append(b)
        for key_, members in groups.items():
            idx = slice(None) if len(members) == batch else torch.tensor(members, device=query.device)
            q, k, v = query[idx], key[idx], value[idx]
            mask = attention_mask
            if mask is not None and mask.shape[0] > 1:  # a batch-1 mask broadcasts as it is
                mask = mask[idx]
            if key_[0] == "dense":
                out[idx] = run_dense(q, k, v, mask)
                continue
            start, end, layout = key_
            out[idx, start:end] = _sparse_rows(state, module, q[:, :, start:end], k[:, :, start:end],
                                               v[:, :, start:end], layout, scaling).transpose(1, 2)
            for rows in (slice(0, start), slice(end, seq)):  # padding rows: exactly what the dense path gives
                if rows.stop > rows.start:
                    out[idx, rows] = run_dense(q[:, :, rows], k, v, mask[:, :, rows])
        return out, None

    mminference_attention.__name__ = f"mminference_attention_{dense_name}"
    return mminference_attention
