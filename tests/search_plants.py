"""Q / K built per head so that each head's attention has a known (planted) structure, for the
pattern-search tests. Logits are designed feature by feature (scale 1):

  sink      key 0 has feature e_sink; a query's weight on it gives every query a sink.
  local     16 rotary pairs at frequencies w_f = (f + 1/2) pi / 1024: q_i . k_j =
            b * sum_f cos(w_f (i - j)) is 16 b at j = i, 10 b at a lag of 32, about 0 from 64 on
            (|.| <= 3.5 b beyond; the kernel's period 2048 exceeds S).
  slash d   16 pairs at twice those frequencies with keys shifted by d: peaks at i - j = d
            (a band of about +-24 diagonals; period 1024).
  columns   keys in a set V carry e_col; queries weighting it attend those columns.
  lines     video keys whose rank in the video is phase mod stride carry e_line; video queries
            weighting it attend the grid's vertical lines.
Everything else scores 0 (plus a little noise), so the planted keys hold most of the mass."""

from __future__ import annotations

import math

import torch

from mminference import Modality, ModalityLayout, Segment, VisualGrid

TEXT_BEFORE, FRAMES, ROWS, COLS, TEXT_AFTER = 128, 8, 8, 8, 384
TPF = ROWS * COLS
SEQ = TEXT_BEFORE + FRAMES * TPF + TEXT_AFTER  # 1024
VIDEO = (TEXT_BEFORE, TEXT_BEFORE + FRAMES * TPF)
DIM = 128
STRIDE, PHASE = 32, 5  # planted grid: a divisor of the 64 tokens per frame
COLUMNS = (201, 333, 470, 590, 777, 901)  # planted vertical lines of the vertical-slash head
SLASH = 200
TEXT_COLUMNS = (40, 70, 100)  # text-only columns of the boundary head

_SINK, _LOCAL, _SLASH, _COL, _LINE, _TCOL, _NOISE = 0, 1, 33, 65, 66, 67, 68


def layout() -> ModalityLayout:
    return ModalityLayout.from_spans(SEQ, [Segment(Modality.VIDEO, *VIDEO, VisualGrid(FRAMES, ROWS, COLS))])


def _rotary(positions: torch.Tensor, top: float) -> torch.Tensor:
    """(S, 32) features whose dot products are sum_f cos(w_f (i - j)), w_f = top (f + 1/2) / 16."""
    freqs = top * (torch.arange(16, dtype=torch.float64) + 0.5) / 16
    angles = positions.double()[:, None] * freqs
    return torch.cat([angles.cos(), angles.sin()], -1)


def planted_qk(kinds: list[str], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v `(1, H, SEQ, DIM)` (one KV head per query head), head h planted with kinds[h] in
    {"a_shape", "vertical_slash", "grid", "boundary"}."""
    gen = torch.Generator().manual_seed(seed)
    pos = torch.arange(SEQ)
    is_video = (pos >= VIDEO[0]) & (pos < VIDEO[1])
    is_line = is_video & ((pos - VIDEO[0]) % STRIDE == PHASE)
    qs, ks = [], []
    for kind in kinds:
        q = torch.zeros(SEQ, DIM, dtype=torch.float64)
        k = torch.zeros(SEQ, DIM, dtype=torch.float64)
        k[0, _SINK] = 1.0
        local = _rotary(pos, math.pi / 64)
        k[:, _LOCAL:_LOCAL + 32] = local
        if kind == "a_shape":
            q[:, _SINK] = 10.0
            q[:, _LOCAL:_LOCAL + 32] = 0.6 * local
        elif kind == "vertical_slash":
            q[:, _SINK] = 9.0
            q[:, _LOCAL:_LOCAL + 32] = 0.3 * local
            k[list(COLUMNS), _COL] = 1.0
            q[:, _COL] = 10.0
            k[:, _SLASH:_SLASH + 32] = _rotary(pos + SLASH, math.pi / 32)
            q[:, _SLASH:_SLASH + 32] = 0.65 * _rotary(pos, math.pi / 32)
        elif kind == "grid":
            q[:, _SINK] = 8.0
            q[:, _LOCAL:_LOCAL + 32] = 0.3 * local
            q[is_video, _LOCAL:_LOCAL + 32] = 0.05 * local[is_video]  # lines, not the window
            k[is_line, _LINE] = 1.0
            q[is_video, _LINE] = 10.0
        elif kind == "boundary":
            # text queries: sink + text columns + local; video queries: grid lines + local.
            q[~is_video, _SINK] = 8.0
            q[:, _LOCAL:_LOCAL + 32] = 0.4 * local
            q[is_video, _LOCAL:_LOCAL + 32] = 0.05 * local[is_video]
            k[list(TEXT_COLUMNS), _TCOL] = 1.0
            q[~is_video, _TCOL] = 10.0
            k[is_line, _LINE] = 1.0
            q[is_video, _LINE] = 10.0
        else:
            raise ValueError(kind)
        k[:, _NOISE:] = 0.05 * torch.randn(SEQ, DIM - _NOISE, generator=gen, dtype=torch.float64)
        q[:, _NOISE:] = 0.05 * torch.randn(SEQ, DIM - _NOISE, generator=gen, dtype=torch.float64)
        qs.append(q)
        ks.append(k)
    q = torch.stack(qs)[None].float()
    k = torch.stack(ks)[None].float()
    v = torch.randn(1, len(kinds), SEQ, DIM, generator=gen)
    return q, k, v
