"""Draws docs/patterns.png: the key sets of each pattern as built by mminference's index builders,
in original token order and, for the grid, in the permuted order the kernel walks.

Usage: python benchmarks/plot_patterns.py [--out docs/patterns.png]"""

from __future__ import annotations

import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import mminference as mmi  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from reference import dense_mask_from_index  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs", "patterns.png"))
    args = parser.parse_args()
    seq, bq, bk = 256, 8, 8
    a_shape = mmi.build_a_shape_index(seq, seq, block_q=bq, block_k=bk, sink=16, local=32)
    vertical = torch.tensor([[[0, 1, 2, 35, 36, 100, 165]]], dtype=torch.int32)
    slash = torch.tensor([[[0, 1, 2, 3, 32, 64, 128]]], dtype=torch.int32)
    vs = mmi.build_vertical_slash_index(vertical, slash, seq, seq, block_q=bq, block_k=bk)
    grid = mmi.build_grid_index(torch.tensor([[16]], dtype=torch.int32), torch.tensor([[5]], dtype=torch.int32),
                                seq, block_q=bq, block_k=bk, span=(32, 224), local=16, sink=4)
    masks = {name: dense_mask_from_index(ix, 1, 1, seq, seq, causal=True)[0, 0]
             for name, ix in [("A-shape", a_shape), ("vertical-slash", vs), ("grid (original order)", grid)]}
    perm_q, perm_k = grid.q_perm[0, 0].long(), grid.k_perm[0, 0].long()
    masks["grid (permuted: lines first)"] = masks["grid (original order)"][perm_q][:, perm_k]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.3))
    for ax, (name, mask) in zip(axes, masks.items()):
        ax.imshow(mask.numpy(), cmap="Blues", interpolation="none")
        ax.set_title(f"{name}\n{mask.float().sum() / (seq * (seq + 1) / 2):.0%} of causal pairs")
        ax.set_xlabel("key")
        ax.set_ylabel("query")
    fig.suptitle("Key sets compiled by mminference (text 0-31 | video 32-223, 16 tokens/frame | text 224-255)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
