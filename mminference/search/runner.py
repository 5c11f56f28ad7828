"""The whole-model search: calibration forwards with attention capture, each layer scored as soon
as its q / k / v exist (`layer.search_layer`), results appended per layer to a partial file so an
interrupted search resumes where it stopped, and the final per-layer / per-head config written with
`config.save_config`.

Partial file (JSON lines, next to the output by default): a header line with the settings, then one
line per (input, layer): {"input": i, "layer": l, "heads": [HEAD with score, ...], "families": [...]}.
A resumed search checks the header against its own settings, skips finished (input, layer) pairs
(their forwards still run up to the last layer it needs) and ends the forward after that layer.

Several calibration inputs: every input is searched on its own; per head the (boundary, family)
chosen by most inputs wins (ties: lower mean output error), with the pattern and score of that
choice's best-scoring input.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import sys
import time
from typing import Any, Optional, TextIO

import torch

from ..config import ConfigFile, head_from_dict, head_to_dict, read_config, save_config
from ..patterns import HeadConfig
from .calib import CalibrationInput, load_calibration_file, synthetic_video_input
from .capture import StopForward, capturing
from .cost import Budget, CostModel
from .layer import HeadResult, SearchOptions, search_layer
from .models import LoadedModel, load_model


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """Everything that determines a search's result (the partial file's header)."""

    model: str
    calib: str = "synthetic"
    budget: str = "0.1"
    tokens: Optional[int] = None
    calib_samples: int = 1
    seed: int = 0
    rows_per_modality: int = 64
    last: int = 64
    layers: Optional[int] = None
    device: str = "cpu"
    dtype: Optional[str] = None
    cost_model: CostModel = CostModel()

    def header(self) -> dict:
        out = dataclasses.asdict(self)
        out["cost_model"] = self.cost_model.to_dict()
        return out


class Progress:
    """A one-line progress bar on `stream` (stderr): done / total layers, elapsed and ETA."""

    def __init__(self, total: int, stream: Optional[TextIO] = sys.stderr, width: int = 30):
        self.total, self.stream, self.width = max(1, total), stream, width
        self.done, self.start = 0, time.perf_counter()

    def update(self, done: int, note: str = "") -> None:
        self.done = done
        if self.stream is None:
            return
        elapsed = time.perf_counter() - self.start
        frac = min(1.0, done / self.total)
        eta = f"{elapsed / frac - elapsed:6.1f}s" if frac > 0 else "     ?"
        bar = "#" * int(frac * self.width) + "." * (self.width - int(frac * self.width))
        self.stream.write(f"\rsearch [{bar}] {done}/{self.total} layers  {elapsed:6.1f}s  eta {eta}  {note:<32}")
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None:
            self.stream.write("\n")
            self.stream.flush()


def _result_to_dict(result: HeadResult) -> dict:
    return head_to_dict(result.pattern, result.score())


def _result_from_dict(data: dict, family: str, path: str) -> HeadResult:
    score = data["score"]
    return HeadResult(head_from_dict(data, path), data.get("boundary", "none"), family, score["kept_mass"],
                      score["output_error"], score["cost"], score["cost_fraction"], score["budget"])


def read_partial(path: str, settings: SearchSettings) -> dict[tuple[int, int], list[HeadResult]]:
    """Finished (input, layer) results of a partial file made with the same settings."""
    done: dict[tuple[int, int], list[HeadResult]] = {}
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    if not lines:
        return done
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        return done  # the header itself was cut: start over
    if header.get("settings") != json.loads(json.dumps(settings.header())):
        raise ValueError(f"partial: {path} was made with other settings ({header.get('settings')}); "
                         f"delete it or rerun with the same options")
    for n, line in enumerate(lines[1:], start=2):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by an interruption: that layer is redone
        heads = [_result_from_dict(h, fam, f"{path}:{n}.heads[{i}]")
                 for i, (h, fam) in enumerate(zip(entry["heads"], entry["families"]))]
        done[(entry["input"], entry["layer"])] = heads
    return done


def _end_last_line(path: str) -> None:
    """Terminates a last line cut by an interruption, so the next appended entry starts a line of
    its own (appended to the fragment, it would be unreadable on the next resume)."""
    with open(path, "rb+") as f:
        if f.seek(0, os.SEEK_END) > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


def _append(path: str, entry: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _choose(per_input: list[list[HeadResult]]) -> list[HeadResult]:
    """Per head, the (boundary, family) most inputs chose (module docstring)."""
    chosen = []
    for h in range(len(per_input[0])):
        votes: dict[tuple[str, str], list[HeadResult]] = collections.defaultdict(list)
        for results in per_input:
            votes[(results[h].boundary, results[h].family)].append(results[h])
        best = min(votes.values(), key=lambda rs: (-len(rs), sum(r.output_error for r in rs) / len(rs)))
        chosen.append(min(best, key=lambda r: r.output_error))
    return chosen


def calibration_inputs(settings: SearchSettings, loaded: LoadedModel) -> list[CalibrationInput]:
    if settings.calib == "synthetic":
        tokens = settings.tokens or loaded.default_tokens
        return [synthetic_video_input(loaded.model, loaded.config, tokens, seed=settings.seed + i)
                for i in range(settings.calib_samples)]
    return load_calibration_file(settings.calib, loaded.config, settings.device)


def run_search(settings: SearchSettings, out: str, *, partial: Optional[str] = None, resume: bool = True,
               progress: Optional[TextIO] = sys.stderr, loaded: Optional[LoadedModel] = None) -> ConfigFile:
    """Runs the search (module docstring) and writes the config to `out`; returns it as loaded back."""
    started = time.perf_counter()
    budget = Budget(settings.budget)
    dtype = getattr(torch, settings.dtype) if settings.dtype else None
    loaded = loaded or load_model(settings.model, settings.device, dtype, settings.seed)
    inputs = calibration_inputs(settings, loaded)
    num_layers = min(loaded.num_layers, settings.layers or loaded.num_layers)
    options = SearchOptions(rows_per_modality=settings.rows_per_modality, last=settings.last,
                            cost_model=settings.cost_model, seed=settings.seed)
    partial = partial or f"{out}.partial.jsonl"
    done = read_partial(partial, settings) if resume and os.path.exists(partial) else {}
    if not done:
        with open(partial, "w", encoding="utf-8") as f:
            f.write(json.dumps({"settings": settings.header()}) + "\n")
    else:
        _end_last_line(partial)
    bar = Progress(len(inputs) * num_layers, progress)
    bar.update(len(done), "resumed" if done else "")
    for i, item in enumerate(inputs):
        if all((i, layer) in done for layer in range(num_layers)):
            continue

        def on_layer(layer: int, q, k, v, scaling, i=i, item=item) -> None:
            if layer < 0 or layer >= num_layers:
                raise StopForward
            if (i, layer) not in done:
                results = search_layer(q[:1], k[:1], v[:1], item.layout, budget, options, scale=scaling)
                _append(partial, {"input": i, "layer": layer, "heads": [_result_to_dict(r) for r in results],
                                  "families": [r.family for r in results]})
                done[(i, layer)] = results
                bar.update(len(done), f"input {i + 1}/{len(inputs)} layer {layer + 1}/{num_layers}")
            if layer == num_layers - 1:
                raise StopForward

        try:
            with torch.no_grad(), capturing(on_layer):
                loaded.model(**item.kwargs, use_cache=False)
        except StopForward:
            pass
        missing = [layer for layer in range(num_layers) if (i, layer) not in done]
        if missing:
            raise RuntimeError(f"model: the forward of input {i} never called attention for layers {missing}")
    bar.close()
    chosen = [_choose([done[(i, layer)] for i in range(len(inputs))]) for layer in range(num_layers)]
    seconds = time.perf_counter() - started
    metadata: dict[str, Any] = {
        "model": settings.model, "calib": settings.calib, "inputs": [x.name for x in inputs],
        "tokens": [x.layout.seq_len for x in inputs], "budget": chosen[0][0].budget if chosen else 0.0,
        "budget_spec": settings.budget, "seed": settings.seed, "cost_model": settings.cost_model.to_dict(),
        "search_seconds": seconds, "device": settings.device, "families": [[r.family for r in rs] for rs in chosen],
    }
    save_config(HeadConfig([[r.pattern for r in rs] for rs in chosen]), out,
                scores=[[r.score() for r in rs] for rs in chosen], metadata=metadata)
    return read_config(out)


def summarize(config: ConfigFile) -> str:
    """A few lines: patterns per boundary type and family, mean kept mass and cost fraction."""
    meta = config.metadata
    counts: dict[str, int] = collections.Counter(f for layer in meta.get("families", []) for f in layer)
    scores = [s for layer in (config.scores or []) for s in layer if s]
    mass = sum(s.get("kept_mass", 0.0) for s in scores) / max(1, len(scores))
    frac = sum(s.get("cost_fraction", 0.0) for s in scores) / max(1, len(scores))
    lines = [f"searched {config.num_layers} layers x {config.num_heads} heads in {meta.get('search_seconds', 0):.1f} s "
             f"({meta.get('device')}, tokens {meta.get('tokens')}, budget {meta.get('budget_spec')})",
             f"mean kept mass {mass:.4f}, mean cost {frac:.4f} of dense"]
    lines += [f"  {n:4d}  {name}" for name, n in counts.most_common()]
    return "\n".join(lines)
