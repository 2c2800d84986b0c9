"""A *candidate*: one implementation compiled for a call, cut to the budget, for a CPU path.

:func:`fit` compiles the unchunked program for the CPU path an earlier process
recorded (``_records``), else the one the rule gives it (``_cpu_path``); traced
calls compile for XLA's defaults, as the user's jit will. Where XLA's peak
exceeds the budget, :func:`~bigntk.empirical._planning._memory.fit_chunks`
cuts the program along the knobs of :func:`knobs`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from bigntk.empirical._chunking import Chunks
from bigntk.empirical._implementation import NtkImplementation
from bigntk.empirical._planning import _cpu_path as cpu_path
from bigntk.empirical._planning import _records as records
from bigntk.empirical._planning import _timing as timing
from bigntk.empirical._planning._memory import Knob, fit_chunks, peak_bytes
from bigntk.empirical._planning._sizes import ProblemInfo


class Candidate(NamedTuple):
    """One implementation compiled for a call, cut to the budget, for a CPU path."""

    impl: NtkImplementation
    chunks: Chunks
    peak: int | None
    exe: Any
    predicted: float | None  # seconds from XLA's cost analysis, uncalibrated
    lowered: Any  # the program before compiling (compiled again for another CPU path)
    path: str | None
    text: str | None  # the unchunked program's text: its CPU path record's key
    recorded: bool  # the path is an earlier process's measured one (no trial)


def knobs(impl: NtkImplementation, info: ProblemInfo) -> list[Knob]:
    """The ways ``impl`` can be cut for a call of sizes ``info``, in the order to try them."""
    out = []
    if info.example_sides:
        out.append(Knob("examples", 1, info.n1))
        if 2 in info.example_sides:
            out.append(Knob("examples2", 1, info.n2))
    if impl == NtkImplementation.NTK_VECTOR_PRODUCTS:
        out.append(Knob("basis", 1, info.basis))
    out.append(Knob("params", info.min_group, info.n_params))
    return out


def first_path(lowered: Any, device: Any, concrete: bool) -> tuple:
    """``(path, text, recorded)`` for the unchunked program ``lowered``."""
    if not concrete:
        return None, None, False
    first = cpu_path.first_path(device.platform, lowered)
    if len(cpu_path.paths(device.platform)) < 2:  # no choice (forced, or not CPU)
        return first, None, False
    text = records.program_text(lowered)
    record = records.get("cpu-path", text, device)
    if record is not None and record.get("path") in cpu_path.PATHS:
        return record["path"], text, True
    return first, text, False


def fit(
    program: Callable[[NtkImplementation, Chunks], Any],
    impl: NtkImplementation,
    args: tuple,
    info: ProblemInfo,
    budget: int | None,
    device: Any,
    concrete: bool,
) -> Candidate:
    """``impl`` compiled for the call ``args``, cut to ``budget`` (see the module docstring).

    ``program(impl, chunks)`` is the kernel program (``_compiled.Compiled``).

    Raises:
        MemoryBudgetError: even the smallest pieces exceed ``budget``.
    """
    compiled: dict[Chunks, Any] = {}
    lowered: dict[Chunks, Any] = {}
    path: list[Any] = []  # [path, text, recorded], set by the unchunked program

    def peak(chunks: Chunks) -> int | None:
        if chunks not in compiled:
            lowered[chunks] = program(impl, chunks).lower(*args)
            if not path:
                path.extend(first_path(lowered[chunks], device, concrete))
            compiled[chunks] = cpu_path.compile_lowered(lowered[chunks], path[0])
        return peak_bytes(compiled[chunks])

    if budget is None:
        chunks, p = Chunks(), peak(Chunks())
    else:
        chunks, p = fit_chunks(peak, knobs(impl, info), budget, f"the NTK by {impl.name}")
    predicted = timing.predict(compiled[Chunks()], device)
    return Candidate(impl, chunks, p, compiled[chunks], predicted, lowered[chunks], *path)
