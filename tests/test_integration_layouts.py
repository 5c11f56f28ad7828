"""Layouts derived from model inputs vs spans and grids hand-computed from the token construction
(tests/integration_inputs.py), for every supported family. Config only: no model is run."""

import pytest
import torch

pytest.importorskip("transformers")

from integration_inputs import IMAGE, TEXT, VIDEO, Builder, internvl_prompt, prompt_for, qwen_prompt  # noqa: E402

from mminference import Modality, ModalityLayout, Segment, VisualGrid  # noqa: E402
from mminference.integration import PatchOptions, explicit_layouts, plan_batch, random_models as tm  # noqa: E402
from mminference.integration.families import family_of  # noqa: E402

PROMPTS = {  # model_type -> {kind: items}
    "qwen2_vl": {"image": [("image", 8, 12)], "video": [("video", 4, 8, 8)],
                 "interleaved": [("video", 2, 8, 8), ("image", 4, 8), ("video", 3, 8, 8)]},
    "qwen2_5_vl": {"image": [("image", 8, 12)], "video": [("video", 4, 8, 8)],
                   "interleaved": [("video", 2, 8, 8), ("image", 4, 8), ("video", 3, 8, 8)]},
    "qwen3_vl": {"image": [("image", 8, 12)], "video": [("video", 4, 8, 8)],
                 "interleaved": [("video", 2, 8, 8), ("image", 4, 8), ("video", 3, 8, 8)]},
    "llava_onevision": {"image": [("image",)], "video": [("video", 5)],
                        "interleaved": [("video", 3), ("image",), ("video", 3)]},
    "llava_next_video": {"image": [("image",)], "video": [("video", 5)],
                         "interleaved": [("video", 3), ("image",), ("video", 3)]},
    "internvl": {"image": [("image", 3)], "video": [("video", 4)],
                 "interleaved": [("video", 3), ("image", 2), ("video", 2)]},
}
CASES = [(mt, kind) for mt, kinds in PROMPTS.items() for kind in kinds]


def _config(model_type):
    return tm.CONFIGS[model_type]()


def _plans(config, inputs, **options):
    return plan_batch(family_of(config), config, PatchOptions(**options), inputs)


def _visual(layout):
    return [(int(s.modality), s.start, s.end, None if s.grid is None else (s.grid.frames, s.grid.rows, s.grid.cols))
            for s in layout.segments if s.modality != Modality.TEXT]


@pytest.mark.parametrize("model_type,kind", CASES)
def test_layout_matches_hand_computed_spans(model_type, kind):
    prompt = prompt_for(model_type, PROMPTS[model_type][kind])
    (plan,) = _plans(_config(model_type), prompt["inputs"])
    assert (plan.start, plan.end) == (0, prompt["seq"])
    assert _visual(plan.layout) == prompt["expected"]
    # everything else is text, and the visual segments hold exactly the visual tokens of the prompt
    ids = plan.layout.modality_ids()
    covered = sum(e - s for _, s, e, _ in prompt["expected"])
    assert int((ids != TEXT).sum()) == covered


def test_qwen_images_of_different_sizes_drop_the_image_grid():
    # two images: 4 x 4 and 2 x 4 merged tokens per frame; one stride cannot describe both
    prompt = qwen_prompt([("image", 8, 8), ("image", 4, 8), ("video", 2, 8, 8)])
    (plan,) = _plans(_config("qwen2_5_vl"), prompt["inputs"])
    expected = [(m, s, e, None if m == IMAGE else g) for m, s, e, g in prompt["expected"]]
    assert _visual(plan.layout) == expected
    assert plan.layout.tokens_per_frame(Modality.VIDEO) == 16


def test_qwen_grid_rows_must_match_the_tokens():
    prompt = qwen_prompt([("video", 4, 8, 8)])
    inputs = dict(prompt["inputs"], video_grid_thw=torch.tensor([[2, 8, 8]]))  # half the frames
    with pytest.raises(ValueError, match="video_grid_thw"):
        _plans(_config("qwen2_5_vl"), inputs)
    inputs = dict(prompt["inputs"], video_grid_thw=torch.tensor([[4, 8, 8], [2, 8, 8]]))  # an extra video
    with pytest.raises(ValueError, match="video_grid_thw"):
        _plans(_config("qwen2_5_vl"), inputs)


def test_qwen_from_inputs_embeds_uses_mm_token_type_ids():
    prompt = qwen_prompt([("image", 8, 8), ("video", 2, 8, 8)])
    inputs = dict(prompt["inputs"])
    ids = inputs.pop("input_ids")
    inputs["inputs_embeds"] = torch.zeros(1, ids.shape[1], 8)
    (plan,) = _plans(_config("qwen2_5_vl"), inputs)
    assert _visual(plan.layout) == prompt["expected"]
    del inputs["mm_token_type_ids"]
    with pytest.raises(ValueError, match="mm_token_type_ids"):
        _plans(_config("qwen2_5_vl"), inputs)


