"""The evaluation pipeline end to end: prompt, greedy generation, answer extraction, report, dense vs
sparse. `pytest -m eval --model PATH` (or env MMI_EVAL_MODEL) runs it on a real local VLM (GPU
advised; env MMI_EVAL_TASKS adds a Video-MME-style task file, MMI_EVAL_OUT a folder for the JSON
reports); without one, on the tiny random Qwen2.5-VL model on the CPU, where exact agreement at full
density is required."""

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

import mminference  # noqa: E402
from mminference import AShape, Dense, HeadConfig  # noqa: E402
from mminference.eval import (MCQItem, TaskError, VideoPart, accuracy, accuracy_by, compare_dense_sparse,  # noqa: E402
                              evaluate, extract_answer, generate_reply, load_model, load_tasks, make_mmniah,
                              make_vniah, measure_tokens_per_frame, niah_grid, plot_niah_heatmap, question_text,
                              tiny_model)
from mminference.eval.runner import to_model  # noqa: E402

pytestmark = pytest.mark.eval


@dataclasses.dataclass
class Setup:
    model: torch.nn.Module
    encoder: object
    real: bool
    frame_size: int
    vniah_frames: list
    mmniah_frames: list
    depths: list
    min_prefill_tokens: int


@pytest.fixture(scope="module")
def setup(request):
    path = request.config.getoption("--model", default=None) or os.environ.get("MMI_EVAL_MODEL")
    if path:
        model, encoder = load_model(path)
        return Setup(model, encoder, True, 448, [32, 64], [32], [0.0, 0.25, 0.5, 0.75, 1.0], 1024)
    model, encoder = tiny_model(seed=0, frame_size=32)
    return Setup(model, encoder, False, 32, [6, 12], [16], [0.0, 0.5, 1.0], 1)


@pytest.fixture(scope="module")
def items(setup):
    size = setup.frame_size
    tpf = measure_tokens_per_frame(setup.encoder, size, size)
    vniah = make_vniah(setup.vniah_frames, setup.depths, height=size, width=size, seed=1)
    mmniah = make_mmniah(setup.mmniah_frames, setup.depths[::2], tokens_per_frame=tpf, segments=2,
                         count_tokens=setup.encoder.count_tokens, height=size, width=size, seed=1)
    return vniah + mmniah


def _save(name, report):
    out = os.environ.get("MMI_EVAL_OUT")
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump(report.to_dict(), f, indent=1, default=str)


@pytest.fixture(scope="module")
def full_density(setup, items):
    """Every item dense and through the sparse path with a Dense pattern for every head."""
    report = compare_dense_sparse(setup.model, setup.encoder, items, HeadConfig(Dense()), min_prefill_tokens=1)
    print(report.format(by=["task", "frames"]))
    _save("full_density", report)
    return report


