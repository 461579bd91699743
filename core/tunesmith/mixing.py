"""Several sources in one split, mixed by weight.

A split given as a list (``data.train: [{name: jsonl, path: a.jsonl, weight: 0.7}, {..., weight: 0.3,
formatter: chat}]``) is a :class:`Mixture`: each part is read with its own formatter (the run's when it
names none), the data checks see all parts together, and the parts are then interleaved with
``datasets.interleave_datasets``: each next example comes from part *i* with probability
``weight_i / sum(weights)``, drawn with ``training.seed``. ``data.mix_stopping`` says when it ends:
``first_exhausted`` (when a part runs out: no example is repeated) or ``all_exhausted`` (when every part
has been seen whole: smaller parts are repeated).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tunesmith.components import DataSource, Formatter


@dataclass
class Part:
    """One source of a mixed split, its weight and its formatter (None: the run's formatter)."""

    source: DataSource
    weight: float = 1.0
    formatter: Formatter | None = None


class Mixture(DataSource):
    """The sources of one split, mixed by weight (see the module docstring)."""

    name = "mixture"

    def __init__(self, parts: list[Part]) -> None:
        super().__init__()
        self.parts = parts

    def describe(self) -> str:
        return " + ".join(f"{p.weight:g}×{p.source.describe()}" for p in self.parts)

    def read(self) -> Iterator[Any]:  # pragma: no cover - each part is read on its own
        raise TypeError("a mixture is read part by part (tunesmith.prepare)")

    def probabilities(self) -> list[float]:
        total = sum(p.weight for p in self.parts)
        return [p.weight / total for p in self.parts]


def parts_of(source: DataSource) -> list[Part]:
    """The parts of a split's source: a mixture's parts, or the one source with weight 1."""
    return source.parts if isinstance(source, Mixture) else [Part(source)]


def mix(datasets: list[Any], mixture: Mixture, *, seed: int, stopping: str) -> Any:
    """The parts' stored examples interleaved by weight (an indices mapping over them)."""
    from datasets import interleave_datasets

    if len(datasets) == 1:
        return datasets[0]
    return interleave_datasets(
        datasets, probabilities=mixture.probabilities(), seed=seed, stopping_strategy=stopping
    )


__all__ = ["Mixture", "Part", "mix", "parts_of"]
