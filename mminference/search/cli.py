"""`mminference search`: the pattern search from the command line.

    mminference search --model tiny-qwen2.5-vl --calib synthetic --budget 0.1 --out cfg.json
    mminference search --model qwen2.5-vl-7b-random --calib synthetic --tokens 32768 --out /tmp/cfg.json
    python -m mminference.search --model PATH --calib inputs.pt --budget ashape:1024:4096 --out cfg.json
"""

from __future__ import annotations

import argparse
import sys

import torch

from .cost import Budget, CostModel

MODEL_HELP = "a checkpoint directory, tiny-qwen2.5-vl (CPU, random) or qwen2.5-vl-7b-random (Qwen2.5-VL-7B shapes)"


def add_search_parser(subparsers) -> argparse.ArgumentParser:
    """Adds the `search` subcommand to an argparse subparsers object (its func: run_search_command)."""
    parser = subparsers.add_parser(
        "search", help="search per-layer, per-head sparse patterns under a kernel-time budget",
        description="Offline pattern search: calibration forwards capture every layer's q/k/v, each layer is "
                    "scored at once (candidates matched by modelled kernel cost), the result is a versioned "
                    "JSON config. Resumable per layer, deterministic for a seed.")
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--calib", default="synthetic",
                        help="'synthetic' (synthetic video + text) or a torch.save'd dict / list of dicts of model "
                             "inputs (batch 1, unpadded)")
    parser.add_argument("--budget", default="0.1",
                        help="per-head kernel-time budget: a fraction of dense cost (0.1), 'ashape:SINK:LOCAL' "
                             "(the cost of that A-shape) or 'seconds:T' (default 0.1)")
    parser.add_argument("--tokens", type=int, default=None,
                        help="synthetic prompt length (default: 2048 tiny, 32768 7B, 8192 checkpoints)")
    parser.add_argument("--calib-samples", type=int, default=1, help="synthetic inputs (seeds seed, seed+1, ...)")
    parser.add_argument("--out", required=True, help="output config (JSON)")
    parser.add_argument("--partial", default=None, help="partial results file (default OUT.partial.jsonl)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if a partial file exists")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows-per-modality", type=int, default=64, help="sampled query rows per modality")
    parser.add_argument("--last", type=int, default=64, help="estimating queries of the online indexes")
    parser.add_argument("--layers", type=int, default=None, help="search only the first N layers")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="default: bfloat16 on cuda, float32 on cpu")
    defaults = CostModel()
    parser.add_argument("--block-q", type=int, default=defaults.block_q, help="kernel query tile")
    parser.add_argument("--block-k", type=int, default=defaults.block_k, help="kernel key tile")
    parser.add_argument("--tile-seconds", type=float, default=defaults.tile_seconds,
                        help="cost model: seconds per kept key tile (default: H200, 380 TFLOP/s)")
    parser.add_argument("--block-seconds", type=float, default=defaults.block_seconds,
                        help="cost model: seconds per query block")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_search_command)
    return parser


def run_search_command(args: argparse.Namespace) -> int:
    """Runs `mminference search` for parsed arguments; prints a summary to stderr."""
    from .runner import SearchSettings, run_search, summarize

    try:
        Budget(args.budget)  # fail fast on a bad budget
    except ValueError as error:
        raise SystemExit(f"mminference search: error: {error}") from None
    for name in ("tokens", "layers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"mminference search: error: --{name} must be >= 1, got {value}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cost_model = CostModel(args.tile_seconds, args.block_seconds, args.block_q, args.block_k)
    settings = SearchSettings(model=args.model, calib=args.calib, budget=args.budget, tokens=args.tokens,
                              calib_samples=args.calib_samples, seed=args.seed,
                              rows_per_modality=args.rows_per_modality, last=args.last, layers=args.layers,
                              device=device, dtype=args.dtype, cost_model=cost_model)
    config = run_search(settings, args.out, partial=args.partial, resume=not args.no_resume,
                        progress=None if args.quiet else sys.stderr)
    print(summarize(config), file=sys.stderr)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m mminference.search ARGS` (the same arguments as `mminference search`)."""
    parser = argparse.ArgumentParser(prog="python -m mminference.search")
    commands = parser.add_subparsers(dest="command", required=True)
    add_search_parser(commands)
    args = parser.parse_args(["search", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)
