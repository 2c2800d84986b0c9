""":class:`KernelPlan`: how one kernel call is computed (``kernel_fn.plan(...)``)."""

from __future__ import annotations

from typing import NamedTuple

from bigntk.empirical._chunking import Chunks
from bigntk.empirical._implementation import NtkImplementation


class KernelPlan(NamedTuple):
    """How a call is computed.

    Attributes:
        implementation: the implementation used.
        chunks: how its work is cut (all None: not cut).
        peak_bytes: XLA's peak for the compiled program (None: not compiled
            for the decision, or XLA gives none).
        memory_budget: the budget in bytes (None: unknown free memory, no limit).
        how: ``'explicit'``, ``'trial'`` (timed on the arguments),
            ``'stand-in'`` (timed under jit on arrays of the traced shapes),
            ``'estimate'`` (predicted from XLA's cost analysis), ``'only'``
            (one candidate fits) or ``'recorded'`` (AUTO's choice as an earlier
            process measured it on this machine, read from ``_records``).
        seconds: measured (trial) or predicted seconds of each candidate, by name
            (``NAME/PATH`` for a CPU path timed besides the first).
        cpu_path: the XLA:CPU path the program is compiled for (``'default'`` or
            ``'xla'``, see ``_cpu_path``); None: XLA's defaults, no choice
            (not CPU, or traced inside a user's jit, whose options apply).
    """

    implementation: NtkImplementation
    chunks: Chunks
    peak_bytes: int | None
    memory_budget: int | None
    how: str
    seconds: dict[str, float]
    cpu_path: str | None = None

    @property
    def chosen_seconds(self) -> float | None:
        """The measured or predicted seconds of what was chosen (None: not timed)."""
        name = self.implementation.name
        return self.seconds.get(f"{name}/{self.cpu_path}", self.seconds.get(name))
