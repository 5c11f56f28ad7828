"""Per-item results, accuracy (overall and by a metadata key) and the dense-vs-sparse agreement
report."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Optional, Sequence


@dataclasses.dataclass(frozen=True)
class Reply:
    """A greedy reply: its text, the option letter extracted from it (None: no answer) and the time to
    its first token (vision encoder + language-model prefill + first sampling step), seconds."""

    text: str
    prediction: Optional[str]
    prefill_s: float


@dataclasses.dataclass(frozen=True)
class ItemResult:
    """One item of a run. `density`: mean over layers of the sparse prefill's density (None when no
    layer ran sparse, e.g. an unpatched model or a prompt below `min_prefill_tokens`)."""

    item_id: str
    answer: str
    reply: Reply
    seq_len: int
    metadata: Mapping[str, Any]
    density: Optional[float] = None

    @property
    def correct(self) -> bool:
        return self.reply.prediction == self.answer


def accuracy(results: Sequence[ItemResult]) -> float:
    """Share of results whose extracted letter is the answer (no answer counts as wrong)."""
    if not results:
        raise ValueError("results: empty")
    return sum(r.correct for r in results) / len(results)


def accuracy_by(results: Sequence[ItemResult], key: str) -> dict[Any, tuple[float, int]]:
    """`{metadata[key]: (accuracy, count)}` (items without the key under None), in first-seen order."""
    groups: dict[Any, list[ItemResult]] = {}
    for r in results:
        groups.setdefault(r.metadata.get(key), []).append(r)
    return {value: (accuracy(group), len(group)) for value, group in groups.items()}


def kl_divergence(dense_logits, sparse_logits) -> float:
    """KL(softmax(dense) || softmax(sparse)) in float64 over the vocabulary (nats)."""
    import torch

    p = torch.log_softmax(dense_logits.double().flatten(), -1)
    q = torch.log_softmax(sparse_logits.double().flatten(), -1)
    if p.shape != q.shape:
        raise ValueError(f"logits: dense {tuple(p.shape)} and sparse {tuple(q.shape)} differ")
    return float((p.exp() * (p - q)).sum().clamp_min(0.0))


@dataclasses.dataclass(frozen=True)
class ComparisonRow:
    """One item run dense and patched. `kl`: `kl_divergence` of the two answer-position logits (the
    first generated token); `density` as `ItemResult.density`; `sparse_calls`: sparse attention
    calls in the patched run (0: the prompt stayed dense)."""

    item_id: str
    answer: str
    dense: Reply
    sparse: Reply
    kl: float
    seq_len: int
    metadata: Mapping[str, Any]
    density: Optional[float]
    sparse_calls: int

    @property
    def dense_correct(self) -> bool:
        return self.dense.prediction == self.answer

    @property
    def sparse_correct(self) -> bool:
        return self.sparse.prediction == self.answer

    @property
    def agree(self) -> bool:
        """Same extracted letter (both unanswered counts as the same)."""
        return self.dense.prediction == self.sparse.prediction


def _mean(values: Iterable[float]) -> Optional[float]:
    values = list(values)
    return sum(values) / len(values) if values else None


@dataclasses.dataclass(frozen=True)
class AgreementReport:
    """Dense vs sparse over a set of items. `expected_items`: how many items the run was given; a
    report whose rows differ in number raises (a run never drops items silently)."""

    rows: tuple[ComparisonRow, ...]
    expected_items: int
    config: str = ""

    def __post_init__(self):
        if len(self.rows) != self.expected_items:
            raise ValueError(f"rows: {len(self.rows)} results for {self.expected_items} items")
        if not self.rows:
            raise ValueError("rows: empty")

    @property
    def items(self) -> int:
        return len(self.rows)

    @property
    def dense_accuracy(self) -> float:
        return sum(r.dense_correct for r in self.rows) / self.items

    @property
    def sparse_accuracy(self) -> float:
        return sum(r.sparse_correct for r in self.rows) / self.items

    @property
    def agreement(self) -> float:
        return sum(r.agree for r in self.rows) / self.items

    @property
    def dense_unanswered(self) -> int:
        return sum(r.dense.prediction is None for r in self.rows)

    @property
    def sparse_unanswered(self) -> int:
        return sum(r.sparse.prediction is None for r in self.rows)

    @property
    def mean_kl(self) -> float:
        return _mean(r.kl for r in self.rows)

    @property
    def max_kl(self) -> float:
        return max(r.kl for r in self.rows)

    @property
    def dense_prefill_s(self) -> float:
        return _mean(r.dense.prefill_s for r in self.rows)

    @property
    def sparse_prefill_s(self) -> float:
        return _mean(r.sparse.prefill_s for r in self.rows)

    @property
    def speedup(self) -> float:
        """Total dense time to first token over total sparse time to first token."""
        return sum(r.dense.prefill_s for r in self.rows) / max(sum(r.sparse.prefill_s for r in self.rows), 1e-12)

    @property
    def sparse_items(self) -> int:
        """Items whose patched prefill ran sparse (the others were below `min_prefill_tokens`)."""
        return sum(r.sparse_calls > 0 for r in self.rows)

    @property
    def mean_density(self) -> Optional[float]:
        """Mean density over the items that ran sparse (None when none did)."""
        return _mean(r.density for r in self.rows if r.density is not None)

    def by(self, key: str) -> dict[Any, dict[str, float]]:
        """Per value of `metadata[key]`: items, dense / sparse accuracy, agreement."""
        groups: dict[Any, list[ComparisonRow]] = {}
        for r in self.rows:
            groups.setdefault(r.metadata.get(key), []).append(r)
        return {value: dict(items=len(g), dense_accuracy=sum(r.dense_correct for r in g) / len(g),
                            sparse_accuracy=sum(r.sparse_correct for r in g) / len(g),
                            agreement=sum(r.agree for r in g) / len(g))
                for value, g in groups.items()}

    def summary(self) -> dict[str, Any]:
        return dict(items=self.items, expected_items=self.expected_items, config=self.config,
                    dense_accuracy=self.dense_accuracy, sparse_accuracy=self.sparse_accuracy,
                    agreement=self.agreement, dense_unanswered=self.dense_unanswered,
                    sparse_unanswered=self.sparse_unanswered, mean_kl=self.mean_kl, max_kl=self.max_kl,
                    dense_prefill_s=self.dense_prefill_s, sparse_prefill_s=self.sparse_prefill_s,
                    speedup=self.speedup, sparse_items=self.sparse_items, mean_density=self.mean_density)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the summary and every row."""
        rows = [dict(item_id=r.item_id, answer=r.answer, dense=dataclasses.asdict(r.dense),
                     sparse=dataclasses.asdict(r.sparse), kl=r.kl, seq_len=r.seq_len, density=r.density,
                     sparse_calls=r.sparse_calls, metadata=dict(r.metadata)) for r in self.rows]
        return dict(summary=self.summary(), rows=rows)

    def format(self, by: Sequence[str] = ()) -> str:
        """A plain-text report: one line per figure, then a table per metadata key in `by`."""
        s = self.summary()
        density = "n/a (no item ran sparse)" if s["mean_density"] is None else f"{s['mean_density']:.4f}"
        lines = [
            f"items: {s['items']} of {s['expected_items']} ({s['sparse_items']} ran sparse)"
            + (f", config {self.config}" if self.config else ""),
            f"dense accuracy: {s['dense_accuracy']:.4f} ({s['dense_unanswered']} unanswered)",
            f"sparse accuracy: {s['sparse_accuracy']:.4f} ({s['sparse_unanswered']} unanswered)",
            f"answer agreement: {s['agreement']:.4f}",
            f"answer-position KL (dense || sparse): mean {s['mean_kl']:.3e}, max {s['max_kl']:.3e}",
            f"time to first token: dense {s['dense_prefill_s'] * 1e3:.1f} ms, "
            f"sparse {s['sparse_prefill_s'] * 1e3:.1f} ms, "
            f"speedup {s['speedup']:.2f}x",
            f"sparse density: {density}",
        ]
        for key in by:
            lines.append(f"by {key}:")
            for value, g in self.by(key).items():
                lines.append(f"  {value!s:>12}: {g['items']:4d} items, dense {g['dense_accuracy']:.3f}, sparse "
                             f"{g['sparse_accuracy']:.3f}, agreement {g['agreement']:.3f}")
        return "\n".join(lines)
