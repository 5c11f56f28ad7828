import pytest
import torch


def pytest_addoption(parser):
    """`--model PATH`: the evaluation tests (marker `eval`) run this local VLM instead of the tiny random
    model (also: env MMI_EVAL_MODEL)."""
    parser.addoption("--model", default=None, metavar="PATH",
                     help="local transformers VLM for the eval tests (default: env MMI_EVAL_MODEL, else a tiny "
                          "random model)")


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` skip cleanly on machines without CUDA (CI is CPU-only)."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