def test_prompt_holds_the_context_and_the_question(setup, items):
    item = items[0]
    inputs = setup.encoder.encode(item, 8)
    ids = inputs["input_ids"][0].tolist()
    n = item.metadata["frames"]
    if not setup.real:  # characters + the Qwen video block: "user: " [video] "\n" question "\nassistant: "
        assert setup.encoder.decode(ids) == "user: \n" + question_text(item) + "\nassistant: "
        cfg = setup.model.config
        pads = (n + n % 2) // 2 * (setup.frame_size // 8) ** 2
        assert ids[6] == cfg.vision_start_token_id and ids[7 + pads] == cfg.vision_end_token_id
        assert ids[7:7 + pads] == [cfg.video_token_id] * pads
        assert inputs["mm_token_type_ids"][0].tolist() == [2 if t == cfg.video_token_id else 0 for t in ids]
        assert inputs["video_grid_thw"].tolist() == [[(n + n % 2) // 2, setup.frame_size // 4, setup.frame_size // 4]]
    else:
        text = setup.encoder.decode(ids)
        for line in question_text(item).splitlines():
            assert line.strip() in text


def test_generation_reads_the_answer_position(setup, items):
    """The recorded answer logits are a plain forward's last-position logits; the reply decodes the
    greedy tokens and its letter is re-extracted."""
    item = items[1]
    inputs = setup.encoder.encode(item, 8)
    generation = generate_reply(setup.model, setup.encoder, inputs, item.letters)
    with torch.no_grad():
        logits = setup.model(**to_model(inputs, setup.model)).logits[0, -1].float().cpu()
    tol = 1e-4 if not setup.real else 5e-2 * float(logits.abs().max())  # bf16: cached vs uncached paths
    torch.testing.assert_close(generation.answer_logits, logits, rtol=0, atol=tol)
    if not setup.real:
        assert generation.tokens[0] == int(logits.argmax())
    assert generation.seq_len == inputs["input_ids"].shape[1] and 1 <= len(generation.tokens) <= 16
    assert generation.reply.text == setup.encoder.decode(generation.tokens)
    assert generation.reply.prediction == extract_answer(generation.reply.text, item.letters)
    assert generation.reply.prefill_s > 0


def test_full_density_sparse_path_agrees_with_dense(setup, items, full_density):
    report = full_density
    assert report.items == report.expected_items == len(items)
    assert [r.item_id for r in report.rows] == [i.item_id for i in items]
    layers = setup.model.config.get_text_config().num_hidden_layers
    for r, item in zip(report.rows, items):
        assert r.answer == item.answer and r.metadata == dict(item.metadata)
        assert r.sparse_calls == layers and r.density == pytest.approx(1.0, abs=1e-9)  # one prefill, all layers
        for reply in (r.dense, r.sparse):
            assert reply.prediction == extract_answer(reply.text, item.letters)
    assert report.dense_accuracy == sum(r.dense.prediction == i.answer for r, i in zip(report.rows, items)) / len(items)
    assert report.sparse_items == len(items) and report.mean_density == pytest.approx(1.0, abs=1e-9)
    if not setup.real:  # float32: the Dense pattern reproduces SDPA to rounding
        assert report.agreement == 1.0 and report.max_kl < 1e-9
        assert all(r.dense.text == r.sparse.text for r in report.rows)
        assert report.sparse_accuracy == report.dense_accuracy
    else:  # bf16: a different summation order
        assert report.agreement >= 0.9 and report.mean_kl < 1e-2


def test_sparse_report_matches_an_independent_kl(setup, items):
    """A real sparse config: density below 1, and each row's KL equals one computed here from two plain
    forwards (unpatched, then patched)."""
    config = HeadConfig(AShape(sink=4, local=32)) if not setup.real else "auto"
    tiles = {} if setup.real else dict(block_q=32, block_k=32)  # small tiles: a few hundred tokens get sparse
    subset = items[:2] + items[-1:]
    report = compare_dense_sparse(setup.model, setup.encoder, subset, config,
                                  min_prefill_tokens=setup.min_prefill_tokens, warmup=False, **tiles)
    print(report.format())
    _save("sparse", report)
    assert report.items == len(subset) and getattr(setup.model, "_mminference", None) is None
    if setup.real:
        floor = float(os.environ.get("MMI_EVAL_MIN_AGREEMENT", "0.5"))
        assert report.agreement >= floor and all(0 < r.density <= 1 for r in report.rows if r.density is not None)
        return
    model = setup.model
    for r, item in zip(report.rows, subset):
        assert 0.0 < r.density < 0.6 and r.sparse_calls == 2
        inputs = setup.encoder.encode(item, 8)
        with torch.no_grad():
            dense = model(**inputs).logits[0, -1].double()
            mminference.patch(model, config, min_prefill_tokens=1, **tiles)
            try:
                sparse = model(**inputs).logits[0, -1].double()
            finally:
                mminference.unpatch(model)
        p, q = torch.softmax(dense, 0), torch.softmax(sparse, 0)
        expected = float((p * (p.log() - q.log())).sum())
        assert expected > 1e-6  # the sparse pattern does change the answer distribution
        assert r.kl == pytest.approx(expected, rel=1e-3, abs=1e-9)


def _write_gif(path, frames):
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=500, loop=0)


def test_task_file_runs_end_to_end(setup, tmp_path):
    """Video-MME-style records with GIF videos: load, answer, score by duration / domain / task type."""
    size = setup.frame_size
    source = make_vniah(setup.vniah_frames, [0.0, 1.0], height=size, width=size, seed=3)
    records = []
    for k, item in enumerate(source):
        _write_gif(tmp_path / f"{item.item_id}.gif", item.parts[0].frames)
        records.append({"question_id": item.item_id, "video": f"{item.item_id}.gif", "question": item.question,
                        "options": [f"{l}. {o}" for l, o in zip(item.letters, item.options)], "answer": item.answer,
                        "duration": "short" if item.metadata["frames"] == setup.vniah_frames[0] else "medium",
                        "domain": "Synthetic", "task_type": "Needle" if k % 2 else "OCR"})
    (tmp_path / "tasks.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    items = load_tasks(str(tmp_path / "tasks.jsonl"))
    frames = max(setup.vniah_frames)
    results = evaluate(setup.model, setup.encoder, items, num_frames=frames)
    assert [r.item_id for r in results] == [r["question_id"] for r in records]
    assert all(r.density is None for r in results)  # unpatched
    for r, item in zip(results, items):
        assert r.answer == item.answer and r.reply.prediction == extract_answer(r.reply.text, item.letters)
    by = accuracy_by(results, "duration")
    assert sum(n for _, n in by.values()) == len(items) and set(by) == {"short", "medium"}
    assert accuracy(results) == sum(r.reply.prediction == r.answer for r in results) / len(items)
    if setup.real:
        assert accuracy(results) >= 0.5  # a big word on a white frame: real VLMs read it
    mminference.patch(setup.model, HeadConfig(Dense()), min_prefill_tokens=1, track_density=True)
    try:
        patched = evaluate(setup.model, setup.encoder, items, num_frames=frames)
    finally:
        mminference.unpatch(setup.model)
    assert all(p.density == pytest.approx(1.0) for p in patched)
    if not setup.real:
        assert [p.reply.text for p in patched] == [r.reply.text for r in results]


def test_real_task_file(setup):
    path = os.environ.get("MMI_EVAL_TASKS")
    if not (setup.real and path):
        pytest.skip("set --model PATH and MMI_EVAL_TASKS=tasks.jsonl to score a task file")
    items = load_tasks(path)
    frames = int(os.environ.get("MMI_EVAL_FRAMES", "64"))
    report = compare_dense_sparse(setup.model, setup.encoder, items, "auto", num_frames=frames,
                                  min_prefill_tokens=setup.min_prefill_tokens)
    print(report.format(by=["duration", "domain", "task_type"]))
    _save("tasks", report)
    assert report.items == len(items)


def test_a_failing_item_stops_the_run_and_names_it(setup, items, tmp_path):
    corrupt = tmp_path / "corrupt.gif"
    corrupt.write_bytes(b"GIF89a")
    bad = MCQItem("broken-clip", "Which?", ("a", "b"), "A", (VideoPart(path=str(corrupt)),))
    with pytest.raises(TaskError, match="item 'broken-clip'.*cannot be decoded"):
        evaluate(setup.model, setup.encoder, [items[0], bad])
    with pytest.raises(TaskError, match="item 'broken-clip'"):
        compare_dense_sparse(setup.model, setup.encoder, [bad, items[0]], HeadConfig(Dense()), min_prefill_tokens=1)
    assert getattr(setup.model, "_mminference", None) is None


def test_niah_heatmap_of_the_run(setup, items, full_density):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in full_density.rows if r.metadata["task"] == "v-niah"]
    depths, lengths, grid = niah_grid(rows, correct="sparse_correct")
    assert depths == sorted(setup.depths) and lengths == sorted(setup.vniah_frames)
    for i, d in enumerate(depths):
        for j, n in enumerate(lengths):
            hits = [r.sparse_correct for r in rows if r.metadata["depth"] == d and r.metadata["frames"] == n]
            assert len(hits) == 1 and grid[i, j] == float(hits[0])
    figure = plot_niah_heatmap(rows, correct="sparse_correct", title="V-NIAH")
    drawn = figure.axes[0].images[0].get_array()
    np.testing.assert_array_equal(np.asarray(drawn), grid)
    plt.close(figure)
    with pytest.raises(ValueError, match="not a NIAH item"):
        niah_grid([dataclasses.replace(rows[0], metadata={})])
