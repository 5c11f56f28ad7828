"""Command line: `mminference demo` (the README's main job)."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mminference", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="sparse vs dense attention on a synthetic video+text prompt (CPU)")
    demo.add_argument("--frames", type=int, default=16)
    demo.add_argument("--tokens-per-frame", type=int, default=256)
    demo.add_argument("--heads", type=int, default=4)
    demo.add_argument("--kv-heads", type=int, default=2)
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        run_demo(frames=args.frames, tokens_per_frame=args.tokens_per_frame, heads=args.heads,
                 kv_heads=args.kv_heads, seed=args.seed)
    return 0
