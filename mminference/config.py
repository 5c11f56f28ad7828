"""Versioned JSON pattern configs: what the pattern search writes and `sparse_attention_for_layout`
runs (as a `HeadConfig`).

Format (version 1; `FORMAT_NAME`, `CURRENT_VERSION`):

    {"format": "mminference.head_config", "version": 1,
     "num_layers": 28, "num_heads": 28,                      # checked against "layers"
     "metadata": {"model": "...", "budget": 0.1, ...},      # free JSON object ("budget" >= 0)
     "layers": [                                             # or "all_layers": HEAD
       {"heads": [HEAD, HEAD, ...]},                         # or {"all_heads": HEAD}
       ...]}

    HEAD = {"boundary": "none", "pattern": PATTERN, "score": SCORE}          # SCORE optional
         | {"boundary": "k",  "patterns": {"text": PATTERN, "video": PATTERN}}   # per key modality
         | {"boundary": "q",  "patterns": {"text": PATTERN, "video": PATTERN}}   # per query modality
         | {"boundary": "2d", "patterns": {"video->video": PATTERN, "video->text": PATTERN, ...}}
    PATTERN = {"type": "dense"}
            | {"type": "a_shape", "sink": 128, "local": 4096}
            | {"type": "vertical_slash", "num_vertical": 1000, "num_slash": 2048, "force_sink": 30,
               "force_local": 100}
            | {"type": "grid", "strides": [256] | null, "max_stride": 1024, "use_hlines": true,
               "use_vlines": true, "local": 1024, "sink": 0}
            | {"type": "auto", "ashape": PATTERN, "vertical_slash": PATTERN, "grid": PATTERN,
               "ashape_share": 0.9, "grid_lift": 4.0}
    SCORE = {"kept_mass": 0.97, "output_error": 0.02, "cost": 1.2e-3, "cost_fraction": 0.1,
             "budget": 1.3e-3}                                # all optional, numbers >= 0

Pattern fields left out take the dataclass defaults (`mminference.patterns`). Modalities are
"text", "image", "video"; a 2D pair is "query->key". Pairs / modalities left out are Dense. A
K-boundary head is a `TwoDBoundary` whose pattern depends on the key modality only (it loads as
every query modality x the listed key modalities, and such a `TwoDBoundary` saves as "k").

Older versions load through `MIGRATIONS` (version n -> n + 1, applied in turn). Version 0 (before
boundaries): {"version": 0, "num_heads": H, "layers": [[OLD, ...], ...]} with OLD one of
{"type": "dense"}, {"type": "ashape", "sink", "local"}, {"type": "vs", "vertical", "slash"},
{"type": "grid", "stride": int | null, "local", "hlines", "vlines"}.

Every error is a `ConfigError` (a ValueError) whose message starts with the field's path, e.g.
"layers[3].heads[5].pattern: unknown pattern 'foo'".
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from .layout import Modality
from .patterns import (PATTERN_TYPES, AShape, Auto, Dense, Grid, HeadConfig, Pattern, QBoundary,
                       TwoDBoundary, VerticalSlash)

FORMAT_NAME = "mminference.head_config"
CURRENT_VERSION = 1
SCORE_FIELDS = ("kept_mass", "output_error", "cost", "cost_fraction", "budget")
BOUNDARIES = ("none", "k", "q", "2d")

_PATTERN_NAMES = {"dense": Dense, "a_shape": AShape, "vertical_slash": VerticalSlash, "grid": Grid, "auto": Auto}
_NAME_OF = {cls: name for name, cls in _PATTERN_NAMES.items()}


class ConfigError(ValueError):
    """A config that cannot be loaded or saved; the message starts with the offending field."""


@dataclasses.dataclass(frozen=True)
class ConfigFile:
    """A loaded config: the patterns, the per-head scores (`scores[layer][head]`, None where the
    file has none) and the metadata object."""

    head_config: HeadConfig
    scores: Optional[list[list[Optional[dict[str, float]]]]]
    metadata: dict[str, Any]
    num_layers: Optional[int]
    num_heads: Optional[int]


# ------------------------------------------------------------------------------------------------
# Migrations
# ------------------------------------------------------------------------------------------------

MIGRATIONS: dict[int, Callable[[dict], dict]] = {}


def register_migration(from_version: int) -> Callable[[Callable[[dict], dict]], Callable[[dict], dict]]:
    """Registers `fn(data) -> data` that turns a version `from_version` dict into version + 1."""
    def wrap(fn):
        MIGRATIONS[from_version] = fn
        return fn
    return wrap


@register_migration(0)
def _migrate_v0(data: dict) -> dict:
    renames = {"dense": ("dense", {}), "ashape": ("a_shape", {"sink": "sink", "local": "local"}),
               "vs": ("vertical_slash", {"vertical": "num_vertical", "slash": "num_slash"}),
               "grid": ("grid", {"stride": "strides", "local": "local", "hlines": "use_hlines",
                                 "vlines": "use_vlines"})}
    layers = _expect(data.get("layers"), list, "layers")
    out_layers = []
    for li, layer in enumerate(layers):
        heads = []
        for hi, old in enumerate(_expect(layer, list, f"layers[{li}]")):
            path = f"layers[{li}][{hi}]"
            old = _expect(old, dict, path)
            kind = old.get("type")
            if kind not in renames:
                raise ConfigError(f"{path}.type: unknown version-0 pattern {kind!r} "
                                  f"(expected one of {sorted(renames)})")
            name, fields = renames[kind]
            pattern: dict[str, Any] = {"type": name}
            for key, value in old.items():
                if key == "type":
                    continue
                if key not in fields:
                    raise ConfigError(f"{path}.{key}: unknown field of version-0 pattern {kind!r}")
                if key == "stride":
                    value = None if value is None else [value]
                pattern[fields[key]] = value
            heads.append({"boundary": "none", "pattern": pattern})
        out_layers.append({"heads": heads})
    out = {"format": FORMAT_NAME, "version": 1, "num_layers": len(out_layers), "layers": out_layers,
           "metadata": {"migrated_from_version": 0}}
    if "num_heads" in data:
        out["num_heads"] = data["num_heads"]
    return out


def migrate(data: Mapping) -> dict:
    """`data` brought to `CURRENT_VERSION` through `MIGRATIONS` (ConfigError for an unknown or
    newer version)."""
    data = dict(_expect(data, Mapping, "config"))
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ConfigError(f"version: must be a non-negative int, got {version!r}")
    if version > CURRENT_VERSION:
        raise ConfigError(f"version: {version} is newer than this mminference supports ({CURRENT_VERSION})")
    while version < CURRENT_VERSION:
        if version not in MIGRATIONS:
            raise ConfigError(f"version: no migration from version {version}")
        data = MIGRATIONS[version](data)
        if data.get("version") != version + 1:
            raise ConfigError(f"version: the migration from {version} produced version {data.get('version')!r}")
        version += 1
    return data


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------

def _expect(value, kind, path: str):
    if isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"{path}: expected {_kind_name(kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{path}: expected {_kind_name(kind)}, got {type(value).__name__} {value!r}")
    return value


def _kind_name(kind) -> str:
    names = {dict: "an object", Mapping: "an object", list: "a list", int: "an int", str: "a string"}
    return names.get(kind, getattr(kind, "__name__", str(kind)))


def _modality(name, path: str) -> Modality:
    try:
        return Modality[name.upper()] if isinstance(name, str) else Modality(-1)
    except (KeyError, ValueError):
        raise ConfigError(f"{path}: unknown modality {name!r} (expected one of "
                          f"{[m.name.lower() for m in Modality]})") from None


def pattern_from_dict(data, path: str = "pattern") -> Pattern:
    """One PATTERN object -> a pattern dataclass (ConfigError naming `path` and the field)."""
    data = _expect(data, Mapping, path)
    kind = data.get("type")
    if kind not in _PATTERN_NAMES:
        raise ConfigError(f"{path}: unknown pattern {kind!r} (expected one of {sorted(_PATTERN_NAMES)})")
    cls = _PATTERN_NAMES[kind]
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key == "type":
            continue
        if key not in fields:
            raise ConfigError(f"{path}.{key}: unknown field of pattern {kind!r} (expected {sorted(fields)})")
        if cls is Auto and key in ("ashape", "vertical_slash", "grid"):
            value = pattern_from_dict(value, f"{path}.{key}")
        if cls is Grid and key == "strides" and value is not None:
            value = tuple(_expect(value, list, f"{path}.strides"))
        if isinstance(value, float) and cls is not Auto:
            raise ConfigError(f"{path}.{key}: must be an int, got {value!r}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except ValueError as error:
        raise ConfigError(f"{path}: {error}") from None


def _inner(data, path: str):
    pattern = pattern_from_dict(data, path)
    if isinstance(pattern, Auto):
        raise ConfigError(f"{path}: 'auto' is not allowed inside a boundary pattern")
    if isinstance(pattern, Grid) and pattern.sink:
        raise ConfigError(f"{path}.sink: a grid inside a boundary pattern has no sink (got {pattern.sink})")
    return pattern


def head_from_dict(data, path: str) -> Pattern:
    """One HEAD object -> its pattern."""
    data = _expect(data, Mapping, path)
    boundary = data.get("boundary", "none")
    if boundary not in BOUNDARIES:
        raise ConfigError(f"{path}.boundary: unknown boundary {boundary!r} (expected one of {list(BOUNDARIES)})")
    allowed = {"boundary", "score", "pattern" if boundary == "none" else "patterns"}
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{path}.{key}: unknown field of a {boundary!r}-boundary head "
                              f"(expected {sorted(allowed)})")
    if boundary == "none":
        if "pattern" not in data:
            raise ConfigError(f"{path}.pattern: missing")
        return pattern_from_dict(data["pattern"], f"{path}.pattern")
    patterns = _expect(data.get("patterns"), Mapping, f"{path}.patterns")
    if not patterns:
        raise ConfigError(f"{path}.patterns: must not be empty")
    try:
        if boundary == "q":
            return QBoundary({_modality(k, f"{path}.patterns.{k}"): _inner(v, f"{path}.patterns.{k}")
                              for k, v in patterns.items()})
        if boundary == "k":
            per_key = {_modality(k, f"{path}.patterns.{k}"): _inner(v, f"{path}.patterns.{k}")
                       for k, v in patterns.items()}
            return TwoDBoundary({(mq, mk): p for mq in Modality for mk, p in per_key.items()})
        per_pair = {}
        for key, value in patterns.items():
            field = f"{path}.patterns.{key}"
            parts = key.split("->") if isinstance(key, str) else []
            if len(parts) != 2:
                raise ConfigError(f"{field}: a 2D pair must be 'query->key', e.g. 'video->text'")
            per_pair[(_modality(parts[0], field), _modality(parts[1], field))] = _inner(value, field)
        return TwoDBoundary(per_pair)
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(f"{path}.patterns: {error}") from None


def _number(value, path: str, upper: Optional[float] = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{path}: must be a finite number >= 0, got {value!r}")
    if upper is not None and value > upper:
        raise ConfigError(f"{path}: must be <= {upper}, got {value!r}")
    return float(value)


def score_from_dict(data, path: str) -> dict[str, float]:
    data = _expect(data, Mapping, path)
    out = {}
    for key, value in data.items():
        if key not in SCORE_FIELDS:
            raise ConfigError(f"{path}.{key}: unknown score field (expected {list(SCORE_FIELDS)})")
        out[key] = _number(value, f"{path}.{key}", 1.0 + 1e-6 if key == "kept_mass" else None)
    return out


def _count(data: Mapping, key: str) -> Optional[int]:
    if key not in data:
        return None
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}: must be an int >= 1, got {value!r}")
    return value


def read_config(path_or_dict: Union[str, os.PathLike, Mapping]) -> ConfigFile:
    """A config file (JSON path) or its parsed dict, migrated and validated, with scores and metadata."""
    if isinstance(path_or_dict, Mapping):
        data = path_or_dict
    elif isinstance(path_or_dict, (str, os.PathLike)):
        try:
            with open(path_or_dict, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as error:
            raise ConfigError(f"config: {os.fspath(path_or_dict)} is not valid JSON ({error})") from None
    else:
        raise TypeError(f"path_or_dict must be a path or a dict, got {type(path_or_dict).__name__}")
    data = migrate(data)
    if data.get("format") != FORMAT_NAME:
        raise ConfigError(f"format: expected {FORMAT_NAME!r}, got {data.get('format')!r}")
    known = {"format", "version", "num_layers", "num_heads", "layers", "all_layers", "metadata"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{key}: unknown top-level field (expected {sorted(known)})")
    metadata = dict(_expect(data.get("metadata", {}), Mapping, "metadata"))
    if "budget" in metadata:
        _number(metadata["budget"], "metadata.budget")
    num_layers, num_heads = _count(data, "num_layers"), _count(data, "num_heads")
    if ("layers" in data) == ("all_layers" in data):
        raise ConfigError("layers: exactly one of 'layers' and 'all_layers' must be given")
    if "all_layers" in data:
        head = _expect(data["all_layers"], Mapping, "all_layers")
        score = score_from_dict(head["score"], "all_layers.score") if "score" in head else None
        scores = None if score is None else [[score]]
        return ConfigFile(HeadConfig(head_from_dict(head, "all_layers")), scores, metadata, num_layers, num_heads)
    layers = _expect(data["layers"], list, "layers")
    if not layers:
        raise ConfigError("layers: must not be empty")
    if num_layers is not None and len(layers) != num_layers:
        raise ConfigError(f"layers: {len(layers)} entries, but num_layers is {num_layers}")
    patterns, scores, any_score = [], [], False
    for li, layer in enumerate(layers):
        layer = _expect(layer, Mapping, f"layers[{li}]")
        if ("heads" in layer) == ("all_heads" in layer) or len(layer) != 1:
            raise ConfigError(f"layers[{li}]: must have exactly one field, 'heads' or 'all_heads'")
        if "all_heads" in layer:
            head = _expect(layer["all_heads"], Mapping, f"layers[{li}].all_heads")
            patterns.append(head_from_dict(head, f"layers[{li}].all_heads"))
            score = score_from_dict(head["score"], f"layers[{li}].all_heads.score") if "score" in head else None
            scores.append([score])
            any_score |= "score" in head
            continue
        heads = _expect(layer["heads"], list, f"layers[{li}].heads")
        if not heads:
            raise ConfigError(f"layers[{li}].heads: must not be empty")
        if num_heads is not None and len(heads) != num_heads:
            raise ConfigError(f"layers[{li}].heads: {len(heads)} heads, but num_heads is {num_heads}")
        if num_heads is None:
            num_heads = len(heads)
        layer_patterns, layer_scores = [], []
        for hi, head in enumerate(heads):
            path = f"layers[{li}].heads[{hi}]"
            layer_patterns.append(head_from_dict(head, path))
            has = isinstance(head, Mapping) and "score" in head
            layer_scores.append(score_from_dict(head["score"], f"{path}.score") if has else None)
            any_score |= has
        patterns.append(layer_patterns)
        scores.append(layer_scores)
    return ConfigFile(HeadConfig(patterns), scores if any_score else None, metadata, len(layers), num_heads)


def load_config(path_or_dict: Union[str, os.PathLike, Mapping]) -> HeadConfig:
    """The `HeadConfig` of a config file (JSON path) or dict (any supported version)."""
    return read_config(path_or_dict).head_config


def config_from_dict(data: Mapping) -> HeadConfig:
    """`load_config` of a dict."""
    return read_config(data).head_config


# ------------------------------------------------------------------------------------------------
# Saving
# ------------------------------------------------------------------------------------------------

def pattern_to_dict(pattern: Pattern) -> dict:
    """A base pattern (or Auto) as a PATTERN object (every field written)."""
    if type(pattern) not in _NAME_OF:
        raise ConfigError(f"pattern: cannot write {pattern!r} as a base pattern")
    out: dict[str, Any] = {"type": _NAME_OF[type(pattern)]}
    for field in dataclasses.fields(pattern):
        value = getattr(pattern, field.name)
        if isinstance(value, PATTERN_TYPES):
            value = pattern_to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[field.name] = value
    return out


def _key_boundary(pattern: TwoDBoundary) -> Optional[dict[Modality, Pattern]]:
    """The per-key-modality patterns when `pattern` is a K-boundary (see module docstring)."""
    per_key: dict[Modality, Pattern] = {}
    for (mq, mk), p in pattern.per_pair.items():
        if per_key.setdefault(mk, p) != p:
            return None
    full = {(mq, mk) for mq in Modality for mk in per_key}
    return per_key if set(pattern.per_pair) == full else None


def head_to_dict(pattern: Pattern, score: Optional[Mapping[str, float]] = None, path: str = "head") -> dict:
    """A head's pattern (and score) as a HEAD object."""
    if isinstance(pattern, QBoundary):
        out = {"boundary": "q", "patterns": {m.name.lower(): pattern_to_dict(p)
                                             for m, p in sorted(pattern.per_modality.items())}}
    elif isinstance(pattern, TwoDBoundary):
        per_key = _key_boundary(pattern)
        if per_key is not None:
            out = {"boundary": "k",
                   "patterns": {m.name.lower(): pattern_to_dict(p) for m, p in sorted(per_key.items())}}
        else:
            out = {"boundary": "2d", "patterns": {f"{a.name.lower()}->{b.name.lower()}": pattern_to_dict(p)
                                                  for (a, b), p in sorted(pattern.per_pair.items())}}
    elif isinstance(pattern, PATTERN_TYPES):
        out = {"boundary": "none", "pattern": pattern_to_dict(pattern)}
    else:
        raise ConfigError(f"{path}: not a pattern: {pattern!r}")
    if score is not None:
        out["score"] = score_from_dict(score, f"{path}.score")
    return out


