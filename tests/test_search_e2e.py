"""The search end to end on a tiny random Qwen2.5-VL-architecture model: attention capture through
transformers, a planted vertical-slash head found, resume per layer, determinism, the CLI."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from mminference import VerticalSlash
from mminference.config import read_config
from mminference.search import layer as layer_module
from mminference.search import runner
from mminference.search.calib import layout_from_qwen_inputs
from mminference.search.capture import capturing
from mminference.search.cost import CostModel
from mminference.search.models import TINY, load_model
from mminference.search.runner import SearchSettings, run_search

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = 7  # token id whose key every query of layer 0, head 0 looks for
MARKER_POSITIONS = (10, 200, 450, 1800)
VIDEO_START, FRAMES = 601, 4  # 4 frames of 16 x 16 patches -> 8 x 8 = 64 LM tokens each


def _plant_marker_head(loaded):
    """Layer 0, query head 0 attends every MARKER token: its query is constant along the lowest
    RoPE frequency pair (dims 31 / 63 rotate by < 0.003 rad over the prompt), and its KV head's key
    on dim 31 reads the MARKER embedding direction."""
    model = loaded.model
    hidden, dim = model.config.text_config.hidden_size, loaded.head_dim
    direction = torch.zeros(hidden)
    direction[0] = 1.0
    attn = model.language_model.layers[0].self_attn
    with torch.no_grad():
        attn.q_proj.weight[:dim] = 0.0
        attn.q_proj.bias[:dim] = 0.0
        attn.q_proj.bias[31] = 4.0
        attn.k_proj.weight[31] = direction
        attn.k_proj.bias[31] = 0.0
        embed = model.language_model.embed_tokens.weight
        embed[:, 0] = 0.0  # no other token has the direction
        embed[MARKER] = direction


def _calibration_file(path, vocab=240):
    gen = torch.Generator().manual_seed(1)
    seq = 2048
    ids = torch.randint(8, vocab, (seq,), generator=gen)
    ids[list(MARKER_POSITIONS)] = MARKER
    video = FRAMES * 64
    ids[VIDEO_START - 1] = 252
    ids[VIDEO_START:VIDEO_START + video] = 251
    ids[VIDEO_START + video] = 253
    types = torch.zeros(seq, dtype=torch.int32)
    types[VIDEO_START:VIDEO_START + video] = 2
    grid = torch.tensor([[FRAMES, 16, 16]])
    pixels = torch.randn(FRAMES * 16 * 16, 3 * 2 * 14 * 14, generator=gen)
    torch.save({"input_ids": ids[None], "mm_token_type_ids": types[None], "video_grid_thw": grid,
                "pixel_values_videos": pixels}, path)


@pytest.fixture(scope="module")
def planted_model():
    loaded = load_model(TINY, "cpu", torch.float32, seed=0)
    _plant_marker_head(loaded)
    return loaded


def _settings(calib, **kw):
    kw = {"budget": "0.25", "seed": 0, "rows_per_modality": 32, **kw}
    return SearchSettings(model=TINY, calib=calib, cost_model=CostModel(block_q=64, block_k=32), **kw)


def _strip_time(path):
    data = json.loads(open(path).read())
    data["metadata"].pop("search_seconds")
    return data


def test_search_through_transformers_finds_the_planted_head(tmp_path, planted_model):
    calib = tmp_path / "calib.pt"
    _calibration_file(calib)
    start = time.perf_counter()
    config = run_search(_settings(str(calib)), str(tmp_path / "cfg.json"), progress=None, loaded=planted_model)
    assert time.perf_counter() - start < 60
    assert (config.num_layers, config.num_heads) == (2, 4)
    head = config.head_config.for_layer(0, 4)[0]
    assert isinstance(head, VerticalSlash)
    for layer_scores in config.scores:
        for score in layer_scores:
            assert score["cost"] <= score["budget"] * (1 + 1e-9)
    assert config.scores[0][0]["kept_mass"] > 0.9
    assert config.metadata["tokens"] == [2048] and config.metadata["budget_spec"] == "0.25"


def test_runner_scores_exactly_the_captured_layers(tmp_path, planted_model):
    """What the runner writes for each layer equals `search_layer` on that layer's q / k / v."""
    calib = tmp_path / "calib.pt"
    _calibration_file(calib)
    config = run_search(_settings(str(calib)), str(tmp_path / "cfg.json"), progress=None, loaded=planted_model)
    item = runner.calibration_inputs(_settings(str(calib)), planted_model)[0]
    captured = {}
    with torch.no_grad(), capturing(lambda layer, q, k, v, s: captured.setdefault(layer, (q, k, v, s))):
        planted_model.model(**item.kwargs, use_cache=False)
    settings = _settings(str(calib))
    options = layer_module.SearchOptions(rows_per_modality=32, cost_model=settings.cost_model)
    for layer, (q, k, v, scale) in captured.items():
        direct = layer_module.search_layer(q, k, v, item.layout, "0.25", options, scale=scale)
        assert [r.pattern for r in direct] == config.head_config.for_layer(layer, 4)


