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
from bigntk.empirical._planning import _candidates as candidates
from bigntk.empirical._planning import _cpu_path as cpu_path
from bigntk.empirical._planning import _records as records
from bigntk.empirical._planning import _timing as timing
from bigntk.empirical._planning import _trials as trials
from bigntk.empirical._planning._cache import PlanningCache, process_cache
from bigntk.empirical._planning._candidates import Candidate
from bigntk.empirical._planning._kernel_plan import KernelPlan
from bigntk.empirical._planning._memory import default_budget
from bigntk.empirical._planning._sizes import ProblemInfo
from bigntk.empirical._trees import has_tracer
from bigntk.errors import MemoryBudgetError

logger = logging.getLogger("bigntk.empirical.auto")

CANDIDATES = (
    NtkImplementation.JACOBIAN_CONTRACTION,
    NtkImplementation.NTK_VECTOR_PRODUCTS,
    NtkImplementation.STRUCTURED_DERIVATIVES,
)


class _Call(NamedTuple):
    """One call being decided."""

    args: tuple  # (kinds, x1, x2, params, kwargs)
    dynamic: Any  # its traced leaves (arrays, or tracers under a user's jit)
    device: Any
    key: Any  # its signature (None: a static argument is unhashable, nothing is kept)
    concrete: bool  # arrays, not tracers
    top_level: bool  # compiled by bigntk itself, for a CPU path


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

    # -- programs and executables -----------------------------------------------------------

    def _program(self, which: NtkImplementation, chunks: Chunks) -> Any:
        """The compiled program of ``which`` cut as ``chunks`` (built on first use)."""
        if (which, chunks) not in self._programs:
            self._programs[(which, chunks)] = self._build_program(which, chunks)
        return self._programs[(which, chunks)]

    def _split(self, kinds, x1, x2, params, kwargs) -> tuple:
        """``(dynamic, static, hashable)`` of a call (the same for every program)."""
        program = self._program(self.implementation or CANDIDATES[0], Chunks())
        return program.split(kinds, x1, x2, params, kwargs)

    def _exe_key(self, key: Any, impl: NtkImplementation, chunks: Chunks, dynamic: Any) -> Any:
        if key is None or has_tracer(dynamic):
            return None
        shard = tuple(getattr(v, "sharding", None) for v in jax.tree.leaves(dynamic))
        return (key, impl, chunks, shard)

    def _store(self, key, c: Candidate, dynamic, concrete: bool) -> None:
        """Keep ``c``'s executable for the calls of signature ``key`` (concrete ones only)."""
        if concrete and key is not None:
            self._executables[self._exe_key(key, c.impl, c.chunks, dynamic)] = c.exe

    # -- the decision of a call -------------------------------------------------------------

    def _decision(self, parts: tuple, kinds, x1, x2, params, kwargs):
        """``(decision, key, output)``: the kept decision of this call, else one made now.

        ``output`` is the call's kernels where deciding already ran them (None otherwise).
        """
        dynamic, static, hashable = parts
        device = _device()
        concrete = not has_tracer(dynamic)
        # on CPU, top-level calls choose a CPU path; traced ones get the user jit's options
        top_level = concrete and bool(cpu_path.paths(device.platform))
        key = None
        if hashable:
            avals = tuple(_aval(v) for v in jax.tree.leaves(dynamic))
            key = (kinds, static, avals, device.platform, device.device_kind, top_level)
            cached = self._cached(key, concrete)
            if cached is not None:
                return cached, key, None
        call = _Call((kinds, x1, x2, params, kwargs), dynamic, device, key, concrete, top_level)
        decision, out = self._decide(call)
        if key is not None:
            self._decisions[key] = decision
        self._log(decision)
        return decision, key, out

    def _cached(self, key: Any, concrete: bool) -> KernelPlan | None:
        """The decision kept for signature ``key`` (None: none, or it is to be made again)."""
        cached = self._decisions.get(key)
        top_level_key = key[:-1] + (True,)
        measured = None if cached is not None or concrete else self._decisions.get(top_level_key)
        if measured is not None:
            # traced after a top-level trial (the builder's sharded program): the
            # implementation and chunks stand; the enclosing jit's options apply
            cached = self._decisions[key] = measured._replace(cpu_path=None)
        # a prediction made under jit is replaced by a trial once concrete arguments come
        if cached is not None and cached.how == "estimate" and concrete:
            return None
        return cached

    def _log(self, decision: KernelPlan) -> None:
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

    # -- deciding ---------------------------------------------------------------------------

    def _explicit(self) -> bool:
        return self.implementation != NtkImplementation.AUTO

    def _candidates(self) -> tuple[NtkImplementation, ...]:
        return (self.implementation,) if self._explicit() else CANDIDATES

    def _budget(self, device: Any) -> int | None:
        budget = self.memory_budget
        return int(budget) if budget is not None else default_budget(device)

    def _decide(self, call: _Call) -> tuple[KernelPlan, Any]:
        """``(decision, output)`` for ``call`` (output: its kernels where a trial ran them)."""
        budget = self._budget(call.device)
        info = self._info(*call.args)
        # top-level calls on CPU compile ahead, for the CPU path the rule gives
        choose_path = call.top_level and info.has_params
        fits = budget is None or info.rough_bytes <= budget
        if not info.has_params or (self._explicit() and fits and not choose_path):
            return KernelPlan(self._candidates()[0], Chunks(), None, budget, "explicit", {}), None
        text = None  # AUTO: the key of its record (the first candidate's program)
        if not self._explicit():
            text, decision = self._recorded_auto(call, info, budget)
            if decision is not None:
                return decision, None
        fitted = self._fit_candidates(call, info, budget)
        if self._explicit() or len(fitted) == 1:
            return self._only(fitted[0], call, budget, choose_path)
        return self._choose(fitted, call, budget, text)

    def _fit(self, impl: NtkImplementation, call: _Call, info: ProblemInfo, budget) -> Candidate:
        return candidates.fit(
            self._program, impl, call.args, info, budget, call.device, call.concrete
        )

    def _fit_candidates(self, call: _Call, info: ProblemInfo, budget) -> list[Candidate]:
        """Every candidate compiled and cut to ``budget``; the first error where none fits."""
        fitted, errors = [], []
        for impl in self._candidates():
            try:
                fitted.append(self._fit(impl, call, info, budget))
            except MemoryBudgetError as e:
                errors.append(e)
            except Exception as e:  # noqa: BLE001 - one candidate failing must not stop AUTO
                if self._explicit():
                    raise
                logger.debug("AUTO: %s failed to compile: %r", impl.name, e)
                errors.append(e)
        if not fitted:
            memory = [e for e in errors if isinstance(e, MemoryBudgetError)]
            raise (memory[0] if len(memory) == len(errors) else errors[0])
        return fitted

    def _only(self, c: Candidate, call: _Call, budget, choose_path: bool):
        """The decision with nothing to choose: ``c``, explicit or the only one that fits."""
        how = "explicit" if self._explicit() else "only"
        if choose_path:  # run now; also on the other CPU path if the run was mid-length
            decision, out = self._trial([c], {c.impl: 0.0}, call.dynamic, budget, call)
            return decision._replace(how=how), out
        self._store(call.key, c, call.dynamic, call.concrete)
        return KernelPlan(c.impl, c.chunks, c.peak, budget, how, {}, c.path), None

    def _choose(self, fitted: list[Candidate], call: _Call, budget, text: str | None):
        """AUTO's pick: timed on the arguments, else on stand-ins, else predicted."""
        predicted = {
            c.impl: (
                timing.calibrated(self._cache, c.predicted, call.device, c.impl)
                if c.predicted
                else math.inf
            )
            for c in fitted
        }
        if call.concrete:
            decision, out = self._trial(fitted, predicted, call.dynamic, budget, call)
            self._record_auto(text, decision, call.device)
            return decision, out
        stand_ins = timing.stand_ins(call.dynamic)
        if stand_ins is not None:
            try:  # nothing kept for the call: the executables ran on stand-ins
                decision, _ = self._trial(fitted, predicted, stand_ins, budget, call, keep=False)
                self._record_auto(text, decision, call.device)
                return decision._replace(how="stand-in"), None
            except Exception as e:  # noqa: BLE001 - timing is an optimisation, never an error
                logger.debug("AUTO: timing on stand-in arrays failed (%r); predicting.", e)
        impl = min(predicted, key=predicted.get)
        c = next(c for c in fitted if c.impl == impl)
        seconds = {i.name: t for i, t in predicted.items()}
        return KernelPlan(impl, c.chunks, c.peak, budget, "estimate", seconds), None

    def _trial(self, fitted, predicted, dynamic, budget, call: _Call, keep: bool = True):
        """The fastest of ``fitted`` run on ``dynamic`` (``_trials``); its executable kept."""
        best, seconds = trials.fastest(
            fitted, predicted, dynamic, call.device, self._cache, self._trial_wanted
        )
        c = best.candidate
        self._store(call.key if keep else None, c, dynamic, True)
        return KernelPlan(c.impl, c.chunks, c.peak, budget, "trial", seconds, c.path), best.out

    def _trial_wanted(self) -> bool:
        """Whether a program is timed on the other CPU path (AUTO, or asked for)."""
        return not self._explicit() or cpu_path.trial_wanted()

    # -- AUTO's records ---------------------------------------------------------------------

    def _recorded_auto(self, call: _Call, info: ProblemInfo, budget):
        """``(text, decision)``: AUTO's choice as an earlier process measured it.

        ``text`` keys AUTO's record (the first candidate's unchunked program);
        ``decision`` is None where there is no record, or where the recorded
        implementation no longer fits the budget cut as it was (then AUTO times
        its candidates again).
        """
        try:
            text = records.program_text(self._program(CANDIDATES[0], Chunks()).lower(*call.args))
        except Exception as e:  # noqa: BLE001 - the candidates' own errors come later
            logger.debug("AUTO: no record key (%r).", e)
            return None, None
        record = records.get("auto", text, call.device)
        if record is None:
            return text, None
        try:
            impl = NtkImplementation[record["implementation"]]
            c = self._fit(impl, call, info, budget)
        except Exception as e:  # noqa: BLE001 - a stale record or a smaller budget: time anew
            logger.debug("AUTO: the recorded choice %s does not fit now (%r).", record, e)
            return text, None
        if asdict(c.chunks) != record.get("chunks"):
            return text, None
        self._store(call.key, c, call.dynamic, call.concrete)
        seconds = {str(k): float(v) for k, v in record.get("seconds", {}).items()}
        return text, KernelPlan(impl, c.chunks, c.peak, budget, "recorded", seconds, c.path)

    @staticmethod
    def _record_auto(text: str | None, d: KernelPlan, device: Any) -> None:
        record = {"implementation": d.implementation.name, "chunks": asdict(d.chunks)}
        records.put("auto", text, device, {**record, "seconds": d.seconds})
