"""What a structure rule sees (:class:`Site`) and returns, and helpers shared by rules.

A rule sees one :class:`Site` (an equation, and which input is the parameter
tangent ``w``) and returns

* a :class:`Factor`: ``∂y/∂w`` in structured form; ``df/dy`` is then taken at
  the equation's output;
* :data:`PULLBACK`: the equation only moves or selects entries and its output
  is at least as large as ``w``, so ``df/dy`` is pulled back through it to
  ``df/dw`` (its exact transpose), never larger than ``df/dy`` itself;
* ``None``: no rule applies; the caller falls back to a dense rule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

from bigntk.empirical._structured_derivatives._factor import Factor


@dataclasses.dataclass(frozen=True)
class Site:
    """An equation seen from one of its inputs, the parameter tangent ``w``.

    Attributes:
        name: the primitive's name.
        params: the equation's parameters.
        shapes: the shape of every input.
        values: every input's value if constant, None for tangents.
        pos: which input is ``w``.
        y_shape: the shape of the (single) output.
    """

    name: str
    params: dict
    shapes: tuple[tuple[int, ...], ...]
    values: tuple[Any, ...]
    pos: int
    y_shape: tuple[int, ...]

    @property
    def w_shape(self) -> tuple[int, ...]:
        return self.shapes[self.pos]

    def other(self, pos: int) -> Any:
        """The constant input at ``pos`` as an array, or None if it is a tangent."""
        v = self.values[pos]
        return None if v is None else jnp.asarray(v)


class Pullback:
    """The type of :data:`PULLBACK`."""

    def __repr__(self) -> str:
        return "PULLBACK"


PULLBACK = Pullback()

Rule = Callable[[Site], "Factor | Pullback | None"]


def elementwise(site: Site, scale: Any = None) -> Factor | None:
    """``y = scale * broadcast(w)``; ``w`` and ``scale`` of rank 0 or ``y``'s rank."""
    ys, ws = site.y_shape, site.w_shape
    n = len(ys)
    y = list(range(n))
    fresh = iter(range(n, 3 * n + 1))
    if len(ws) == 0:
        w: list[int] = []
    elif len(ws) == n and all(a in (b, 1) for a, b in zip(ws, ys, strict=True)):
        w = [k if ws[k] == ys[k] else next(fresh) for k in range(n)]
    else:
        return None
    arrays = []
    if scale is not None:
        scale = jnp.asarray(scale)
        if scale.ndim == 0:
            arrays.append((scale, ()))
        elif scale.ndim == n and all(a in (b, 1) for a, b in zip(scale.shape, ys, strict=True)):
            keep = [k for k in range(n) if scale.shape[k] == ys[k]]
            drop = tuple(k for k in range(n) if k not in keep)
            arrays.append((jnp.squeeze(scale, drop), [y[k] for k in keep]))
        else:
            return None
    return Factor.make(arrays, y, w, ys, ws)


def axis_matrix(n_y: int, n_w: int, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Any:
    """The ``(n_y, n_w)`` matrix ``fn(i, j)`` for output index ``i``, input index ``j``."""
    i, j = np.meshgrid(np.arange(n_y), np.arange(n_w), indexing="ij")
    return np.asarray(fn(i, j), np.float32)


def per_axis(site: Site, matrices: dict[int, Any]) -> Factor:
    """``y`` and ``w`` of equal rank, each axis either identity or its own matrix."""
    ys, ws = site.y_shape, site.w_shape
    n = len(ys)
    w = [n + k if k in matrices else k for k in range(n)]
    arrays = [(jnp.asarray(m), (k, n + k)) for k, m in matrices.items()]
    return Factor.make(arrays, range(n), w, ys, ws)