def test_resume_redoes_only_missing_layers_and_is_deterministic(tmp_path, planted_model, monkeypatch):
    calib = tmp_path / "calib.pt"
    _calibration_file(calib)
    out, partial = str(tmp_path / "cfg.json"), str(tmp_path / "cfg.json.partial.jsonl")
    run_search(_settings(str(calib)), out, progress=None, loaded=planted_model)
    full = _strip_time(out)
    # Simulate an interruption after layer 0: keep the header and the first layer, plus a cut line.
    lines = open(partial).read().splitlines()
    assert len(lines) == 3
    with open(partial, "w") as f:
        f.write(lines[0] + "\n" + lines[1] + "\n" + lines[2][: len(lines[2]) // 2])
    os.remove(out)
    calls = []
    real = runner.search_layer
    monkeypatch.setattr(runner, "search_layer", lambda *a, **k: calls.append(1) or real(*a, **k))
    run_search(_settings(str(calib)), out, progress=None, loaded=planted_model)
    assert len(calls) == 1  # only layer 1 was searched again
    assert _strip_time(out) == full
    # The redone layer went on a line of its own (not onto the cut fragment): a second resume
    # finds both layers and searches nothing.
    assert sorted(runner.read_partial(partial, _settings(str(calib)))) == [(0, 0), (0, 1)]
    run_search(_settings(str(calib)), out, progress=None, loaded=planted_model)
    assert len(calls) == 1 and _strip_time(out) == full
    # Different settings refuse the partial file; --no-resume starts over with the same result.
    with pytest.raises(ValueError, match="partial"):
        run_search(_settings(str(calib), rows_per_modality=16), out, progress=None, loaded=planted_model)
    run_search(_settings(str(calib)), out, progress=None, loaded=planted_model, resume=False)
    assert _strip_time(out) == full


def test_capture_takes_a_causal_mask_and_rejects_padding():
    """A materialised causal mask is no padding (its upper triangle is all False); a padded one is."""
    import types

    from mminference.search.capture import capture_attention

    seq = 6
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, seq, 8, generator=gen) for _ in range(3))
    module = types.SimpleNamespace(layer_idx=3, is_causal=True, num_key_value_groups=1, training=False)
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()[None, None]
    seen = []
    with capturing(lambda layer, *tensors: seen.append(layer)):
        out, _ = capture_attention(module, q, k, v, causal)
        additive = torch.zeros(1, 1, seq, seq).masked_fill(~causal, torch.finfo(torch.float32).min)
        capture_attention(module, q, k, v, additive)
        padded = causal.clone()
        padded[..., :2] = False  # two left-padding keys
        with pytest.raises(ValueError, match="padding mask"):
            capture_attention(module, q, k, v, padded)
    assert seen == [3, 3]
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, want.transpose(1, 2))


