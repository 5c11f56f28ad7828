"""mminference: modality-aware permutation sparse attention for long-context VLM prefill."""

from .layout import Modality, ModalityLayout, Segment, VisualGrid, stack_modality_ids
from .ops import (
    PairKind,
    build_a_shape_index,
    build_boundary_index,
    build_grid_index,
    build_modality_permutation,
    build_vertical_slash_index,
    pair_pattern,
    sparse_attention,
)
from .sparse_index import SparseIndex
from .patterns import AShape, Auto, Dense, Grid, HeadConfig, QBoundary, TwoDBoundary, VerticalSlash
from .attention import HeadChoice, sparse_attention_for_layout
from .config import load_config, save_config
from .integration import patch, unpatch
from . import distributed  # mminference.distributed: sequence-parallel prefill on torch.distributed

__version__ = "0.1.0"

__all__ = [
    "AShape",
    "Auto",
    "Dense",
    "Grid",
    "HeadChoice",
    "HeadConfig",
    "QBoundary",
    "TwoDBoundary",
    "VerticalSlash",
    "load_config",
    "save_config",
    "sparse_attention_for_layout",
    "patch",
    "unpatch",
    "Modality",
    "ModalityLayout",
    "PairKind",
    "Segment",
    "SparseIndex",
    "VisualGrid",
    "build_a_shape_index",
    "build_boundary_index",
    "build_grid_index",
    "build_modality_permutation",
    "build_vertical_slash_index",
    "pair_pattern",
    "sparse_attention",
    "stack_modality_ids",
]
