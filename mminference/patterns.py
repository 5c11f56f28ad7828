"""Per-head attention patterns and the per-layer, per-head configuration that assigns them.

A pattern says which structure a head's index has; its *contents* (vertical columns, slash
diagonals, grid stride / phase) are always estimated online from the input itself by
`mminference.attention.sparse_attention_for_layout`. All patterns are frozen dataclasses whose
constructors validate their fields (ValueError naming the field).

    Dense()                                  every causal key
    AShape(sink=128, local=4096)             first `sink` keys + `local` keys ending at the query
    VerticalSlash(num_vertical=1000, ...)    top key columns + top diagonals (text-only method)
    Grid(strides=None, ...)                  the video's grid lines (horizontal / vertical), permuted
    QBoundary({Modality.TEXT: VerticalSlash(), Modality.VIDEO: Grid()})   a pattern per query modality
    TwoDBoundary({(Modality.VIDEO, Modality.VIDEO): Grid(), ...})         a pattern per (query, key) pair
    Auto()                                   pick AShape / Grid / VerticalSlash per head online
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence, Union

from .layout import Modality


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")


def _check_fraction(name: str, value, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")


@dataclasses.dataclass(frozen=True)
class Dense:
    """Every causal key (exact attention)."""


@dataclasses.dataclass(frozen=True)
class AShape:
    """The first `sink` keys plus the `local` keys ending at each query (block-aligned).
    Inside a boundary pattern `local=0` (sink only) is allowed; on its own `local >= 1`."""

    sink: int = 128
    local: int = 4096

    def __post_init__(self):
        _check_int("sink", self.sink, 0)
        _check_int("local", self.local, 0)
        if self.sink + self.local == 0:
            raise ValueError("local: sink + local must be >= 1 (the pattern would attend no key)")


@dataclasses.dataclass(frozen=True)
class VerticalSlash:
    """Top `num_vertical` key columns and top `num_slash` diagonals of the last-query estimate, with
    the first `force_sink` keys and the `force_local` nearest diagonals always included."""

    num_vertical: int = 1000
    num_slash: int = 2048
    force_sink: int = 30
    force_local: int = 100

    def __post_init__(self):
        _check_int("num_vertical", self.num_vertical, 0)
        _check_int("num_slash", self.num_slash, 1)
        _check_int("force_sink", self.force_sink, 0)
        _check_int("force_local", self.force_local, 0)
        if self.force_sink > self.num_vertical:
            raise ValueError(f"force_sink ({self.force_sink}) must be <= num_vertical ({self.num_vertical})")
        if self.force_local > self.num_slash:
            raise ValueError(f"force_local ({self.force_local}) must be <= num_slash ({self.num_slash})")


@dataclasses.dataclass(frozen=True)
class Grid:
    """Grid lines of the gridded (video) segment at a detected stride / phase.

    strides: candidate strides for detection; None: the layout's tokens per frame plus its
        multiples and divisors (>= 2) up to `max_stride` (without a layout: powers of two up to it).
    use_hlines: line queries attend every causal key; use_vlines: every query attends the line keys.
    local, sink: local window and attention sink kept for every query. Inside a boundary pattern
        the grid is the key modality's (`PairKind.LINES`) and `sink` must be 0 (use a 2D-boundary
        `AShape(sink, 0)` pair for a sink of another modality).
    """

    strides: Optional[tuple[int, ...]] = None
    max_stride: int = 1024
    use_hlines: bool = True
    use_vlines: bool = True
    local: int = 1024
    sink: int = 0

    def __post_init__(self):
        if self.strides is not None:
            if isinstance(self.strides, (str, bytes)) or not isinstance(self.strides, Sequence):
                raise ValueError(f"strides must be None or a sequence of ints, got {self.strides!r}")
            if len(self.strides) == 0:
                raise ValueError("strides must not be empty (None: derive from the layout)")
            for i, s in enumerate(self.strides):
                _check_int(f"strides[{i}]", s, 1)
            object.__setattr__(self, "strides", tuple(self.strides))
        _check_int("max_stride", self.max_stride, 1)
        _check_bool("use_hlines", self.use_hlines)
        _check_bool("use_vlines", self.use_vlines)
        _check_int("local", self.local, 1)
        _check_int("sink", self.sink, 0)


BasePattern = Union[Dense, AShape, VerticalSlash, Grid]
_BASE = (Dense, AShape, VerticalSlash, Grid)


def _check_inner(name: str, pattern) -> None:
    if not isinstance(pattern, _BASE):
        raise ValueError(f"{name} must be Dense, AShape, VerticalSlash or Grid (no nesting), got {pattern!r}")
    if isinstance(pattern, Grid) and pattern.sink != 0:
        raise ValueError(f"{name}.sink: a Grid inside a boundary pattern has no sink (got {pattern.sink}); "
                         f"use a TwoDBoundary AShape(sink, 0) pair")


def _check_modality(name: str, value) -> Modality:
    try:
        return Modality(value)
    except (ValueError, TypeError):
        raise ValueError(f"{name} must be a Modality, got {value!r}") from None


@dataclasses.dataclass(frozen=True, eq=True)
class QBoundary:
    """A pattern per query modality, over keys of every modality. Modalities left out: Dense."""

    per_modality: Mapping[Modality, BasePattern]

    def __post_init__(self):
        if not isinstance(self.per_modality, Mapping) or not self.per_modality:
            raise ValueError(f"per_modality must be a non-empty dict, got {self.per_modality!r}")
        clean = {}
        for key, pattern in self.per_modality.items():
            m = _check_modality("per_modality key", key)
            _check_inner(f"per_modality[{m.name}]", pattern)
            clean[m] = pattern
        object.__setattr__(self, "per_modality", clean)


@dataclasses.dataclass(frozen=True, eq=True)
class TwoDBoundary:
    """A pattern per (query modality, key modality) pair. Pairs left out: Dense. The VerticalSlash
    pairs of one query modality share its lists, so they must be equal."""

    per_pair: Mapping[tuple[Modality, Modality], BasePattern]

    def __post_init__(self):
        if not isinstance(self.per_pair, Mapping) or not self.per_pair:
            raise ValueError(f"per_pair must be a non-empty dict, got {self.per_pair!r}")
        clean = {}
        for key, pattern in self.per_pair.items():
            if not isinstance(key, tuple) or len(key) != 2:
                raise ValueError(f"per_pair keys must be (query modality, key modality), got {key!r}")
            pair = (_check_modality("per_pair key", key[0]), _check_modality("per_pair key", key[1]))
            _check_inner(f"per_pair[{pair[0].name}, {pair[1].name}]", pattern)
            clean[pair] = pattern
        for mq in {p[0] for p in clean}:
            vs = {pat for (a, _), pat in clean.items() if a == mq and isinstance(pat, VerticalSlash)}
            if len(vs) > 1:
                raise ValueError(f"per_pair: the VerticalSlash pairs of query modality {mq.name} differ "
                                 f"({sorted(map(repr, vs))}); they share one vertical / slash list")
        object.__setattr__(self, "per_pair", clean)


@dataclasses.dataclass(frozen=True)
class Auto:
    """Pick a pattern per head online from the last-query estimate (rule in
    `attention.choose_pattern`): AShape when the sink + local share of the estimate is at least
    `ashape_share`; else Grid when the layout has a gridded segment and its grid lift is at least
    `grid_lift`; else VerticalSlash."""

    ashape: AShape = AShape()
    vertical_slash: VerticalSlash = VerticalSlash()
    grid: Grid = Grid()
    ashape_share: float = 0.9
    grid_lift: float = 4.0

    def __post_init__(self):
        for name, cls in (("ashape", AShape), ("vertical_slash", VerticalSlash), ("grid", Grid)):
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"{name} must be a {cls.__name__}, got {getattr(self, name)!r}")
        if self.ashape.local < 1:
            raise ValueError("ashape.local must be >= 1")
        _check_fraction("ashape_share", self.ashape_share, 0.0, 2.0)
        if isinstance(self.grid_lift, bool) or not isinstance(self.grid_lift, (int, float)) or self.grid_lift <= 0:
            raise ValueError(f"grid_lift must be a positive number, got {self.grid_lift!r}")


Pattern = Union[Dense, AShape, VerticalSlash, Grid, QBoundary, TwoDBoundary, Auto]
PATTERN_TYPES = (Dense, AShape, VerticalSlash, Grid, QBoundary, TwoDBoundary, Auto)


def _check_pattern(name: str, pattern) -> None:
    if not isinstance(pattern, PATTERN_TYPES):
        raise ValueError(f"{name} must be a pattern ({', '.join(t.__name__ for t in PATTERN_TYPES)}), "
                         f"got {pattern!r}")
    if isinstance(pattern, AShape) and pattern.local < 1:
        raise ValueError(f"{name}.local must be >= 1 outside a boundary pattern, got {pattern.local}")


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """Patterns per layer and head.

    `patterns` is one pattern for every layer and head, or a nested sequence
    `patterns[layer][head]` (a layer entry may itself be one pattern for all its heads).
    `HeadConfig.uniform(p)` and `HeadConfig(p)` are the same; "auto" means `Auto()`.
    """

    patterns: Union[Pattern, Sequence[Union[Pattern, Sequence[Pattern]]]]

    def __post_init__(self):
        patterns = Auto() if self.patterns == "auto" else self.patterns
        if isinstance(patterns, PATTERN_TYPES):
            _check_pattern("patterns", patterns)
        elif isinstance(patterns, Sequence) and not isinstance(patterns, (str, bytes)) and len(patterns):
            layers = []
            for li, layer in enumerate(patterns):
                if isinstance(layer, PATTERN_TYPES) or layer == "auto":
                    layer = Auto() if layer == "auto" else layer
                    _check_pattern(f"patterns[{li}]", layer)
                    layers.append(layer)
                    continue
                if not isinstance(layer, Sequence) or isinstance(layer, (str, bytes)) or not len(layer):
                    raise ValueError(f"patterns[{li}] must be a pattern or a non-empty list of patterns, "
                                     f"got {layer!r}")
                heads = tuple(Auto() if p == "auto" else p for p in layer)
                for hi, p in enumerate(heads):
                    _check_pattern(f"patterns[{li}][{hi}]", p)
                layers.append(heads)
            patterns = tuple(layers)
        else:
            raise ValueError(f"patterns must be a pattern, 'auto' or a non-empty nested list, got {patterns!r}")
        object.__setattr__(self, "patterns", patterns)

    @staticmethod
    def uniform(pattern: Pattern) -> "HeadConfig":
        return HeadConfig(pattern)

    def for_layer(self, layer: int, num_heads: int) -> list[Pattern]:
        """The `num_heads` patterns of `layer` (ValueError when the config has no such layer or its
        head count differs)."""
        _check_int("layer", layer, 0)
        _check_int("num_heads", num_heads, 1)
        if isinstance(self.patterns, PATTERN_TYPES):
            return [self.patterns] * num_heads
        if layer >= len(self.patterns):
            raise ValueError(f"layer {layer} is out of range: the config has {len(self.patterns)} layers")
        entry = self.patterns[layer]
        if isinstance(entry, PATTERN_TYPES):
            return [entry] * num_heads
        if len(entry) != num_heads:
            raise ValueError(f"num_heads: layer {layer} of the config has {len(entry)} heads, got {num_heads}")
        return list(entry)
