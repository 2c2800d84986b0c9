"""Pytree plumbing: which parameter leaves are differentiated, which arguments are traced."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_ARRAY_TYPES = (jax.Array, np.ndarray, np.generic)


def is_array(leaf: Any) -> bool:
    """True for JAX/NumPy arrays and NumPy scalars."""
    return isinstance(leaf, _ARRAY_TYPES)


def is_tracer(leaf: Any) -> bool:
    """True for a value being traced (under ``jax.jit``, ``jax.vmap``, ...)."""
    return isinstance(leaf, jax.core.Tracer)


def has_tracer(tree: Any) -> bool:
    """True if any leaf of ``tree`` is being traced."""
    return any(map(is_tracer, jax.tree.leaves(tree)))


def _is_inexact(leaf: Any) -> bool:
    if isinstance(leaf, float | complex):
        return True
    return is_array(leaf) and jnp.issubdtype(leaf.dtype, jnp.inexact)


class SplitParams:
    """Parameters split into differentiated leaves and everything else.

    Only floating (and complex) array leaves, and Python floats, are
    differentiated; integer arrays, booleans, functions and other static leaves
    are held constant, so e.g. an equinox module can be passed as ``params``.
    """

    def __init__(self, params: Any):
        leaves, self.treedef = jax.tree.flatten(params)
        self.positions = [i for i, leaf in enumerate(leaves) if _is_inexact(leaf)]
        self.diff = [jnp.asarray(leaves[i]) for i in self.positions]
        self._leaves = leaves

    def rebuild(self, diff: list) -> Any:
        """The parameter pytree with its differentiated leaves replaced by ``diff``."""
        leaves = list(self._leaves)
        for i, leaf in zip(self.positions, diff, strict=True):
            leaves[i] = leaf
        return jax.tree.unflatten(self.treedef, leaves)

    @property
    def dtype(self):
        """Promoted dtype of the differentiated leaves (None if there are none)."""
        return jnp.result_type(*self.diff) if self.diff else None


def map_prefix(fn: Callable[[Any, Any], Any], axes: Any, tree: Any) -> Any:
    """Apply ``fn(leaf, axis)`` to every leaf of ``tree``, ``axes`` being a prefix of it."""
    return jax.tree.map(
        lambda ax, sub: jax.tree.map(lambda leaf: fn(leaf, ax), sub),
        axes,
        tree,
        is_leaf=lambda a: a is None,
    )


class _Axis:
    """An axis (or None) held as a pytree leaf, so that None is not read as an empty subtree."""

    def __init__(self, axis: Any):
        self.axis = axis


def prefix_axes(axes: Any, tree: Any) -> list:
    """The axis ``axes`` (a prefix of ``tree``) gives each leaf of ``tree``, in flattening order.

    None in ``axes`` means "no axis" for the leaves below it; None in ``tree`` is an
    empty subtree (no leaf), as in ``jax.vmap``.
    """
    return [m.axis for m in jax.tree.leaves(map_prefix(lambda leaf, ax: _Axis(ax), axes, tree))]


def partition(tree: Any, traced: Callable[[Any], bool]) -> tuple[list, tuple]:
    """Split ``tree`` into traced leaves and a hashable description of the rest."""
    leaves, treedef = jax.tree.flatten(tree)
    dynamic = [leaf for leaf in leaves if traced(leaf)]
    static = tuple(None if traced(leaf) else ("static", leaf) for leaf in leaves)
    return dynamic, (treedef, static)


def combine(dynamic: list, static: tuple) -> Any:
    """Inverse of :func:`partition`."""
    treedef, static_leaves = static
    it = iter(dynamic)
    leaves = [next(it) if s is None else s[1] for s in static_leaves]
    return jax.tree.unflatten(treedef, leaves)
