"""The linearised function as a flat list of equations that depend on the parameters.

``jax.linearize`` gives a jaxpr linear in the parameter tangents. Here it is
flattened: calls (``jit``, ``checkpoint``, ...) are inlined, and every equation
that does not depend on a tangent (residual arithmetic, ``0.0`` broadcasts) is
evaluated on the spot, so what remains are only equations with at least one
tangent input. Their other inputs are :class:`Const` values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bigntk.empirical._structured_derivatives import _compat


@dataclasses.dataclass(frozen=True)
class Const:
    """An input that does not depend on the parameters (a literal or a residual)."""

    value: Any


Atom = int | Const  # a variable id (depends on the parameters) or a constant


@dataclasses.dataclass(frozen=True, eq=False)
class Eqn:
    """One primitive application with at least one parameter-dependent input."""

    primitive: _compat.Primitive
    params: dict
    ins: tuple[Atom, ...]
    outs: tuple[int, ...]

    @property
    def name(self) -> str:
        return self.primitive.name


@dataclasses.dataclass
class Graph:
    """A linear map from parameter tangents to output tangents.

    Attributes:
        eqns: the equations, in evaluation order.
        params: the variable of each parameter leaf's tangent.
        outs: the atom of each output leaf.
        avals: shape and dtype of every variable.
        consumers: for each variable, the ``(equation, input position)`` using it.
    """

    eqns: list[Eqn]
    params: list[int]
    outs: list[Atom]
    avals: dict[int, jax.ShapeDtypeStruct]
    consumers: dict[int, list[tuple[int, int]]]

    def shape(self, atom: Atom) -> tuple[int, ...]:
        return tuple(np.shape(atom.value) if isinstance(atom, Const) else self.avals[atom].shape)

    def size(self, atom: Atom) -> int:
        return int(np.prod(self.shape(atom), dtype=np.int64))


def zeros(aval: Any) -> Any:
    """Zeros of ``aval``'s shape and dtype (NumPy for ``float0``, which JAX cannot create)."""
    if aval.dtype == jax.dtypes.float0:
        return np.zeros(aval.shape, aval.dtype)
    return jnp.zeros(aval.shape, aval.dtype)


def _aval(v: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype)


class _Builder:
    def __init__(self):
        self.eqns: list[Eqn] = []
        self.avals: dict[int, jax.ShapeDtypeStruct] = {}

    def new_var(self, aval: jax.ShapeDtypeStruct) -> int:
        self.avals[len(self.avals)] = aval
        return len(self.avals) - 1

    def inline(self, jaxpr: Any, consts: Sequence[Any], args: Sequence[Atom]) -> list[Atom]:
        env: dict[Any, Atom] = {}
        for v, c in zip(jaxpr.constvars, consts, strict=True):
            env[v] = Const(c)
        for v, a in zip(jaxpr.invars, args, strict=True):
            env[v] = a

        def read(v: Any) -> Atom:
            return Const(v.val) if isinstance(v, _compat.Literal) else env[v]

        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            body = _compat.inline_body(eqn)
            if body is not None:
                outs = self.inline(*body, ins)
            elif not any(isinstance(a, int) for a in ins[_num_res(eqn) :]):
                outs = self._evaluate(eqn, ins)
            else:
                outs = [self.new_var(_aval(v)) for v in eqn.outvars]
                self.eqns.append(Eqn(eqn.primitive, dict(eqn.params), tuple(ins), tuple(outs)))
            for v, a in zip(eqn.outvars, outs, strict=True):
                if not isinstance(v, _compat.DropVar):
                    env[v] = a
        return [read(v) for v in jaxpr.outvars]

    @staticmethod
    def _evaluate(eqn: Any, ins: list[Atom]) -> list[Atom]:
        if eqn.primitive.name in _compat.TRANSPOSE_ONLY:  # a tangent map applied to zeros
            return [Const(zeros(_aval(v))) for v in eqn.outvars]
        values = [a.value for a in ins]
        return [Const(v) for v in _compat.bind(eqn.primitive, eqn.params, values)]


def _num_res(eqn: Any) -> int:
    return _compat.num_residuals(eqn.primitive, eqn.params)


def linear_graph(g: Callable[[list], list], diff: list) -> tuple[list, Graph]:
    """``(outputs, graph)``: ``g(diff)`` and its linearisation in ``diff``."""
    out, lin = jax.linearize(g, diff)
    closed = jax.make_jaxpr(lin)(diff)
    b = _Builder()
    params = [b.new_var(_aval(v)) for v in closed.jaxpr.invars]
    outs = b.inline(closed.jaxpr, closed.consts, params)
    consumers: dict[int, list[tuple[int, int]]] = {v: [] for v in b.avals}
    for k, eqn in enumerate(b.eqns):
        for pos, a in enumerate(eqn.ins):
            if isinstance(a, int):
                consumers[a].append((k, pos))
    return out, Graph(b.eqns, params, outs, b.avals, consumers)


def evaluate(
    graph: Graph,
    at_inputs: dict[tuple[int, int], Any],
    at_outputs: dict[tuple[int, int], Any],
    at_results: dict[int, Any],
) -> list:
    """The graph's outputs with all parameter tangents zero and perturbations added.

    Args:
        at_inputs: ``(equation, position) -> value`` added to that input.
        at_outputs: ``(equation, output) -> value`` added to that output.
        at_results: ``output leaf -> value`` added to that output leaf.

    Returns:
        The output leaves: a linear function of the perturbations.
    """
    env: dict[int, Any] = {}  # absent: zero

    for k, eqn in enumerate(graph.eqns):
        args = []
        for pos, a in enumerate(eqn.ins):
            v = a.value if isinstance(a, Const) else env.get(a)
            extra = at_inputs.get((k, pos))
            if extra is not None:
                v = extra if v is None else v + extra
            args.append(v)
        if any(v is not None for a, v in zip(eqn.ins, args, strict=True) if isinstance(a, int)):
            args = [
                graph_zero(graph, a) if v is None else v for a, v in zip(eqn.ins, args, strict=True)
            ]
            outs = _compat.bind(eqn.primitive, eqn.params, args)
        else:
            outs = [None] * len(eqn.outs)
        for j, (var, v) in enumerate(zip(eqn.outs, outs, strict=True)):
            extra = at_outputs.get((k, j))
            if extra is not None:
                v = extra if v is None else v + extra
            if v is not None:
                env[var] = v

    results = []
    for o, a in enumerate(graph.outs):
        v = env.get(a) if isinstance(a, int) else None
        extra = at_results.get(o)
        if extra is not None:
            v = extra if v is None else v + extra
        results.append(graph_zero(graph, a) if v is None else v)
    return results


def graph_zero(graph: Graph, a: Atom) -> Any:
    """Zeros shaped like atom ``a``."""
    if isinstance(a, Const):
        return jnp.zeros_like(a.value)
    return zeros(graph.avals[a])
