"""Linearisation and Taylor expansion of ``f(params, *args, **kwargs)`` in ``params``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax

from bigntk.empirical import SplitParams


def _expansion(f: Callable, params: Any, degree: int) -> Callable:
    """``f_tayl(p, *args, **kw) = Σ_{k ≤ degree} D^k f[params](p − params)^k / k!``."""
    base = SplitParams(params)

    def f_tayl(p: Any, *args, **kwargs) -> Any:
        new = SplitParams(p)
        if new.treedef != base.treedef or len(new.diff) != len(base.diff):
            raise ValueError(
                "The parameters passed to the expansion must have the structure of the "
                f"parameters it was built at: expected {base.treedef}, got {new.treedef}."
            )
        delta = [a - b for a, b in zip(new.diff, base.diff, strict=True)]

        def g(d: list) -> Any:
            return f(base.rebuild(d), *args, **kwargs)

        # orders(d) = (D^0 g[d](Δ), ..., D^k g[d](Δ^k)), by nested JVPs.
        def orders_up_to(k: int) -> Callable:
            if k == 0:
                return lambda d: (g(d),)
            lower = orders_up_to(k - 1)

            def orders(d):
                primal, tangent = jax.jvp(lower, (d,), (delta,))
                return primal + (tangent[-1],)

            return orders

        terms = orders_up_to(degree)(base.diff)
        total = terms[0]
        for k, term in enumerate(terms[1:], start=1):
            total = jax.tree.map(lambda a, b, k=k: a + b / math.factorial(k), total, term)
        return total

    return f_tayl


def linearize(f: Callable, params: Any) -> Callable:
    """First-order Taylor expansion of ``f`` around ``params``.

    Args:
        f: called as ``f(params, *args, **kwargs)``.
        params: the point to expand around (any pytree; floating leaves count).

    Returns:
        ``f_lin(p, *args, **kwargs) = f(params, ...) + J(params)·(p − params)``,
        with the outputs of ``f``.

    Example:
        >>> import jax.numpy as jnp, bigntk as nt
        >>> f_lin = nt.linearize(lambda p, x: jnp.sin(p * x), 0.0)
        >>> float(f_lin(0.1, 2.0))  # sin(0) + cos(0) * 2 * 0.1
        0.2
    """
    return _expansion(f, params, 1)


def taylor_expand(f: Callable, params: Any, degree: int) -> Callable:
    """Taylor expansion of ``f`` in its parameters, up to ``degree``.

    Args:
        f: called as ``f(params, *args, **kwargs)``.
        params: the point to expand around.
        degree: the highest order kept (0 gives ``f(params, ...)``).

    Returns:
        ``f_tayl(p, *args, **kwargs) = Σ_{k ≤ degree} D^k f[params](p − params)^k / k!``.
        Computed with nested JVPs: cost grows as ``2**degree`` forward passes.
    """
    if not isinstance(degree, int) or isinstance(degree, bool) or degree < 0:
        raise ValueError(f"degree must be a non-negative int, got {degree!r} instead.")
    return _expansion(f, params, degree)