@pytest.mark.parametrize("model_type", ["qwen2_5_vl", "llava_onevision", "internvl"])
def test_left_padding_shifts_the_range_not_the_layout(model_type):
    items = PROMPTS[model_type]["interleaved"]
    long_prompt = prompt_for(model_type, items, text_between=12)
    short_prompt = prompt_for(model_type, items, text_between=7)
    pad = long_prompt["seq"] - short_prompt["seq"]
    assert pad > 0
    inputs = {}
    for name, value in long_prompt["inputs"].items():
        if name in ("input_ids", "mm_token_type_ids"):
            short = torch.cat([torch.zeros(1, pad, dtype=value.dtype), short_prompt["inputs"][name]], 1)
            inputs[name] = torch.cat([value, short])
        else:  # visual inputs of both elements, element 0's first
            inputs[name] = torch.cat([value, short_prompt["inputs"][name]])
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    inputs["attention_mask"][1, :pad] = 0
    plans = _plans(_config(model_type), inputs)
    assert [(p.start, p.end) for p in plans] == [(0, long_prompt["seq"]), (pad, long_prompt["seq"])]
    assert _visual(plans[0].layout) == long_prompt["expected"]
    assert _visual(plans[1].layout) == short_prompt["expected"]


def test_mask_with_holes_is_rejected():
    prompt = qwen_prompt([("video", 2, 8, 8)])
    mask = torch.ones_like(prompt["inputs"]["input_ids"])
    mask[0, 3] = 0
    with pytest.raises(ValueError, match="attention_mask"):
        _plans(_config("qwen2_5_vl"), dict(prompt["inputs"], attention_mask=mask))


def test_internvl_frames_need_short_gaps():
    # two one-tile images 40 text tokens apart are images; 3 tokens apart (gap <= 16) they are frames
    cfg = _config("internvl")
    b = Builder().text(5)
    first = b.tokens(tm.IMAGE, 16, IMAGE)
    b.text(40)
    second = b.tokens(tm.IMAGE, 16, IMAGE)
    b.text(3)
    third = b.tokens(tm.IMAGE, 16, IMAGE)
    b.text(5)
    (plan,) = _plans(cfg, dict(input_ids=torch.tensor([b.ids])))
    grid = (1, 4, 4)
    assert _visual(plan.layout) == [(IMAGE, first, first + 16, grid), (VIDEO, second, second + 16, grid),
                                    (VIDEO, third, third + 16, grid)]
    (plan,) = _plans(cfg, dict(input_ids=torch.tensor([b.ids])), video_frame_gap=0)
    assert {m for m, *_ in _visual(plan.layout)} == {IMAGE}
    with pytest.raises(ValueError, match="tiles of 16"):
        _plans(cfg, dict(input_ids=torch.tensor([b.ids[:first + 10] + b.ids[first + 16:]])))


def test_internvl_video_prompt_is_one_video_per_frame():
    prompt = internvl_prompt([("video", 3)])
    (plan,) = _plans(_config("internvl"), prompt["inputs"])
    assert plan.layout.tokens_per_frame(Modality.VIDEO) == 16
    assert len(plan.layout.spans(Modality.VIDEO)) == 3


@pytest.mark.parametrize("model_type", ["llava_onevision", "llava_next_video"])
def test_llava_video_run_must_be_whole_frames(model_type):
    prompt = prompt_for(model_type, [("video", 2)])
    ids = prompt["inputs"]["input_ids"]
    start = prompt["expected"][0][1]
    broken = torch.cat([ids[:, :start + 5], ids[:, start + 8:]], 1)  # 3 video tokens fewer
    with pytest.raises(ValueError, match="video tokens"):
        _plans(_config(model_type), dict(input_ids=broken))
    with pytest.raises(ValueError, match="explicit_layouts"):
        _plans(_config(model_type), dict(inputs_embeds=torch.zeros(1, ids.shape[1], 8)))


def test_explicit_layouts_override_derivation():
    seq = 40
    layout = ModalityLayout.from_spans(seq, [Segment(Modality.VIDEO, 4, 36, VisualGrid(2, 4, 4))])
    with explicit_layouts([layout]):
        (plan,) = _plans(_config("llava_onevision"), dict(inputs_embeds=torch.zeros(1, seq, 8)))
    assert plan.layout == layout
    with explicit_layouts(layout), pytest.raises(ValueError, match="layouts"):
        _plans(_config("llava_onevision"), dict(inputs_embeds=torch.zeros(1, seq + 1, 8)))
    with pytest.raises(TypeError, match="layouts"):
        with explicit_layouts(["not a layout"]):
            pass
