"""Grid stride / phase detection (`ops.detect_grid`) and grid lift (`ops.grid_lift`) against a
plain-PyTorch float32 re-derivation of the rules in csrc/core/mmi_grid_detect.h, CUDA against CPU."""

import random
import time

import pytest
import torch

from mminference import estimate, ops
from mminference.attention import candidate_strides
from mminference.patterns import Grid


def _reference_detect(score, span, candidates, tolerance=0.5, max_lines=64):
    """Stride and phase (int64 `(B, H)`): fold each candidate's last `max_lines` periods, lower
    median per phase, best phase over the window mean, smallest stride within tolerance."""
    start, end = span
    x = score[..., start:end].float()
    n = end - start
    usable = [s for s in candidates if 1 <= s <= n // 2]
    lifts, phases = [], []
    for s in usable:
        lines = n // s
        used = min(lines, max_lines)
        window = x[..., (lines - used) * s: lines * s]
        medians = window.reshape(*x.shape[:2], used, s).median(dim=2).values  # lower median
        best, phase = medians.max(dim=-1)  # first phase on ties
        lifts.append(best / window.mean(-1).clamp_min(1e-30))
        phases.append(phase)
    lift = torch.stack(lifts, -1)
    phase = torch.stack(phases, -1)
    ok = lift >= tolerance * lift.max(-1, keepdim=True).values
    strides = torch.tensor(usable, device=x.device)
    key = torch.where(ok, strides, torch.iinfo(torch.int64).max)
    choice = key.argmin(-1)
    return strides[choice], torch.gather(phase, -1, choice[..., None]).squeeze(-1)


def _reference_lift(score, span, stride, phase):
    """Per head: lower median of the n // s lines at phase p over sum(span) / n."""
    start, end = span
    x = score[..., start:end].float()
    n = end - start
    out = torch.empty(stride.shape, device=x.device)
    for b in range(stride.shape[0]):
        for h in range(stride.shape[1]):
            s, p = int(stride[b, h]), int(phase[b, h])
            lines = x[b, h, p::s][: n // s]
            out[b, h] = lines.median() / (x[b, h].sum() / n).clamp_min(1e-30)
    return out


def _random_case(seed):
    r = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    batch, heads = r.randint(1, 2), r.randint(1, 3)
    seq_k = r.choice([8, 64, 333, 1000, 2048, 5000])
    start = r.randint(0, seq_k // 3)
    end = r.randint(start + 4, seq_k)
    n = end - start
    score = torch.rand(batch, heads, seq_k, generator=gen)
    if r.random() < 0.5:  # a planted grid in some heads
        s, p = r.randint(2, max(2, n // 3)), 0
        p = r.randrange(s)
        score[0, 0, start + p:end:s] += r.choice([0.3, 3.0])
    candidates = [r.randint(1, max(1, n // 2)) for _ in range(r.randint(1, 8))]
    candidates += [r.randint(1, 2 * n) for _ in range(r.randint(0, 3))]  # some skipped (> n // 2)
    if all(c > n // 2 for c in candidates):
        candidates.append(max(1, n // 2))
    return score, (start, end), candidates, r.choice([0.3, 0.5, 0.9, 1.0]), r.choice([1, 2, 3, 7, 64, 65, 100])


def _assert_matches_reference(score, span, candidates, tolerance, max_lines):
    stride, phase, lift = ops.detect_grid(score, span, candidates, tolerance=tolerance, max_lines=max_lines)
    want_stride, want_phase = _reference_detect(score, span, candidates, tolerance, max_lines)
    assert stride.dtype == torch.int32 and phase.dtype == torch.int32 and lift.dtype == torch.float32
    assert stride.tolist() == want_stride.tolist()
    assert phase.tolist() == want_phase.tolist()
    torch.testing.assert_close(lift, _reference_lift(score, span, want_stride, want_phase), rtol=1e-6, atol=0)
    return stride, phase, lift


@pytest.mark.parametrize("seed", range(60))
def test_detect_matches_reference_on_random_scores(seed):
    _assert_matches_reference(*_random_case(seed))


@pytest.mark.parametrize("stride,phase,span", [(256, 17, (300, 300 + 256 * 20)), (196, 0, (0, 196 * 70)),
                                               (64, 63, (1000, 1000 + 64 * 9 + 5)), (16, 6, (7, 7 + 16 * 100))])
def test_planted_grid_is_found_exactly(stride, phase, span):
    gen = torch.Generator().manual_seed(stride + phase)
    start, end = span
    score = torch.rand(2, 3, end + 50, generator=gen) * 0.1
    score[..., start + phase:end:stride] += 1.0
    score[..., end - 3] += 5.0  # a strong local peak must not decide
    strides = candidate_strides(Grid(), stride, end - start)
    got_stride, got_phase, lift = _assert_matches_reference(score, span, strides, 0.5, 64)
    assert (got_stride == stride).all() and (got_phase == phase).all()
    assert (lift > 5).all()


def test_ties_follow_torch_first_index_and_lower_median():
    gen = torch.Generator().manual_seed(3)
    score = torch.randint(0, 4, (2, 3, 700), generator=gen).float()  # many exact ties
    for candidates in ([2, 3, 4, 6, 8, 12, 24], [5, 10, 20, 35, 70], [1, 7, 49, 350]):
        for max_lines in (1, 2, 4, 64, 200):
            _assert_matches_reference(score, (10, 690), candidates, 0.5, max_lines)
    stride, phase, lift = _assert_matches_reference(torch.zeros(1, 2, 100), (0, 100), [8, 4, 16], 0.5, 64)
    assert stride.tolist() == [[4, 4]] and phase.tolist() == [[0, 0]] and lift.tolist() == [[0.0, 0.0]]


def test_negative_mean_is_clamped_like_the_python_rule():
    score = -2.0 + torch.rand(1, 2, 600, generator=torch.Generator().manual_seed(5))
    _assert_matches_reference(score, (0, 600), [2, 3, 5, 50], 0.5, 64)


@pytest.mark.parametrize("seed", range(12))
def test_grid_lift_matches_reference(seed):
    r = random.Random(100 + seed)
    gen = torch.Generator().manual_seed(seed)
    batch, heads = 2, 3
    seq_k = r.choice([50, 999, 4096, 20000])
    start = r.randint(0, seq_k // 4)
    end = r.randint(start + 1, seq_k)
    n = end - start
    score = torch.rand(batch, heads, seq_k, generator=gen)
    # stride 1 and 2 give n and n / 2 lines (the radix select), n a single line.
    choices = [1, 2, 3, max(1, n // 65), max(1, n // 64), max(1, n // 2), n, r.randint(1, n)]
    stride = torch.tensor([[r.choice(choices) for _ in range(heads)] for _ in range(batch)], dtype=torch.int32)
    phase = torch.tensor([[r.randrange(int(s)) for s in row] for row in stride.tolist()], dtype=torch.int32)
    lift = ops.grid_lift(score, (start, end), stride, phase)
    torch.testing.assert_close(lift, _reference_lift(score, (start, end), stride, phase), rtol=1e-6, atol=0)


def test_non_contiguous_scores_give_the_contiguous_result():
    base = torch.rand(3, 2, 2000, generator=torch.Generator().manual_seed(9))
    base[..., 100:1900:50] += 1.0
    want = ops.detect_grid(base.contiguous(), (100, 1900), [25, 50, 100])
    transposed = base.transpose(0, 1).contiguous().transpose(0, 1)  # batch / head strides swapped
    strided = torch.stack([base, base], -1)[..., 0]  # last-dim stride 2
    for view in (transposed, strided):
        for got, expected in zip(ops.detect_grid(view, (100, 1900), [25, 50, 100]), want):
            assert torch.equal(got, expected)
    assert torch.equal(ops.grid_lift(strided, (100, 1900), want[0], want[1]), want[2])


def test_estimate_wrappers_match_the_reference():
    score, span, candidates, tolerance, max_lines = _random_case(7)
    stride, phase = estimate.grid_from_scores(score, span, candidates + [0, -3], tolerance, max_lines)
    want_stride, want_phase = _reference_detect(score, span, candidates, tolerance, max_lines)
    assert stride.tolist() == want_stride.tolist() and phase.tolist() == want_phase.tolist()
    lift = estimate.grid_lift(score.double(), span, stride.long(), phase.long())
    torch.testing.assert_close(lift, _reference_lift(score, span, stride, phase), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="no candidate stride leaves 2 or more lines"):
        estimate.grid_from_scores(score, (0, 10), [6, 0])


def test_detect_grid_rejects_bad_arguments():
    score = torch.rand(1, 2, 100)
    cases = [
        (lambda: ops.detect_grid(score.double(), (0, 100), [4]), TypeError, "vertical_score: dtype"),
        (lambda: ops.detect_grid(score[0], (0, 100), [4]), ValueError, "vertical_score: expected 3 dims"),
        (lambda: ops.detect_grid(score, (-1, 50), [4]), ValueError, "span"),
        (lambda: ops.detect_grid(score, (50, 50), [4]), ValueError, "span"),
        (lambda: ops.detect_grid(score, (0, 101), [4]), ValueError, "span"),
        (lambda: ops.detect_grid(score, (0, 100), [4, 0]), ValueError, r"candidate_strides\[1\] = 0"),
        (lambda: ops.detect_grid(score, (0, 100), [2 ** 40]), ValueError, r"candidate_strides\[0\]"),
        (lambda: ops.detect_grid(score, (0, 100), []), ValueError, "candidate_strides"),
        (lambda: ops.detect_grid(score, (0, 100), [51, 99]), ValueError,
         "no candidate stride leaves 2 or more lines in a span of 100 tokens"),
        (lambda: ops.detect_grid(score, (0, 100), [4], tolerance=0.0), ValueError, "tolerance"),
        (lambda: ops.detect_grid(score, (0, 100), [4], tolerance=1.5), ValueError, "tolerance"),
        (lambda: ops.detect_grid(score, (0, 100), [4], tolerance=float("nan")), ValueError, "tolerance"),
        (lambda: ops.detect_grid(score, (0, 100), [4], max_lines=0), ValueError, "max_lines"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_grid_lift_rejects_bad_arguments():
    score = torch.rand(2, 2, 100)
    good = torch.full((2, 2), 4, dtype=torch.int32)
    zero = torch.zeros((2, 2), dtype=torch.int32)
    bad_stride = good.clone()
    bad_stride[1, 0] = 91
    bad_phase = zero.clone()
    bad_phase[0, 1] = 4
    cases = [
        (lambda: ops.grid_lift(score, (10, 100), bad_stride, zero), ValueError,
         r"stride\[1, 0\] = 91 must be in \[1, span length 90\]"),
        (lambda: ops.grid_lift(score, (10, 100), good, bad_phase), ValueError,
         r"phase\[0, 1\] = 4 must be in \[0, stride = 4\)"),
        (lambda: ops.grid_lift(score, (10, 100), good.long(), zero), TypeError, "stride: dtype"),
        (lambda: ops.grid_lift(score, (10, 100), good[:1], zero[:1]), ValueError, "stride: shape"),
        (lambda: ops.grid_lift(score, (10, 100), good, zero[:, :1]), ValueError, "phase: shape"),
        (lambda: ops.grid_lift(score.half(), (10, 100), good, zero), TypeError, "vertical_score: dtype"),
        (lambda: ops.grid_lift(score, (10, 0), good, zero), ValueError, "span"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


# ---- CUDA ---------------------------------------------------------------------------------------

_has_cuda_op = torch._C._dispatch_has_kernel_for_dispatch_key("mminference::detect_grid", "CUDA")


def _assert_cuda_matches_cpu(score, span, candidates, tolerance, max_lines):
    want = ops.detect_grid(score, span, candidates, tolerance=tolerance, max_lines=max_lines)
    got = ops.detect_grid(score.cuda(), span, candidates, tolerance=tolerance, max_lines=max_lines)
    assert all(t.is_cuda for t in got)
    assert torch.equal(got[0].cpu(), want[0]) and torch.equal(got[1].cpu(), want[1])
    torch.testing.assert_close(got[2].cpu(), want[2], rtol=1e-6, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda_op, reason="built without the CUDA kernels")
@pytest.mark.parametrize("seed", range(40))
def test_cuda_detect_matches_cpu(seed):
    _assert_cuda_matches_cpu(*_random_case(seed))


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda_op, reason="built without the CUDA kernels")
def test_cuda_detect_large_cases_match_cpu():
    gen = torch.Generator().manual_seed(11)
    score = torch.rand(2, 5, 40000, generator=gen)
    score[0, :, 1000:39000:256] += 0.5
    span = (1000, 39000)
    tpf = candidate_strides(Grid(), 256, span[1] - span[0])
    # > 64 candidates (several launches), strides 1 and 2 (span lift over n and n / 2 lines),
    # max_lines > 64 (the bitwise per-phase select), many phases per candidate.
    for candidates, max_lines in ((tpf, 64), (list(range(1, 200)), 64), ([1, 2], 64), (tpf, 150),
                                  ([3, 5000, 9000, 18999], 3)):
        _assert_cuda_matches_cpu(score, span, candidates, 0.5, max_lines)
    zeros = torch.zeros(1, 3, 5000)
    _assert_cuda_matches_cpu(zeros, (0, 5000), [7, 3, 100], 0.5, 64)
    ties = torch.randint(0, 3, (1, 4, 3000), generator=gen).float()
    _assert_cuda_matches_cpu(ties, (0, 3000), [2, 3, 4, 5, 6, 10, 30], 0.5, 64)


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda_op, reason="built without the CUDA kernels")
def test_cuda_grid_lift_matches_cpu_and_reports_bad_entries():
    gen = torch.Generator().manual_seed(12)
    score = torch.rand(2, 3, 30000, generator=gen)
    stride = torch.tensor([[1, 2, 7], [256, 29999, 100]], dtype=torch.int32)
    phase = torch.tensor([[0, 1, 6], [17, 29998, 0]], dtype=torch.int32)
    want = ops.grid_lift(score, (1, 30000), stride, phase)
    got = ops.grid_lift(score.cuda(), (1, 30000), stride.cuda(), phase.cuda())
    torch.testing.assert_close(got.cpu(), want, rtol=1e-6, atol=0)
    phase[1, 2] = 100
    with pytest.raises(ValueError, match=r"phase\[1, 2\] = 100 must be in \[0, stride = 100\)"):
        ops.grid_lift(score.cuda(), (1, 30000), stride.cuda(), phase.cuda())


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda_op, reason="built without the CUDA kernels")
def test_cuda_detect_timing_at_128k():
    """Prints the op's time at Sk = 131072, B = 1, H = 28 (tokens_per_frame 256) next to the
    plain-PyTorch re-derivation's (the loop the op replaced)."""
    seq = 131072
    score = torch.rand(1, 28, seq, device="cuda") * 0.1
    score[..., 5:seq:256] += 1.0
    strides = candidate_strides(Grid(), 256, seq)

    def timed(fn, reps=20):
        fn()
        torch.cuda.synchronize()
        begin = time.perf_counter()
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - begin) / reps * 1e3

    op_ms = timed(lambda: ops.detect_grid(score, (0, seq), strides))
    ref_ms = timed(lambda: _reference_detect(score, (0, seq), strides), reps=3)
    stride, phase, _ = ops.detect_grid(score, (0, seq), strides)
    assert (stride == 256).all() and (phase == 5).all()
    print(f"\ndetect_grid at Sk={seq}, B=1, H=28, {len(strides)} candidates {strides}: "
          f"{op_ms:.3f} ms (PyTorch re-derivation {ref_ms:.3f} ms) on {torch.cuda.get_device_name()}")