def test_layout_from_qwen_inputs():
    types = torch.tensor([0, 0, 2, 2, 2, 2, 2, 2, 2, 2, 0, 1, 1, 1, 1, 0])
    layout = layout_from_qwen_inputs(types, torch.tensor([[2, 4, 4]]), torch.tensor([[1, 4, 4]]), merge=2)
    assert [(s.modality.name, s.start, s.end) for s in layout.segments] == [
        ("TEXT", 0, 2), ("VIDEO", 2, 10), ("TEXT", 10, 11), ("IMAGE", 11, 15), ("TEXT", 15, 16)]
    assert layout.tokens_per_frame(layout.segments[1].modality) == 4
    with pytest.raises(ValueError, match="video_grid_thw"):
        layout_from_qwen_inputs(types, torch.tensor([[2, 4, 6]]), torch.tensor([[1, 4, 4]]), merge=2)
    # Grid rows no run uses are an error, not silently dropped.
    with pytest.raises(ValueError, match="image_grid_thw: 2 grid rows describe more image tokens"):
        layout_from_qwen_inputs(types, torch.tensor([[2, 4, 4]]), torch.tensor([[1, 4, 4], [1, 4, 4]]), merge=2)
    # Qwen3-VL: timestamp text splits a video's frames into runs of one frame each.
    split = torch.tensor([0, 2, 2, 2, 2, 0, 0, 2, 2, 2, 2, 0])
    layout = layout_from_qwen_inputs(split, torch.tensor([[2, 4, 4]]), None, merge=2)
    assert [(s.start, s.end, s.grid.frames) for s in layout.segments if s.modality.name == "VIDEO"] == [
        (1, 5, 1), (7, 11, 1)]


def test_cli_on_the_tiny_model_under_a_minute(tmp_path):
    out = tmp_path / "cfg.json"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mminference.search", "--model", TINY, "--calib", "synthetic",
                           "--budget", "0.3", "--tokens", "2048", "--seed", "3", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert time.perf_counter() - start < 60
    assert "search [" in proc.stderr and "wrote" in proc.stderr  # progress bar and summary on stderr
    config = read_config(out)
    assert (config.num_layers, config.num_heads) == (2, 4)
    assert config.metadata["seed"] == 3 and config.metadata["device"] == "cpu"
    bad = subprocess.run([sys.executable, "-m", "mminference.search", "--model", TINY, "--budget", "-1",
                          "--out", str(tmp_path / "x.json")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "budget" in bad.stderr


@pytest.mark.gpu
def test_search_on_cuda_with_the_tiny_model(tmp_path):
    settings = SearchSettings(model=TINY, calib="synthetic", budget="0.3", tokens=4096, seed=0, device="cuda",
                              dtype="bfloat16")
    config = run_search(settings, str(tmp_path / "cfg.json"), progress=None)
    assert (config.num_layers, config.num_heads) == (2, 4)
    for layer_scores in config.scores:
        for score in layer_scores:
            assert score["cost"] <= score["budget"] * (1 + 1e-9)
    again = run_search(settings, str(tmp_path / "cfg2.json"), progress=None)
    assert again.head_config == config.head_config  # deterministic on the GPU too


def test_several_inputs_vote_per_head():
    from mminference import AShape
    from mminference.search.layer import HeadResult

    def result(family, error, local=64):
        return HeadResult(AShape(16, local), "none", family, 0.9, error, 1.0, 0.1, 2.0)

    per_input = [[result("a", 0.2), result("b", 0.1)],
                 [result("a", 0.1, local=128), result("c", 0.3)],
                 [result("b", 0.05), result("c", 0.2)]]
    chosen = runner._choose(per_input)
    # head 0: "a" twice -> its better-scoring input's pattern; head 1: "c" twice beats "b" once.
    assert chosen[0].family == "a" and chosen[0].pattern == AShape(16, 128)
    assert chosen[1].family == "c" and chosen[1].output_error == 0.2
