"""Choosing how to compute each kernel call: the implementation (AUTO) and the chunks (memory).

A :class:`Planner` belongs to one kernel function. For every *signature* of a
call (shapes and dtypes of the traced arguments, the static ones, the kinds
requested, the device kind and the budget) it makes one
:class:`~bigntk.empirical._planning._kernel_plan.KernelPlan` (a *decision*),
cached:

1. An explicit implementation whose rough size estimate (Jacobians and
   per-output activations, times a safety factor) fits the budget is used as
   is: nothing extra is compiled.
2. Otherwise each candidate (the explicit one, or all three for AUTO) is
   compiled for the actual shapes; XLA's memory analysis gives its peak, and
   if that exceeds the budget :func:`~bigntk.empirical._planning._memory.fit_chunks`
   cuts it. Candidates that cannot fit are dropped.
3. AUTO then picks the fastest. On concrete arrays it times each candidate on
   the call's own arguments (fastest predicted first; the minimum of up to nine
   calls each, about a quarter of a second for fast candidates;
   a candidate predicted 20x slower than the best is not run) and returns the
   winner's result. Under a user's ``jax.jit`` (tracers) it times the
   candidates in the same way on *stand-ins*: concrete arrays with the traced
   shapes and dtypes (normal floats, zero integers), made while tracing.
   Only where that fails does it predict the time from XLA's cost analysis
   (FLOPs and bytes accessed), corrected per device kind and implementation by
   the ratios earlier trials measured; such a prediction is replaced by a trial
   the first time the same signature comes with concrete arrays.
4. A measured choice (trial or stand-in) is recorded on disk
   (:mod:`~bigntk.empirical._planning._records`, keyed by the first candidate's program):
   a later process compiles only the recorded implementation, cut as
   recorded, and times nothing (``how='recorded'``); where it no longer fits
   the budget that way, AUTO times its candidates again.

Decisions are logged at DEBUG level on ``bigntk.empirical.auto`` and can be
read without computing with ``kernel_fn.plan(...)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, NamedTuple

import jax

from bigntk.empirical._chunking import Chunks
from bigntk.empirical._implementation import NtkImplementation
from bigntk.empirical._planning import _cpu_path as cpu_path
from bigntk.empirical._planning import _records as records
from bigntk.empirical._planning import _timing as timing
from bigntk.empirical._planning._cache import PlanningCache, process_cache
from bigntk.empirical._planning._kernel_plan import KernelPlan
from bigntk.empirical._planning._memory import Knob, default_budget, fit_chunks, peak_bytes
from bigntk.empirical._planning._sizes import ProblemInfo
from bigntk.empirical._trees import has_tracer
from bigntk.errors import MemoryBudgetError

logger = logging.getLogger("bigntk.empirical.auto")

CANDIDATES = (
    NtkImplementation.JACOBIAN_CONTRACTION,
    NtkImplementation.NTK_VECTOR_PRODUCTS,
    NtkImplementation.STRUCTURED_DERIVATIVES,
)

_SKIP_SLOWER = 20.0  # a candidate predicted this much slower than the best is not timed
_SWITCH = 0.9  # AUTO leaves the rule's CPU path for one at least 10% faster


class _Candidate(NamedTuple):
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


def _device() -> Any:
    return jax.devices()[0]


def _aval(leaf: Any) -> tuple:
    a = jax.typeof(leaf)
    return (tuple(a.shape), str(a.dtype), bool(getattr(a, "weak_type", False)))


class Planner:
    """Decisions for one kernel function (see the module docstring).

    Args:
        implementation: the requested implementation (AUTO: choose).
        memory_budget: bytes, or None for the default.
        program: ``(implementation, chunks) -> `` the compiled kernel program
            (``_compiled.Compiled``); each is built once and kept here.
        info: ``(kinds, x1, x2, params, kwargs) ->`` :class:`ProblemInfo`.
        cache: the process's planning state (None: :func:`process_cache`).

    What it learns about its own kernel function is kept here, freed with it:
    the compiled programs by ``(implementation, chunks)``, the decisions by call
    signature and the executables compiled while deciding.
    """

    def __init__(
        self,
        implementation: NtkImplementation,
        memory_budget: float | None,
        program: Callable[[NtkImplementation, Chunks], Any],
        info: Callable[..., ProblemInfo],
        cache: PlanningCache | None = None,
    ):
        self.implementation = implementation
        self.memory_budget = memory_budget
        self._build_program = program
        self._info = info
        self._cache = process_cache() if cache is None else cache
        self._programs: dict[tuple[NtkImplementation, Chunks], Any] = {}
        self._decisions: dict[Any, KernelPlan] = {}
        self._executables: dict[Any, Any] = {}

    # -- public --------------------------------------------------------------------------

    def __call__(self, kinds: tuple, x1: Any, x2: Any, params: Any, kwargs: dict) -> dict:
        """The kernels of one call, computed as decided."""
        if "ntk" not in kinds:
            return self._program(CANDIDATES[0], Chunks())(kinds, x1, x2, params, kwargs)
        parts = self._split(kinds, x1, x2, params, kwargs)
        decision, key, out = self._decision(parts, kinds, x1, x2, params, kwargs)
        if out is not None:
            return out
        exe = self._executables.get(
            self._exe_key(key, decision.implementation, decision.chunks, parts[0])
        )
        if exe is not None:
            return exe(parts[0])
        program = self._program(decision.implementation, decision.chunks)
        return program.call_split(parts, kinds, x1, x2, params, kwargs, decision.cpu_path)

    def plan(self, kinds: tuple, x1: Any, x2: Any, params: Any, kwargs: dict) -> KernelPlan:
        """The decision for these arguments (made now if not cached)."""
        if "ntk" not in kinds:
            return KernelPlan(CANDIDATES[0], Chunks(), None, self.memory_budget, "explicit", {})
        parts = self._split(kinds, x1, x2, params, kwargs)
        return self._decision(parts, kinds, x1, x2, params, kwargs)[0]

    # -- deciding ------------------------------------------------------------------------

    def _program(self, which: NtkImplementation, chunks: Chunks) -> Any:
        """The compiled program of ``which`` cut as ``chunks`` (built on first use)."""
        if (which, chunks) not in self._programs:
            self._programs[(which, chunks)] = self._build_program(which, chunks)
        return self._programs[(which, chunks)]

    def _exe_key(self, key: Any, impl: NtkImplementation, chunks: Chunks, dynamic: Any) -> Any:
        if key is None or has_tracer(dynamic):
            return None
        shard = tuple(getattr(v, "sharding", None) for v in jax.tree.leaves(dynamic))
        return (key, impl, chunks, shard)

    def _split(self, kinds, x1, x2, params, kwargs) -> tuple:
        """``(dynamic, static, hashable)`` of a call (the same for every program)."""
        program = self._program(self.implementation or CANDIDATES[0], Chunks())
        return program.split(kinds, x1, x2, params, kwargs)

    def _decision(self, parts: tuple, kinds, x1, x2, params, kwargs):
        dynamic, static, hashable = parts
        device = _device()
        concrete = not has_tracer(dynamic)
        # on CPU, top-level calls choose a CPU path; traced ones get the user jit's options
        top_level = concrete and bool(cpu_path.paths(device.platform))
        key = None
        if hashable:
            avals = tuple(_aval(v) for v in jax.tree.leaves(dynamic))
            key = (kinds, static, avals, device.platform, device.device_kind, top_level)
            cached = self._decisions.get(key)
            measured = (
                None if cached is not None or concrete else self._decisions.get(key[:-1] + (True,))
            )
            if measured is not None:
                # traced after a top-level trial (the builder's sharded program): the
                # implementation and chunks stand; the enclosing jit's options apply
                cached = self._decisions[key] = measured._replace(cpu_path=None)
            # a prediction made under jit is replaced by a trial once concrete arguments come
            if cached is not None and not (cached.how == "estimate" and concrete):
                return cached, key, None
        args = (kinds, x1, x2, params, kwargs)
        decision, out = self._decide(args, dynamic, device, key, concrete, top_level)
        if key is not None:
            self._decisions[key] = decision
        logger.debug(
            "%s: %s (%s), chunks %s, peak %s bytes, budget %s; seconds %s",
            "AUTO chose" if self.implementation == NtkImplementation.AUTO else "using",
            decision.implementation.name,
            decision.how,
            decision.chunks.describe(),
            decision.peak_bytes,
            decision.memory_budget,
            {k: f"{v:.3g}" for k, v in decision.seconds.items()},
        )
        return decision, key, out

    def _decide(self, args, dynamic, device, key, concrete: bool, top_level: bool):
        budget = self.memory_budget
        budget = int(budget) if budget is not None else default_budget(device)
        explicit = self.implementation != NtkImplementation.AUTO
        candidates = (self.implementation,) if explicit else CANDIDATES
        info = self._info(*args)
        # top-level calls on CPU compile ahead, for the CPU path the rule gives
        choose_path = top_level and info.has_params
        fits = budget is None or info.rough_bytes <= budget
        if not info.has_params or (explicit and fits and not choose_path):
            return KernelPlan(candidates[0], Chunks(), None, budget, "explicit", {}), None
        text = None  # AUTO: the key of its record (the first candidate's program)
        if not explicit:
            text, decision = self._recorded_auto(args, info, budget, device, concrete, dynamic, key)
            if decision is not None:
                return decision, None
        fitted, errors = [], []
        for impl in candidates:
            try:
                fitted.append(self._fit(impl, args, info, budget, device, concrete))
            except MemoryBudgetError as e:
                errors.append(e)
            except Exception as e:  # noqa: BLE001 - one candidate failing must not stop AUTO
                if explicit:
                    raise
                logger.debug("AUTO: %s failed to compile: %r", impl.name, e)
                errors.append(e)
        if not fitted:
            memory = [e for e in errors if isinstance(e, MemoryBudgetError)]
            raise (memory[0] if len(memory) == len(errors) else errors[0])
        if explicit or len(fitted) == 1:
            how = "explicit" if explicit else "only"
            if choose_path:  # run now; also on the other CPU path if the run was mid-length
                only = {fitted[0].impl: 0.0}
                decision, out = self._trial(fitted, only, dynamic, budget, device, key)
                return decision._replace(how=how), out
            c = fitted[0]
            self._store(key, c, dynamic, concrete)
            return KernelPlan(c.impl, c.chunks, c.peak, budget, how, {}, c.path), None
        predicted = {
            c.impl: (
                timing.calibrated(self._cache, c.predicted, device, c.impl)
                if c.predicted
                else math.inf
            )
            for c in fitted
        }
        if concrete:
            decision, out = self._trial(fitted, predicted, dynamic, budget, device, key)
            self._record_auto(text, decision, device)
            return decision, out
        stand_ins = timing.stand_ins(dynamic)
        if stand_ins is not None:
            try:
                decision, _ = self._trial(fitted, predicted, stand_ins, budget, device, None)
                self._record_auto(text, decision, device)
                return decision._replace(how="stand-in"), None
            except Exception as e:  # noqa: BLE001 - timing is an optimisation, never an error
                logger.debug("AUTO: timing on stand-in arrays failed (%r); predicting.", e)
        impl = min(predicted, key=predicted.get)
        c = next(c for c in fitted if c.impl == impl)
        seconds = {i.name: t for i, t in predicted.items()}
        return KernelPlan(impl, c.chunks, c.peak, budget, "estimate", seconds), None

    def _recorded_auto(self, args, info, budget, device, concrete: bool, dynamic, key):
        """``(text, decision)``: AUTO's choice as an earlier process measured it.

        ``text`` keys AUTO's record (the first candidate's unchunked program);
        ``decision`` is None where there is no record, or where the recorded
        implementation no longer fits the budget cut as it was (then AUTO times
        its candidates again).
        """
        try:
            text = records.program_text(self._program(CANDIDATES[0], Chunks()).lower(*args))
        except Exception as e:  # noqa: BLE001 - the candidates' own errors come later
            logger.debug("AUTO: no record key (%r).", e)
            return None, None
        record = records.get("auto", text, device)
        if record is None:
            return text, None
        try:
            impl = NtkImplementation[record["implementation"]]
            c = self._fit(impl, args, info, budget, device, concrete)
        except Exception as e:  # noqa: BLE001 - a stale record or a smaller budget: time anew
            logger.debug("AUTO: the recorded choice %s does not fit now (%r).", record, e)
            return text, None
        if asdict(c.chunks) != record.get("chunks"):
            return text, None
        self._store(key, c, dynamic, concrete)
        seconds = {str(k): float(v) for k, v in record.get("seconds", {}).items()}
        return text, KernelPlan(impl, c.chunks, c.peak, budget, "recorded", seconds, c.path)

    @staticmethod
    def _record_auto(text: str | None, d: KernelPlan, device: Any) -> None:
        record = {"implementation": d.implementation.name, "chunks": asdict(d.chunks)}
        records.put("auto", text, device, {**record, "seconds": d.seconds})

    def _fit(self, impl, args, info: ProblemInfo, budget: int | None, device, concrete: bool):
        """``impl`` compiled for this call, cut to ``budget`` (a :class:`_Candidate`).

        Concrete calls compile for the CPU path an earlier process recorded
        for the unchunked program (``_records``), else the one the rule gives
        it; traced ones for XLA's defaults, as the user's jit will.
        """
        compiled: dict[Chunks, Any] = {}
        lowered: dict[Chunks, Any] = {}
        path: list[Any] = []  # [path, text, recorded], set by the unchunked program

        def peak(chunks: Chunks) -> int | None:
            if chunks not in compiled:
                lowered[chunks] = self._program(impl, chunks).lower(*args)
                if not path:
                    path.extend(self._first_path(lowered[chunks], device, concrete))
                compiled[chunks] = cpu_path.compile_lowered(lowered[chunks], path[0])
            return peak_bytes(compiled[chunks])

        knobs = []
        if info.example_sides:
            knobs.append(Knob("examples", 1, info.n1))
            if 2 in info.example_sides:
                knobs.append(Knob("examples2", 1, info.n2))
        if impl == NtkImplementation.NTK_VECTOR_PRODUCTS:
            knobs.append(Knob("basis", 1, info.basis))
        knobs.append(Knob("params", info.min_group, info.n_params))
        if budget is None:
            chunks, p = Chunks(), peak(Chunks())
        else:
            chunks, p = fit_chunks(peak, knobs, budget, f"the NTK by {impl.name}")
        predicted = timing.predict(compiled[Chunks()], device)
        exe, low = compiled[chunks], lowered[chunks]
        return _Candidate(impl, chunks, p, exe, predicted, low, *path)

    @staticmethod
    def _first_path(lowered: Any, device: Any, concrete: bool) -> tuple:
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

    def _store(self, key, c: _Candidate, dynamic, concrete: bool) -> None:
        if concrete and key is not None:
            self._executables[self._exe_key(key, c.impl, c.chunks, dynamic)] = c.exe

    def _other_paths(self, c: _Candidate, t, out, dynamic, seconds, device):
        """``(candidate, seconds, output)``: ``c``'s program on the faster CPU path.

        The other path is compiled and timed only when ``c`` ran ``t`` seconds
        within ``cpu_path.TRIAL_S`` (shorter runs gain too little, longer ones
        would cost too much to time twice), and only for AUTO or when
        ``BIGNTK_CPU_PATH_TRIAL=1`` asks; never when ``c``'s path was recorded.
        The outcome is recorded for later processes.
        """
        if c.recorded or not self._trial_wanted():
            return c, t, out
        low, high = cpu_path.TRIAL_S
        timed = {c.path: t}
        for other in cpu_path.other_paths(device.platform, c.path):
            if not low <= t <= high:
                break
            try:
                exe = cpu_path.compile_lowered(c.lowered, other)
                # a new executable's first run is cold: time it apart, as the first path's
                first, out2 = timing.time_runs(exe, dynamic, 1)
                again, out2 = timing.time_repeated(exe, dynamic, first)
                t2 = min(first, again)
            except Exception as e:  # noqa: BLE001 - the first path works: keep it
                logger.debug("%s on CPU path %s failed: %r", c.impl.name, other, e)
                continue
            seconds[f"{c.impl.name}/{other}"] = timed[other] = t2
            if t2 < _SWITCH * t:  # clearly faster: noise does not flip the path
                c, t, out = c._replace(exe=exe, path=other), t2, out2
        if len(timed) > 1:
            records.put("cpu-path", c.text, device, {"path": c.path, "seconds": timed})
        return c, t, out

    def _trial_wanted(self) -> bool:
        """Whether a program is timed on the other CPU path (AUTO, or asked for)."""
        return self.implementation == NtkImplementation.AUTO or cpu_path.trial_wanted()

    def _trial(self, fitted, predicted, dynamic, budget, device, key):
        order = sorted(fitted, key=lambda c: predicted[c.impl])
        best_pred = predicted[order[0].impl]
        seconds: dict[str, float] = {}
        best = None
        low, high = cpu_path.TRIAL_S
        for c in order:
            if best is not None and predicted[c.impl] > _SKIP_SLOWER * best_pred:
                continue
            first, out = timing.time_runs(c.exe, dynamic, 1)
            t = first
            # one candidate with no CPU path to compare: its one run is the answer
            compared = len(order) > 1 or (
                not c.recorded
                and self._trial_wanted()
                and bool(cpu_path.other_paths(device.platform, c.path))
                and low <= t <= high
            )
            if compared and (best is None or first < 3 * best[0]):
                again, out = timing.time_repeated(c.exe, dynamic, first)
                t = min(first, again)
            seconds[c.impl.name] = t
            timing.calibrate(self._cache, t, c.predicted, device, c.impl)
            if best is None or t < best[0]:
                best = (t, c, out)
        t, c, out = best
        c, t, out = self._other_paths(c, t, out, dynamic, seconds, device)
        self._store(key, c, dynamic, True)
        return KernelPlan(c.impl, c.chunks, c.peak, budget, "trial", seconds, c.path), out
