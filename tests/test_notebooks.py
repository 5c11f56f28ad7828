"""Notebooks run top to bottom on the CPU, and their printed results are checked."""

import os
import re

import pytest

nbformat = pytest.importorskip("nbformat")
NotebookClient = pytest.importorskip("nbclient").NotebookClient

NOTEBOOKS = os.path.join(os.path.dirname(__file__), "..", "notebooks")


def _run(name):
    path = os.path.join(NOTEBOOKS, name)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": NOTEBOOKS}}).execute()
    return "\n".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for out in cell.get("outputs", []) if out.get("output_type") == "stream")


def test_sparse_index_basics_notebook():
    text = _run("sparse_index_basics.ipynb")
    errors = {m.group(1): float(m.group(3)) for m in
              re.finditer(r"^(\S+)\s+density ([\d.]+)\s+relative error (\S+)$", text, re.M)}
    assert set(errors) == {"A-shape", "vertical-slash", "grid", "causal"}
    assert errors["causal"] < 1e-5
    assert all(0 < e < 1 for name, e in errors.items() if name != "causal")
    assert re.search(r"stride \[\[\d+, \d+\]\] phase", text)
