"""Several processes, one run: which process this is, and how the processes agree on an outcome.

``torchrun`` and ``accelerate launch`` start one process per device; each runs the whole pipeline.
Global rank 0 is the *main* process: it alone owns the console, the run directory, TensorBoard and the
plugin ``on_*`` hooks. The others train and evaluate their share and stay quiet.

Every phase that can fail before training ends in a collective that carries its outcome, so a mistake
found by one process stops every process with the same message (exit status 2) instead of leaving the
others waiting at a barrier:

- :meth:`Ranks.on_main` runs a step on the main process only (creating the run directory) and tells
  the others whether it worked;
- :meth:`Ranks.agree` runs a step on every process and fails everywhere if it failed anywhere;
- :meth:`Ranks.main_first` runs a step on the main process, then on the others (preparing data:
  the main process builds what is cached, the others read it).

The rank comes from the launcher's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), so it is
known before torch is imported; :meth:`Ranks.start` joins the process group early (through
accelerate's ``PartialState``, which the Trainer reuses) so the pipeline can use collectives before
training starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tunesmith.errors import TunesmithError

T = TypeVar("T")

#: (message, details) of a failure, as it travels between processes.
Outcome = tuple[str, list[str]] | None


class FailedElsewhere(TunesmithError):
    """Another process failed; the main process reports why, the others exit quietly."""


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of one run (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Ranks:
        """What the launcher (torchrun, accelerate launch, a SLURM script) put in the environment."""

        def number(name: str, default: int) -> int:
            value = os.environ.get(name, "")
            return int(value) if value.strip().isdigit() else default

        return cls(number("RANK", 0), number("WORLD_SIZE", 1), number("LOCAL_RANK", 0))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def start(self, device_type: str, timeout_minutes: int = 30) -> None:
        """Join the process group (gloo on CPU, NCCL on GPUs, one device per local rank). The Trainer
        keeps this group, so its timeout is the run's (``training.distributed.timeout_minutes``)."""
        if not self.distributed:
            return
        from datetime import timedelta

        import torch.distributed as dist
        from accelerate import PartialState

        if not dist.is_initialized():
            PartialState(cpu=device_type == "cpu", timeout=timedelta(minutes=timeout_minutes))

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, value: T) -> T:
        """The main process's ``value``, on every process."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, step: Callable[[], T]) -> T | None:
        """Run ``step`` on the main process; every process fails if it failed. Others get None."""
        if not self.distributed:
            return step()
        result, error, outcome = None, None, None
        if self.is_main:
            try:
                result = step()
            except BaseException as exc:
                error, outcome = exc, _outcome(exc)
        outcome = self.broadcast(outcome)
        if error is not None:
            raise error
        if outcome is not None:
            raise _elsewhere(0, outcome)
        return result

    def agree(self, step: Callable[[], T]) -> T:
        """Run ``step`` on every process; if it failed on any, every process fails with that error."""
        if not self.distributed:
            return step()
        import torch.distributed as dist

        result, error, mine = None, None, None
        try:
            result = step()
        except BaseException as exc:
            error, mine = exc, _outcome(exc)
        outcomes: list[Outcome] = [None] * self.world_size
        dist.all_gather_object(outcomes, mine)
        if error is not None:
            raise error
        for rank, outcome in enumerate(outcomes):
            if outcome is not None:
                raise _elsewhere(rank, outcome)
        return result  # type: ignore[return-value]

    def main_first(self, step: Callable[[], T]) -> T:
        """Run ``step`` on the main process, then (if it worked) on the others, e.g. to fill a cache
        once that the others then read."""
        first = self.on_main(step)
        return self.agree((lambda: first) if self.is_main else step)  # type: ignore[return-value]


def _outcome(exc: BaseException) -> Outcome:
    if isinstance(exc, TunesmithError):
        return exc.message, list(exc.details)
    return f"{type(exc).__name__}: {exc}".splitlines()[0], []


def _elsewhere(rank: int, outcome: tuple[str, list[str]]) -> FailedElsewhere:
    message, details = outcome
    return FailedElsewhere(message, details=[*details, f"(reported by process {rank})"])


__all__ = ["FailedElsewhere", "Ranks"]
