"""Batches with left padding, the dense fallbacks (short, chunked prefill), an eager-attention model,
unsupported models and the argument checks of `patch`."""

import sys
import types

import pytest
import torch

pytest.importorskip("transformers")

from integration_inputs import prompt_for  # noqa: E402

import mminference  # noqa: E402
from mminference import AShape, Dense, HeadConfig, VerticalSlash  # noqa: E402
from mminference.integration import random_models as tm  # noqa: E402

LAYERS = 2
SPARSE = HeadConfig(AShape(32, 64))


def _padded_pair(model_type, items_long, items_short):
    """Two prompts left-padded into one batch; returns (batch inputs, [single inputs], pad of element 1)."""
    long_p = prompt_for(model_type, items_long, seed=5, text_between=20)
    short_p = prompt_for(model_type, items_short, seed=9, text_between=7)
    pad = long_p["seq"] - short_p["seq"]
    assert pad > 0
    batch = {}
    for name in {**long_p["inputs"], **short_p["inputs"]}:
        parts = [p["inputs"][name] for p in (long_p, short_p) if name in p["inputs"]]  # visual inputs in order
        if name in ("input_ids", "mm_token_type_ids"):
            parts[1] = torch.cat([torch.zeros(1, pad, dtype=parts[1].dtype), parts[1]], 1)
        batch[name] = torch.cat(parts)
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    batch["attention_mask"][1, :pad] = 0
    return batch, [long_p["inputs"], short_p["inputs"]], pad


CASES = {"qwen2_5_vl": ([("video", 8, 16, 16)], [("image", 8, 8), ("video", 6, 16, 16)]),
         "llava_onevision": ([("video", 32)], [("video", 32)])}


@pytest.mark.parametrize("model_type", list(CASES))
def test_left_padded_batch(model_type):
    model = tm.build(model_type, seed=2)
    batch, singles, pad = _padded_pair(model_type, *CASES[model_type])
    with torch.no_grad():
        reference = model(**batch).logits
        state = mminference.patch(model, Dense(), min_prefill_tokens=1)
        dense_cfg = model(**batch).logits
        assert (state.stats.sparse, state.stats.dense) == (LAYERS, 0)
        state = mminference.patch(model, SPARSE, min_prefill_tokens=1)
        sparse = model(**batch).logits
        alone = [model(**single).logits for single in singles]
        mminference.unpatch(model)
    # full-density config: the whole batch (padding rows included) as the unpatched model
    torch.testing.assert_close(dense_cfg, reference, rtol=1e-4, atol=1e-4)
    # sparse config: each element as when run alone (layouts per element, padding excluded) ...
    torch.testing.assert_close(sparse[0], alone[0][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sparse[1, pad:], alone[1][0], rtol=1e-4, atol=1e-4)
    # ... and the padding rows exactly as the dense model computes them
    torch.testing.assert_close(sparse[1, :pad], reference[1, :pad], rtol=1e-4, atol=1e-4)
    assert (sparse[0] - reference[0]).abs().max() > 1e-3


def test_short_prefill_and_chunked_prefill_stay_dense():
    model = tm.build("qwen2_5_vl", seed=4)
    prompt = prompt_for("qwen2_5_vl", [("video", 8, 16, 16)], seed=1)
    seq = prompt["seq"]
    with torch.no_grad():
        reference = model(**prompt["inputs"]).logits
        state = mminference.patch(model, SPARSE, min_prefill_tokens=seq + 1)
        short = model(**prompt["inputs"]).logits
        assert (state.stats.sparse, state.stats.dense) == (0, LAYERS)
        assert torch.equal(short, reference)  # the model's own sdpa, untouched
        state = mminference.patch(model, SPARSE, min_prefill_tokens=1)
        first = model(**prompt["inputs"], use_cache=True)
        more = torch.tensor([[7, 8, 9, 10, 11]])  # a second chunk: 5 queries over seq + 5 keys
        model(input_ids=more, past_key_values=first.past_key_values, use_cache=True)
        mminference.unpatch(model)
    assert (state.stats.sparse, state.stats.dense) == (LAYERS, LAYERS)


def test_eager_model_falls_back_to_eager_and_reads_its_float_mask():
    model = tm.build("qwen2_5_vl", seed=6, attn_implementation="eager")
    batch, _, _ = _padded_pair("qwen2_5_vl", *CASES["qwen2_5_vl"])
    with torch.no_grad():
        reference = model(**batch).logits
        state = mminference.patch(model, Dense(), min_prefill_tokens=1)
        assert model.config.get_text_config()._attn_implementation == "mminference_eager"
        logits = model(**batch).logits
        mminference.unpatch(model)
    assert (state.stats.sparse, state.stats.dense) == (LAYERS, 0)
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-4)
    assert model.config.get_text_config()._attn_implementation == "eager"


