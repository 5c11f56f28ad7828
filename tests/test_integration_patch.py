"""patch / unpatch on tiny randomly initialised models of every supported family: dense-config logits
equal the unpatched model's, sparse configs run `generate` with a sparse prefill and dense decode, the
sparse path gets the hand-computed layout, and unpatch restores the model."""

import functools

import pytest
import torch

pytest.importorskip("transformers")

from integration_inputs import prompt_for  # noqa: E402

import mminference  # noqa: E402
from mminference import (AShape, Auto, Dense, Grid, HeadConfig, Modality as M, QBoundary, TwoDBoundary,  # noqa: E402
                         VerticalSlash)
from mminference import attention as attention_module  # noqa: E402
from mminference.integration import context, families  # noqa: E402
from mminference.integration import random_models as tm  # noqa: E402

ITEMS = {  # video + text + image prompts of 500-800 tokens
    "qwen2_vl": [("image", 8, 8), ("video", 8, 16, 16)],
    "qwen2_5_vl": [("image", 8, 8), ("video", 8, 16, 16)],
    "qwen3_vl": [("image", 8, 8), ("video", 8, 16, 16)],
    "llava_onevision": [("image",), ("video", 32)],
    "llava_next_video": [("image",), ("video", 32)],
    "internvl": [("image", 2), ("video", 32)],
}
FAMILIES = list(ITEMS)
LAYERS = 2

# layer 0: online choice; layer 1: a different pattern per head (4 heads)
SPARSE = HeadConfig([
    Auto(ashape=AShape(32, 64), vertical_slash=VerticalSlash(64, 64, 16, 16), grid=Grid(local=64)),
    [AShape(32, 64), VerticalSlash(64, 64, 16, 16), QBoundary({M.TEXT: AShape(32, 64), M.VIDEO: Grid(local=64)}),
     TwoDBoundary({(M.VIDEO, M.VIDEO): Grid(local=64), (M.TEXT, M.TEXT): AShape(32, 64),
                   (M.VIDEO, M.TEXT): AShape(32, 0)})],
])


def _visual(layout):
    return [(int(s.modality), s.start, s.end, None if s.grid is None else (s.grid.frames, s.grid.rows, s.grid.cols))
            for s in layout.segments if s.modality != M.TEXT]


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    model = tm.build(request.param, seed=1)
    prompt = prompt_for(request.param, ITEMS[request.param], seed=3)
    with torch.no_grad():
        reference = model(**prompt["inputs"]).logits
    yield request.param, model, prompt, reference
    if getattr(model, "_mminference", None) is not None:
        mminference.unpatch(model)


def test_dense_config_reproduces_the_unpatched_logits(family):
    _, model, prompt, reference = family
    state = mminference.patch(model, HeadConfig(Dense()), min_prefill_tokens=1)
    try:
        with torch.no_grad():
            logits = model(**prompt["inputs"]).logits
    finally:
        mminference.unpatch(model)
    assert (state.stats.sparse, state.stats.dense) == (LAYERS, 0)  # every layer took the sparse path
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-4)


def test_sparse_path_receives_the_hand_computed_layout(family, monkeypatch):
    _, model, prompt, _ = family
    seen = []
    real = attention_module.sparse_attention_for_layout

    def spy(q, k, v, layout, head_config, layer=0, **kw):
        seen.append((layer, tuple(q.shape), tuple(k.shape), layout))
        return real(q, k, v, layout, head_config, layer=layer, **kw)

    monkeypatch.setattr(attention_module, "sparse_attention_for_layout", spy)
    mminference.patch(model, SPARSE, min_prefill_tokens=1)
    try:
        with torch.no_grad():
            model(**prompt["inputs"])
    finally:
        mminference.unpatch(model)
    seq = prompt["seq"]
    assert [s[0] for s in seen] == list(range(LAYERS))
    for _, q_shape, k_shape, layout in seen:
        assert q_shape == (1, 4, seq, 64) and k_shape == (1, 2, seq, 64)  # GQA heads not expanded
        assert layout.seq_len == seq and _visual(layout) == prompt["expected"]


def test_sparse_generate_prefills_sparse_and_decodes_dense(family):
    _, model, prompt, reference = family
    new_tokens = 4
    state = mminference.patch(model, SPARSE, min_prefill_tokens=1, track_density=True)
    try:
        with torch.no_grad():
            logits = model(**prompt["inputs"]).logits
            assert [layer for layer, _ in state.stats.densities] == list(range(LAYERS))
            state.stats.reset()
            out = model.generate(**prompt["inputs"], max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 do_sample=False)
    finally:
        mminference.unpatch(model)
    assert out.shape == (1, prompt["seq"] + new_tokens)
    assert state.stats.sparse == LAYERS  # the prefill
    assert state.stats.dense == LAYERS * (new_tokens - 1)  # every decode step
    # the first generated token is the argmax of the sparse prefill's last logits
    assert int(out[0, prompt["seq"]]) == int(logits[0, -1].argmax())
    assert torch.isfinite(logits).all()
    assert (logits - reference).abs().max() > 1e-3  # the sparse patterns do drop keys at this length


def test_unpatch_restores_the_model(family):
    _, model, prompt, reference = family
    configs = [model.config, model.config.get_text_config(),
               *[getattr(model.config, k) for k in model.config.sub_configs]]
    before = [c._attn_implementation for c in configs]
    mminference.patch(model, SPARSE, min_prefill_tokens=1)
    assert model.config.get_text_config()._attn_implementation == "mminference_sdpa"
    assert "forward" in model.__dict__ and "generate" in model.__dict__
    mminference.unpatch(model)
    assert [c._attn_implementation for c in configs] == before
    assert "forward" not in model.__dict__ and "generate" not in model.__dict__
    assert getattr(model, "_mminference", None) is None
    with torch.no_grad():
        assert torch.equal(model(**prompt["inputs"]).logits, reference)
    with pytest.raises(ValueError, match="not patched"):
        mminference.unpatch(model)



def test_prefill_without_grids_takes_them_from_the_enclosing_generate(family):
    """Newer transformers (5.2x) run the vision encoder inside `generate` and leave `*_grid_thw` out of
    the prefill forward; the patched forward then derives the layout from the grids `generate` was
    called with, and gets the same plan as from the full inputs."""
    name, model, prompt, _ = family
    inputs = prompt["inputs"]
    grid_keys = [k for k in context.GENERATE_LAYOUT_INPUTS if inputs.get(k) is not None]
    if not grid_keys:
        pytest.skip(f"{name} passes no grid inputs")
    state = mminference.patch(model, SPARSE, min_prefill_tokens=1)
    try:
        derive = functools.partial(families.plan_batch, state.family, model.config, state.options)
        without_grids = {k: v for k, v in inputs.items() if k not in grid_keys}
        with pytest.raises(ValueError, match="grid rows"):
            derive(without_grids)
        with context.generate_inputs(inputs):
            merged = context.with_generate_inputs(without_grids)
        assert derive(merged) == derive(inputs)
        assert context.with_generate_inputs(without_grids) == without_grids  # outside generate: unchanged
    finally:
        mminference.unpatch(model)
