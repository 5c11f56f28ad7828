"""Offline pattern search: per layer and head, the best sparse pattern (A-shape, vertical-slash,
grid, with no / K / Q / 2D modality boundary) under a kernel-time budget, written as a versioned
JSON config (`mminference.config`).

    results = search_layer(q, k, v, layout, Budget("0.1"))           # one layer, captured q/k/v
    mminference search --model tiny-qwen2.5-vl --calib synthetic --budget 0.1 --out cfg.json
"""

from .cost import Budget, CostModel, dense_cost, fit_cost_model, index_cost, index_work, time_cost_samples
from .layer import HeadResult, search_layer
from .options import BOUNDARY_ORDER, SearchOptions
from .stats import LayerStatistics, layer_statistics, sample_rows

__all__ = ["BOUNDARY_ORDER", "Budget", "CostModel", "HeadResult", "LayerStatistics", "SearchOptions", "dense_cost",
           "fit_cost_model", "index_cost", "index_work", "layer_statistics", "sample_rows", "search_layer",
           "time_cost_samples"]
