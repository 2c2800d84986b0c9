"""The one place the structured implementation touches JAX beyond its documented API.

Everything here is public in name (``jax.extend.core``) but not promised to
stay: binding a primitive taken from a jaxpr equation, and recognising the
call-like primitives whose body can be inlined. ``tests/test_structured.py``
checks each of these against the installed JAX, so a move fails loudly there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.extend.core as jex

Literal = jex.Literal
Var = jex.Var
DropVar = jex.DropVar
ClosedJaxpr = jex.ClosedJaxpr
Jaxpr = jex.Jaxpr
Primitive = jex.Primitive

#: Primitives that only call a sub-jaxpr with the same inputs and outputs: inlined.
#: (``jit`` was ``pjit`` before JAX 0.7; ``remat2`` is ``jax.checkpoint``.)
CALL_PRIMITIVES = {
    "jit": ("jaxpr",),
    "pjit": ("jaxpr",),
    "closed_call": ("call_jaxpr",),
    "core_call": ("call_jaxpr",),
    "remat2": ("jaxpr",),
    "checkpoint": ("jaxpr",),
    "custom_jvp_call": ("call_jaxpr",),
    "custom_vjp_call": ("call_jaxpr", "fun_jaxpr"),
    "custom_vjp_call_jaxpr": ("fun_jaxpr",),
}

#: Primitives that can be transposed but never evaluated forward.
TRANSPOSE_ONLY = {"custom_lin"}


def inline_body(eqn: Any) -> tuple[Jaxpr, Sequence[Any]] | None:
    """``(jaxpr, consts)`` of a call-like equation whose body can replace it, else None."""
    for key in CALL_PRIMITIVES.get(eqn.primitive.name, ()):
        body = eqn.params.get(key)
        if isinstance(body, ClosedJaxpr):
            jaxpr, consts = body.jaxpr, body.consts
        elif isinstance(body, Jaxpr):
            jaxpr, consts = body, ()
        else:
            continue
        if len(jaxpr.invars) == len(eqn.invars) and len(jaxpr.outvars) == len(eqn.outvars):
            if len(jaxpr.constvars) != len(consts):
                continue
            return jaxpr, consts
    return None


def bind(primitive: Primitive, params: dict, args: Sequence[Any]) -> list:
    """Apply ``primitive`` to ``args`` as a jaxpr equation with ``params`` would."""
    got = primitive.get_bind_params(params)
    # JAX < 0.7 returned (subfuns, params); newer versions return params only.
    subfuns, bind_params = got if isinstance(got, tuple) else ((), got)
    out = primitive.bind(*subfuns, *args, **bind_params)
    return list(out) if primitive.multiple_results else [out]


def num_residuals(primitive: Primitive, params: dict) -> int:
    """Leading inputs of a transpose-only primitive that are residuals, not tangents."""
    return int(params.get("num_res", 0)) if primitive.name in TRANSPOSE_ONLY else 0
