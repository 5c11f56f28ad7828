"""mminference: modality-aware permutation sparse attention for long-context VLM prefill."""

from .ops import (
    build_a_shape_index,
    build_grid_index,
    build_modality_permutation,
    build_vertical_slash_index,
    sparse_attention,
)
from .sparse_index import SparseIndex

__version__ = "0.1.0"

__all__ = [
    "SparseIndex",
    "build_a_shape_index",
    "build_grid_index",
    "build_modality_permutation",
    "build_vertical_slash_index",
    "sparse_attention",
]
