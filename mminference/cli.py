"""Command line: `mminference demo` (the README's main job), `mminference demo --kernels` and
`mminference search` (offline per-head pattern search, writes a config)."""

from __future__ import annotations

import argparse

from .search.cli import add_search_parser, run_search_command


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mminference", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="generate with a random Qwen2.5-VL-architecture model, dense vs mminference.patch",
        description="Default: a tiny model on the CPU (< 1 min). --model-size 7b --tokens 131072: the "
                    "Qwen2.5-VL-7B shape on a GPU. --kernels: the kernel-level demo (sparse vs dense attention "
                    "per pattern on a synthetic prompt).")
    demo.add_argument("--kernels", action="store_true", help="run the kernel-level demo instead")
    demo.add_argument("--model-size", choices=("tiny", "7b"), default="tiny")
    demo.add_argument("--tokens", type=_positive, default=None,
                      help="prompt length with visual embeddings in inputs_embeds (no vision tower)")
    demo.add_argument("--frames", type=_positive, default=None,
                      help="video frames (model demo: rendered frames, default 32; kernels: default 16)")
    demo.add_argument("--frame-size", type=_positive, default=128, help="rendered frame side in px (tiny)")
    demo.add_argument("--new-tokens", type=_positive, default=8)
    demo.add_argument("--config", default=None, help="head config: 'auto' or a JSON file (default: per model size)")
    demo.add_argument("--min-prefill-tokens", type=_positive, default=None)
    demo.add_argument("--device", default=None)
    demo.add_argument("--self-logit", type=float, default=20.0,
                      help="content-following attention of the random model (0: plain random init)")
    demo.add_argument("--tokens-per-frame", type=_positive, default=256, help="kernels only")
    demo.add_argument("--heads", type=_positive, default=4, help="kernels only")
    demo.add_argument("--kv-heads", type=_positive, default=2, help="kernels only")
    demo.add_argument("--seed", type=int, default=0)
    add_search_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "search":
        return run_search_command(args)
    if args.command == "demo" and args.kernels:
        from .kernel_demo import run_kernel_demo

        run_kernel_demo(frames=args.frames or 16, tokens_per_frame=args.tokens_per_frame, heads=args.heads,
                        kv_heads=args.kv_heads, seed=args.seed)
    elif args.command == "demo":
        from .demo import run

        run(model_size=args.model_size, tokens=args.tokens, frames=args.frames or 32, frame_size=args.frame_size,
            new_tokens=args.new_tokens, config=args.config, min_prefill_tokens=args.min_prefill_tokens,
            seed=args.seed, device=args.device, self_logit=args.self_logit)
    return 0
