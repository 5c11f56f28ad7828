"""Accuracy, KL and the agreement report's figures against hand-computed values."""

import math

import pytest
import torch

from mminference.eval import AgreementReport, ComparisonRow, ItemResult, Reply, accuracy, accuracy_by, kl_divergence


def row(item_id, answer, dense, sparse, kl=0.0, density=0.5, calls=2, dense_s=2.0, sparse_s=1.0, **meta):
    return ComparisonRow(item_id, answer, Reply(f"reply {dense}", dense, dense_s), Reply(f"reply {sparse}", sparse,
                                                                                          sparse_s),
                         kl, 100, meta, density, calls)


def test_accuracy_and_groups():
    results = [ItemResult(str(i), "A", Reply("", p, 0.1), 10, {"duration": d})
               for i, (p, d) in enumerate([("A", "short"), ("B", "short"), (None, "long"), ("A", "long"),
                                           ("A", "long")])]
    assert accuracy(results) == pytest.approx(3 / 5)
    assert accuracy_by(results, "duration") == {"short": (0.5, 2), "long": (pytest.approx(2 / 3), 3)}
    assert accuracy_by(results, "domain") == {None: (pytest.approx(0.6), 5)}
    with pytest.raises(ValueError, match="empty"):
        accuracy([])


def test_kl_divergence_matches_the_definition():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, generator=g), torch.randn(50, generator=g)
    p = [math.exp(x) for x in a.tolist()]
    q = [math.exp(x) for x in b.tolist()]
    p = [x / sum(p) for x in p]
    q = [x / sum(q) for x in q]
    expected = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    assert kl_divergence(a, b) == pytest.approx(expected, rel=1e-9)
    assert kl_divergence(a, a + 3.0) == pytest.approx(0.0, abs=1e-12)  # shift-invariant
    with pytest.raises(ValueError, match="differ"):
        kl_divergence(a, b[:10])


def test_agreement_report_figures():
    rows = (row("1", "A", "A", "A", kl=0.1, duration="short"),
            row("2", "B", "B", "C", kl=0.3, density=None, calls=0, duration="short"),
            row("3", "C", None, None, kl=0.2, density=0.3, duration="long"),
            row("4", "D", "A", "D", kl=0.0, density=0.7, dense_s=4.0, sparse_s=1.0, duration="long"))
    report = AgreementReport(rows, 4, "auto")
    assert report.dense_accuracy == 0.5 and report.sparse_accuracy == 0.5
    assert report.agreement == 0.5  # rows 1 and 3 (both unanswered counts as agreeing)
    assert report.dense_unanswered == 1 and report.sparse_unanswered == 1
    assert report.mean_kl == pytest.approx(0.15) and report.max_kl == 0.3
    assert report.speedup == pytest.approx(10.0 / 4.0)
    assert report.sparse_items == 3 and report.mean_density == pytest.approx(0.5)
    assert report.by("duration") == {"short": dict(items=2, dense_accuracy=1.0, sparse_accuracy=0.5, agreement=0.5),
                                     "long": dict(items=2, dense_accuracy=0.0, sparse_accuracy=0.5, agreement=0.5)}
    text = report.format(by=["duration"])
    assert "items: 4 of 4 (3 ran sparse), config auto" in text
    assert "answer agreement: 0.5000" in text and "speedup 2.50x" in text and "by duration:" in text
    data = report.to_dict()
    assert data["summary"]["items"] == 4 and [r["item_id"] for r in data["rows"]] == ["1", "2", "3", "4"]


def test_report_refuses_missing_items():
    with pytest.raises(ValueError, match="1 results for 2 items"):
        AgreementReport((row("1", "A", "A", "A"),), 2)
