"""Kernel programs behind ``jax.jit``: array leaves traced, everything else static.

A call's arguments are split into *dynamic* leaves (arrays and Python floats,
which ``jax.jit`` traces) and a hashable *static* rest (functions, ints,
strings, tree structure), so that one compiled program serves every call with
the same shapes and the same static values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import jax

from bigntk.empirical._planning._cpu_path import PathJit
from bigntk.empirical._trees import combine, is_array, is_tracer, partition

logger = logging.getLogger(__name__)


def traced_in_inputs(leaf: Any) -> bool:
    return is_array(leaf) or isinstance(leaf, float | complex)


class Compiled:
    """``_kernels`` behind ``jax.jit``, with non-array arguments held static.

    Falls back to eager execution when a static argument is not hashable.
    """

    def __init__(self, fn: Callable):
        self._fn = fn
        self._jit = PathJit(self._from_parts, static_argnums=(1,))

    def _from_parts(self, dynamic, static):
        kinds, s1, s2, sp, skw = static
        d1, d2, dp, dkw = dynamic
        return self._fn(kinds, combine(d1, s1), combine(d2, s2), combine(dp, sp), combine(dkw, skw))

    def split(self, kinds, x1, x2, params, kwargs) -> tuple[tuple, tuple, bool]:
        """``(dynamic, static, hashable)``: traced leaves, the rest, and whether it hashes."""
        d1, s1 = partition(x1, traced_in_inputs)
        d2, s2 = partition(x2, traced_in_inputs)
        dp, sp = partition(params, traced_in_inputs)
        dkw, skw = partition(kwargs, is_array)
        static = (kinds, s1, s2, sp, skw)
        try:
            hash(static)
        except TypeError:
            return (d1, d2, dp, dkw), static, False
        return (d1, d2, dp, dkw), static, True

    def lower(self, kinds, x1, x2, params, kwargs) -> Any:
        """The program lowered for these arguments (tracers are lowered by shape).

        Compile it with ``_cpu_path.compile_lowered`` for a CPU path.
        """
        dynamic, static, hashable = self.split(kinds, x1, x2, params, kwargs)
        dynamic = jax.tree.map(abstract_if_traced, dynamic)
        if hashable:
            return self._jit.lower(dynamic, static)
        return jax.jit(lambda d: self._from_parts(d, static)).lower(dynamic)

    def __call__(self, kinds, x1, x2, params, kwargs):
        parts = self.split(kinds, x1, x2, params, kwargs)
        return self.call_split(parts, kinds, x1, x2, params, kwargs)

    def call_split(self, parts: tuple, kinds, x1, x2, params, kwargs, path=None):
        """``__call__`` with the arguments already split by :meth:`split` into ``parts``.

        ``path``: the CPU path top-level calls compile for (``_cpu_path``).
        """
        dynamic, static, hashable = parts
        if not hashable:
            logger.debug("Unhashable static argument; computing the kernel without jit.")
            return self._fn(kinds, x1, x2, params, kwargs)
        return self._jit.call(path, dynamic, static)


def abstract_if_traced(leaf: Any) -> Any:
    if is_tracer(leaf):
        a = jax.typeof(leaf)
        return jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type)
    return leaf


def shapes_only(fn: Callable, kinds, x1, x2, params, kwargs) -> Any:
    """``fn(x1, x2, params, kwargs)`` evaluated on the shapes of the traced leaves only."""
    box = []
    parts = Compiled(lambda *a: None)
    dynamic, static, _ = parts.split(kinds, x1, x2, params, kwargs)

    def probe(dyn):
        _, s1, s2, sp, skw = static
        d1, d2, dp, dkw = dyn
        box.append(fn(combine(d1, s1), combine(d2, s2), combine(dp, sp), combine(dkw, skw)))
        return 0

    jax.eval_shape(probe, dynamic)
    return box[0]