def config_to_dict(head_config: HeadConfig, *, scores: Optional[Sequence[Sequence[Optional[Mapping]]]] = None,
                   metadata: Optional[Mapping[str, Any]] = None) -> dict:
    """A `HeadConfig` (plus optional `scores[layer][head]` dicts of SCORE_FIELDS and a metadata
    object) as a current-version dict; `read_config(config_to_dict(c)).head_config == c`."""
    if not isinstance(head_config, HeadConfig):
        raise TypeError(f"head_config must be a HeadConfig, got {type(head_config).__name__}")
    metadata = dict(metadata or {})
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"metadata: must be JSON-serialisable ({error})") from None
    if "budget" in metadata:
        _number(metadata["budget"], "metadata.budget")
    out: dict[str, Any] = {"format": FORMAT_NAME, "version": CURRENT_VERSION}
    if isinstance(head_config.patterns, PATTERN_TYPES):
        score = scores[0][0] if scores else None
        out["all_layers"] = head_to_dict(head_config.patterns, score, "all_layers")
        out["metadata"] = metadata
        return out
    layers_in = head_config.patterns
    if scores is not None and len(scores) != len(layers_in):
        raise ConfigError(f"scores: {len(scores)} layers, but the config has {len(layers_in)}")
    layers, num_heads = [], None
    for li, layer in enumerate(layers_in):
        layer_scores = scores[li] if scores is not None else None
        if isinstance(layer, PATTERN_TYPES):
            score = layer_scores[0] if layer_scores else None
            layers.append({"all_heads": head_to_dict(layer, score, f"layers[{li}].all_heads")})
            continue
        if num_heads is None:
            num_heads = len(layer)
        elif len(layer) != num_heads:
            raise ConfigError(f"layers[{li}].heads: {len(layer)} heads, but layer 0 has {num_heads}")
        if layer_scores is not None and len(layer_scores) != len(layer):
            raise ConfigError(f"scores[{li}]: {len(layer_scores)} entries for {len(layer)} heads")
        layers.append({"heads": [head_to_dict(p, layer_scores[hi] if layer_scores is not None else None,
                                              f"layers[{li}].heads[{hi}]") for hi, p in enumerate(layer)]})
    out["num_layers"] = len(layers)
    if num_heads is not None:
        out["num_heads"] = num_heads
    out["layers"] = layers
    out["metadata"] = metadata
    return out


def save_config(head_config: HeadConfig, path: Union[str, os.PathLike], *,
                scores: Optional[Sequence[Sequence[Optional[Mapping]]]] = None,
                metadata: Optional[Mapping[str, Any]] = None) -> None:
    """Writes `config_to_dict(head_config, scores=..., metadata=...)` as JSON to `path`
    (atomically: a temporary file in the same directory, then a rename)."""
    data = config_to_dict(head_config, scores=scores, metadata=metadata)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".mmi_config_", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