def _text_only_model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(**tm._text())).eval()


def test_unsupported_model_raises_or_stays_dense():
    model = _text_only_model()
    with pytest.raises(ValueError, match="supported: Qwen2-VL.*InternVL"):
        mminference.patch(model)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        reference = model(input_ids=ids).logits
        with pytest.warns(UserWarning, match="keeping its dense attention"):
            state = mminference.patch(model, unsupported="dense")
        assert state.family is None
        assert torch.equal(model(input_ids=ids).logits, reference)
    mminference.unpatch(model)
    assert model.config._attn_implementation == "sdpa"


def test_patch_arguments_are_checked():
    model = tm.build("qwen2_5_vl")
    with pytest.raises(TypeError, match="min_prefil"):
        mminference.patch(model, min_prefil_tokens=3)
    with pytest.raises(ValueError, match="min_prefill_tokens"):
        mminference.patch(model, min_prefill_tokens=0)
    with pytest.raises(ValueError, match="unsupported"):
        mminference.patch(model, unsupported="ignore")
    with pytest.raises(TypeError, match="config"):
        mminference.patch(model, config=3)
    with pytest.raises(ValueError, match="3 layers"):
        mminference.patch(model, HeadConfig([Dense(), Dense(), Dense()]))
    with pytest.raises(TypeError, match="model"):
        mminference.patch(torch.nn.Linear(2, 2))
    from transformers import Qwen2_5_VLForConditionalGeneration

    narrow = Qwen2_5_VLForConditionalGeneration(tm.qwen2_5_vl_config(hidden=128, heads=4, kv_heads=2))
    with pytest.raises(ValueError, match="head_dim 32"):
        mminference.patch(narrow)
    assert getattr(model, "_mminference", None) is None  # nothing half-applied
    assert model.config.get_text_config()._attn_implementation == "sdpa"


def test_a_failing_repatch_keeps_the_earlier_patch():
    model = tm.build("qwen2_5_vl")
    state = mminference.patch(model, SPARSE)
    with pytest.raises(ValueError, match="3 layers"):
        mminference.patch(model, HeadConfig([Dense(), Dense(), Dense()]))
    with pytest.raises(TypeError, match="min_prefil"):
        mminference.patch(model, min_prefil_tokens=3)
    assert model._mminference is state and "forward" in model.__dict__
    assert model.config.get_text_config()._attn_implementation == "mminference_sdpa"
    mminference.unpatch(model)
    assert model.config.get_text_config()._attn_implementation == "sdpa"


def test_config_none_auto_path_and_repatch(monkeypatch, tmp_path):
    model = tm.build("qwen2_5_vl")
    assert mminference.patch(model).head_config == HeadConfig("auto")
    assert mminference.patch(model, "auto").head_config == HeadConfig("auto")  # re-patching replaces
    loaded = HeadConfig([VerticalSlash(64, 64, 16, 16), Dense()])
    calls = []
    fake = types.ModuleType("mminference.config")
    fake.load_config = lambda path: calls.append(path) or loaded
    monkeypatch.setitem(sys.modules, "mminference.config", fake)
    monkeypatch.setattr(mminference, "config", fake, raising=False)
    path = tmp_path / "heads.json"
    assert mminference.patch(model, path).head_config is loaded
    assert mminference.patch(model, str(path)).head_config is loaded
    assert calls == [path, str(path)]
    mminference.unpatch(model)
    assert model.config.get_text_config()._attn_implementation == "sdpa"
    assert "forward" not in model.__dict__


def test_masks_other_than_4d_tensors_fall_back_to_dense():
    """Flash attention's 2-D padding mask and flex attention's BlockMask cannot be checked against a
    plan: the element runs dense (no AttributeError on a BlockMask)."""
    from torch.nn.attention.flex_attention import create_block_mask

    from mminference.integration.attention_fn import _mask_matches
    from mminference.integration.context import ElementPlan
    from mminference.layout import ModalityLayout

    seq = 128
    plan = ElementPlan(0, seq, ModalityLayout.from_spans(seq, []))
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()[None, None]
    assert _mask_matches(causal, 0, plan, seq) and _mask_matches(None, 0, plan, seq)
    assert not _mask_matches(torch.ones(1, seq, dtype=torch.bool), 0, plan, seq)
    block_mask = create_block_mask(lambda b, h, q, k: q >= k, 1, None, seq, seq, device="cpu")
    assert not _mask_matches(block_mask, 0, plan, seq)
