"""The integration on a CUDA device in bf16 (skipped without one): dense-config logits, sparse prefill
with dense decode, a left-padded batch, and the tiny demo."""

import pytest
import torch

pytest.importorskip("transformers")

from integration_inputs import prompt_for  # noqa: E402

import mminference  # noqa: E402
from mminference import AShape, Dense, HeadConfig  # noqa: E402
from mminference.integration import random_models as tm  # noqa: E402

pytestmark = pytest.mark.gpu
LAYERS = 2


def _cuda(inputs):
    return {k: v.cuda() for k, v in inputs.items()}


def _relative(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("model_type", ["qwen2_5_vl", "llava_onevision", "internvl"])
def test_dense_config_matches_unpatched_bf16(model_type):
    model = tm.build(model_type, seed=1).to("cuda", torch.bfloat16)
    items = {"qwen2_5_vl": [("image", 8, 8), ("video", 8, 16, 16)], "llava_onevision": [("video", 32)],
             "internvl": [("image", 2), ("video", 32)]}[model_type]
    inputs = _cuda(prompt_for(model_type, items, seed=2)["inputs"])
    inputs = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs.items()}
    with torch.no_grad():
        reference = model(**inputs).logits
        state = mminference.patch(model, Dense(), min_prefill_tokens=1)
        logits = model(**inputs).logits
        mminference.unpatch(model)
    assert (state.stats.sparse, state.stats.dense) == (LAYERS, 0)
    assert _relative(logits, reference) < 2e-2


def test_sparse_generate_and_padded_batch_on_cuda():
    model = tm.build("qwen2_5_vl", seed=3).to("cuda", torch.bfloat16)
    long_p = prompt_for("qwen2_5_vl", [("video", 8, 16, 16)], seed=4, text_between=20)
    short_p = prompt_for("qwen2_5_vl", [("video", 8, 16, 16)], seed=5, text_between=7)
    pad = long_p["seq"] - short_p["seq"]
    batch = {}
    for name, value in long_p["inputs"].items():
        other = short_p["inputs"][name]
        if name in ("input_ids", "mm_token_type_ids"):
            other = torch.cat([torch.zeros(1, pad, dtype=other.dtype), other], 1)
        batch[name] = torch.cat([value, other])
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    batch["attention_mask"][1, :pad] = 0
    batch = _cuda(batch)
    batch["pixel_values_videos"] = batch["pixel_values_videos"].to(torch.bfloat16)
    single = _cuda(short_p["inputs"])
    single["pixel_values_videos"] = single["pixel_values_videos"].to(torch.bfloat16)
    state = mminference.patch(model, HeadConfig(AShape(32, 64)), min_prefill_tokens=1)
    with torch.no_grad():
        padded = model(**batch).logits
        alone = model(**single).logits
        state.stats.reset()
        out = model.generate(**batch, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    mminference.unpatch(model)
    assert out.shape == (2, long_p["seq"] + 3)
    assert (state.stats.sparse, state.stats.dense) == (LAYERS, 2 * LAYERS)
    assert _relative(padded[1, pad:], alone[0]) < 2e-2


def test_tiny_demo_on_cuda():
    from mminference.demo import run

    result = run(model_size="tiny", new_tokens=4, device="cuda")  # 4226 tokens, bf16
    assert result["calls"] == dict(sparse=4, dense=12)  # 4 layers: one sparse prefill, 3 dense decode steps
    assert 0 < result["density"] < 1
