"""Loads the compiled extension, whose import registers the torch.ops.mminference.* operators."""

import importlib

try:
    _C = importlib.import_module("mminference._C")
except ImportError as error:  # pragma: no cover - only reached on a broken install
    raise ImportError(
        "mminference's compiled extension (mminference._C) is missing or failed to load. "
        "Install the package with `pip install --no-build-isolation .` after installing torch, "
        f"or build in place with `python setup.py build_ext --inplace`. Cause: {error}"
    ) from error


def has_cuda_kernels() -> bool:
    """True when the extension was built with the CUDA kernels."""
    import torch

    return torch._C._dispatch_has_kernel_for_dispatch_key(
        "mminference::sparse_attention", "CUDA"
    )
