"""Keyword arguments of ``f``: splitting between the x1 and x2 calls, and ``rng``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def _inputs_equal(x1: Any, x2: Any):
    """A (possibly traced) boolean: do the two input pytrees hold the same values?"""
    l1, t1 = jax.tree.flatten(x1)
    l2, t2 = jax.tree.flatten(x2)
    if t1 != t2 or any(jnp.shape(a) != jnp.shape(b) for a, b in zip(l1, l2, strict=True)):
        return False
    return jnp.all(jnp.array([jnp.array_equal(a, b) for a, b in zip(l1, l2, strict=True)]))


def _second_key(key: Any, x1: Any, x2: Any):
    same = _inputs_equal(x1, x2)
    if same is False:
        return jax.random.fold_in(key, 1)
    return jax.lax.cond(same, lambda: key, lambda: jax.random.fold_in(key, 1))


def split_kwargs(kwargs: dict, x1: Any, x2: Any) -> tuple[dict, dict, bool]:
    """Keyword arguments for the x1 call and the x2 call of ``f``.

    * A 2-tuple value is split: its first element goes to the x1 call, its second
      to the x2 call.
    * A single ``rng`` key goes to the x1 call unchanged; the x2 call gets the same
      key when ``x2`` is None or holds the same values as ``x1``, and
      ``fold_in(rng, 1)`` otherwise. So stochastic kernels (dropout) of ``x`` with
      itself are symmetric, and those of different inputs use independent noise.
    * Any other value goes to both calls.

    Returns:
        ``(kwargs1, kwargs2, split)``, ``split`` telling whether the two calls
        can differ in anything but ``x`` (a 2-tuple was split, or rng differs).
    """
    kw1, kw2 = {}, {}
    split = False
    for name, value in kwargs.items():
        if isinstance(value, tuple) and len(value) == 2:
            kw1[name], kw2[name] = value
            split = True
        elif name == "rng" and value is not None:
            kw1[name] = value
            kw2[name] = value if x2 is None else _second_key(value, x1, x2)
        else:
            kw1[name] = kw2[name] = value
    return kw1, kw2, split
