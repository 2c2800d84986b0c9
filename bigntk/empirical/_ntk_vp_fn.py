"""``empirical_ntk_vp_fn``: the NTK–vector product ``v ↦ Θ(x1, x2) v`` without forming ``Θ``.

One linearisation of ``f`` at x1 (a JVP) after one VJP at x2: the cost of a
forward and a backward pass, whatever the sizes of the outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from bigntk.empirical._kwargs import split_kwargs
from bigntk.empirical._trees import SplitParams


def empirical_ntk_vp_fn(f: Callable, x1: Any, x2: Any, params: Any, **kwargs) -> Callable:
    """The NTK–vector product ``v ↦ Θ(x1, x2) v`` without forming ``Θ``.

    Args:
        f: the function, called as ``f(params, x, **kwargs)``.
        x1: first inputs (any pytree).
        x2: second inputs, or None for ``x2 = x1``.
        params: parameters (any pytree); floating leaves are differentiated.
        **kwargs: passed to both calls of ``f``; 2-tuples are split and ``rng``
            handled as in :func:`empirical_kernel_fn`.

    Returns:
        ``vp(v)``: ``v`` has the structure and shapes of ``f(params, x2)``; the
        result those of ``f(params, x1)``, equal to ``J(x1) J(x2)ᵀ v`` summed over
        all parameters. Not normalised by any trace size.

    Example:
        >>> import jax.numpy as jnp, bigntk as nt
        >>> f = lambda p, x: x @ p
        >>> vp = nt.empirical_ntk_vp_fn(f, jnp.ones((3, 2)), None, jnp.ones((2, 4)))
        >>> vp(jnp.ones((3, 4))).shape
        (3, 4)
    """
    kw1, kw2, _ = split_kwargs(kwargs, x1, x2)
    x2 = x1 if x2 is None else x2
    sp = SplitParams(params)
    _, jvp1 = jax.linearize(lambda d: f(sp.rebuild(d), x1, **kw1), sp.diff)
    _, vjp2 = jax.vjp(lambda d: f(sp.rebuild(d), x2, **kw2), sp.diff)

    def ntk_vp(cotangents: Any) -> Any:
        return jvp1(vjp2(cotangents)[0])

    return ntk_vp
