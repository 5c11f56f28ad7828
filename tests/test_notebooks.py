"""Notebooks run top to bottom on the CPU, and their printed results are checked."""

import os
import re

import pytest

nbformat = pytest.importorskip("nbformat")
NotebookClient = pytest.importorskip("nbclient").NotebookClient

NOTEBOOKS = os.path.join(os.path.dirname(__file__), "..", "notebooks")


def _execute(name):
    path = os.path.join(NOTEBOOKS, name)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": NOTEBOOKS}}).execute()
    return notebook


def _outputs(notebook, output_type):
    return [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
            if out.get("output_type") == output_type]


def _run(name):
    return "\n".join(out.get("text", "") for out in _outputs(_execute(name), "stream"))


def test_sparse_index_basics_notebook():
    text = _run("sparse_index_basics.ipynb")
    errors = {m.group(1): float(m.group(3)) for m in
              re.finditer(r"^(\S+)\s+density ([\d.]+)\s+relative error (\S+)$", text, re.M)}
    assert set(errors) == {"A-shape", "vertical-slash", "grid", "causal"}
    assert errors["causal"] < 1e-5
    assert all(0 < e < 1 for name, e in errors.items() if name != "causal")
    assert re.search(r"stride \[\[\d+, \d+\]\] phase", text)


def _number(pattern, text):
    """The float of the one match of `pattern` (one group) in `text`."""
    found = re.findall(pattern, text, re.M)
    assert len(found) == 1, (pattern, found)
    return float(found[0])


def test_quickstart_notebook():
    text = _run("quickstart.ipynb")
    assert "prompt tokens 1282: video of 8 x 12 x 12 tokens at 65" in text  # 8 temporal patches of 12 x 12 + 130 text
    assert "(2 sparse attention calls per prefill)" in text  # both layers
    assert 0.0 < _number(r"calls per prefill\), density ([\d.]+)$", text) < 1.0
    assert _number(r"^dense-pattern max logit difference (\S+)$", text) < 1e-4  # the Dense pattern is exact
    assert 0.0 < _number(r"^sparse logits relative error (\S+),", text) < 0.5
    assert re.search(r"; attention calls: 2 sparse, 6 dense$", text, re.M)  # prefill sparse, 3 decode steps dense
    assert "items: 3 of 3 (3 ran sparse)" in text
    assert 0.0 < _number(r"^sparse density: ([\d.]+)$", text) < 1.0
    assert _number(r"KL \(dense \|\| sparse\): mean (\S+),", text) >= 0.0


def test_patterns_notebook():
    notebook = _execute("patterns.ipynb")
    text = "\n".join(out.get("text", "") for out in _outputs(notebook, "stream"))
    assert "sequence 640 tokens, video (128, 512), 64 tokens per frame" in text
    heads = re.findall(r"^head (\d): (\w+) .* stride (\d+) phase (\d+)$", text, re.M)
    assert [h[0] for h in heads] == ["0", "1", "2", "3"]
    assert all(h[2] == "64" for h in heads)  # every head finds the frame stride
    assert any(h[1] == "Grid" for h in heads)
    rows = [(f.strip(), label.strip(), float(d), float(r), float(e)) for f, label, d, r, e in
            re.findall(r"^([\w -]+)\|([^|]+)\| density ([\d.]+) \| recall ([\d.]+) \| error (\S+)$", text, re.M)]
    families = {f for f, *_ in rows}
    assert families == {"dense", "A-shape", "vertical-slash", "grid", "Q-boundary"}
    (dense,) = [r for r in rows if r[0] == "dense"]
    assert dense[2] == 1.0 and dense[3] == 1.0 and dense[4] < 1e-5
    for family, _, density, recall, error in rows:
        assert 0.0 < density <= 1.0 and 0.0 < recall <= 1.0 and error >= 0.0
    ashape = [r for r in rows if r[0] == "A-shape"]  # nested masks: a wider window keeps more
    assert [r[2] for r in ashape] == sorted(r[2] for r in ashape) and len({r[2] for r in ashape}) == 4
    assert [r[3] for r in ashape] == sorted(r[3] for r in ashape) and len({r[3] for r in ashape}) == 4
    images = [out for out in _outputs(notebook, "display_data") if "image/png" in out.get("data", {})]
    assert len(images) == 3  # attention maps, kept masks, recall vs density


def test_search_notebook():
    text = _run("search.ipynb")
    assert "searched 2 layers x 4 heads" in text
    assert "{'format': 'mminference.head_config', 'version': 1, 'num_layers': 2, 'num_heads': 4}" in text
    heads = re.findall(r"^layer (\d) head (\d): (\w+)\s+kept mass ([\d.]+) cost ([\d.]+) of dense$", text, re.M)
    assert [(int(l), int(h)) for l, h, *_ in heads] == [(l, h) for l in range(2) for h in range(4)]
    for _, _, name, mass, cost in heads:
        assert name in {"Dense", "AShape", "VerticalSlash", "Grid", "QBoundary", "TwoDBoundary"}
        assert 0.0 < float(mass) <= 1.0 and 0.0 < float(cost) <= 0.1 + 1e-3  # within the 0.1 budget
    assert re.search(r"^config layers 2; patched prefill: 2 sparse calls, density ", text, re.M)
    assert 0.0 < _number(r"2 sparse calls, density ([\d.]+),", text) <= 1.0
