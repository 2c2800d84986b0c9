"""Structure rules of elementwise and data-movement primitives.

Primitives that only move or select entries and shrink their input (``slice``,
``dynamic_slice``, ``reduce_window_sum``, ``cumsum``) use one small selection
matrix per axis, since their Jacobian is a product over axes; those that keep
or grow it (``concatenate``, ``pad``, ``rev``) pull ``df/dy`` back instead.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from bigntk.empirical._structured_derivatives._factor import Factor
from bigntk.empirical._structured_derivatives._site import (
    PULLBACK,
    Pullback,
    Rule,
    Site,
    axis_matrix,
    elementwise,
    per_axis,
)


def _identity(site: Site) -> Factor | None:
    return elementwise(site)


def _neg(site: Site) -> Factor | None:
    return elementwise(site, -1.0)


def _sub(site: Site) -> Factor | None:
    return elementwise(site, -1.0 if site.pos == 1 else None)


def _mul(site: Site) -> Factor | None:
    other = site.other(1 - site.pos)
    return None if other is None else elementwise(site, other)


def _div(site: Site) -> Factor | None:
    other = site.other(1)
    return None if site.pos != 0 or other is None else elementwise(site, 1 / other)


def _select_n(site: Site) -> Factor | None:
    pred = site.other(0)
    if site.pos == 0 or pred is None:
        return None
    mask = (pred.astype(jnp.int32) == site.pos - 1).astype(jnp.float32)
    return elementwise(site, mask)


def _broadcast_in_dim(site: Site) -> Factor | None:
    if site.pos != 0:
        return None
    ys, ws = site.y_shape, site.w_shape
    dims = site.params["broadcast_dimensions"]
    fresh = iter(range(len(ys), len(ys) + len(ws)))
    w = [d if ws[i] == ys[d] else next(fresh) for i, d in enumerate(dims)]
    return Factor.make([], range(len(ys)), w, ys, ws)


def _reshape(site: Site) -> Factor | Pullback | None:
    """Relabel when only size-1 axes are added or removed, else pull back."""
    if site.pos != 0:
        return None
    ys, ws = site.y_shape, site.w_shape
    if site.params.get("dimensions") is not None or [d for d in ys if d != 1] != [
        d for d in ws if d != 1
    ]:
        return PULLBACK
    y = list(range(len(ys)))
    big = iter(k for k in y if ys[k] != 1)
    fresh = iter(range(len(ys), len(ys) + len(ws)))
    w = [next(big) if d != 1 else next(fresh) for d in ws]
    return Factor.make([], y, w, ys, ws)


def _transpose(site: Site) -> Factor:
    perm = site.params["permutation"]
    w = [0] * len(perm)
    for i, p in enumerate(perm):
        w[p] = i
    return Factor.make([], range(len(perm)), w, site.y_shape, site.w_shape)


def _reduce_sum(site: Site) -> Factor:
    ws = site.w_shape
    axes = set(site.params["axes"])
    kept = iter(range(len(site.y_shape)))
    w = [len(ws) + k if k in axes else next(kept) for k in range(len(ws))]
    return Factor.make([], range(len(site.y_shape)), w, site.y_shape, ws)


def _pullback(site: Site) -> Pullback:
    return PULLBACK


def _slice(site: Site) -> Factor:
    ws = site.w_shape
    starts = site.params["start_indices"]
    strides = site.params["strides"] or (1,) * len(ws)
    mats = {}
    for k, (s, st) in enumerate(zip(starts, strides, strict=True)):
        if not (s == 0 and st == 1 and site.y_shape[k] == ws[k]):
            mats[k] = axis_matrix(site.y_shape[k], ws[k], lambda i, j, s=s, st=st: j == s + i * st)
    return per_axis(site, mats)


def _dynamic_slice(site: Site) -> Factor | None:
    if site.pos != 0:
        return None
    ws, ys = site.w_shape, site.y_shape
    mats = {}
    for k in range(len(ws)):
        if ys[k] == ws[k]:
            continue
        start = site.other(1 + k)
        if start is None:
            return None
        start = jnp.clip(start, 0, ws[k] - ys[k])
        mats[k] = (jnp.arange(ws[k])[None, :] == start + jnp.arange(ys[k])[:, None]).astype(
            jnp.float32
        )
    return per_axis(site, mats)


def _dynamic_update_slice(site: Site) -> Factor | Pullback | None:
    if site.pos == 1:
        return PULLBACK
    update, starts = site.shapes[1], [site.other(k) for k in range(2, len(site.values))]
    if site.pos != 0 or any(s is None for s in starts):
        return None
    mask = lax.dynamic_update_slice(
        jnp.ones(site.y_shape, jnp.float32), jnp.zeros(update, jnp.float32), starts
    )
    return elementwise(site, mask)


def _cumsum(site: Site) -> Factor:
    a = site.params["axis"]
    n = site.y_shape[a]
    if site.params.get("reverse", False):
        return per_axis(site, {a: axis_matrix(n, n, lambda i, j: j >= i)})
    return per_axis(site, {a: axis_matrix(n, n, lambda i, j: j <= i)})


def _reduce_window_sum(site: Site) -> Factor | None:
    p = site.params
    ws, ys = site.w_shape, site.y_shape
    mats = {}
    for k in range(len(ws)):
        win, stride = p["window_dimensions"][k], p["window_strides"][k]
        (lo, hi), bdil, wdil = p["padding"][k], p["base_dilation"][k], p["window_dilation"][k]
        if (win, stride, lo, hi, bdil, wdil) == (1, 1, 0, 0, 1, 1):
            continue
        m = np.zeros((ys[k], ws[k]), np.float32)
        for i in range(ys[k]):
            for t in range(win):
                pos = i * stride + t * wdil - lo  # position in the dilated input
                if pos >= 0 and pos % bdil == 0 and pos // bdil < ws[k]:
                    m[i, pos // bdil] += 1
        mats[k] = m
    return per_axis(site, mats)


SIMPLE_RULES: dict[str, Rule] = {
    "convert_element_type": _identity,
    "copy": _identity,
    "copy_p": _identity,
    "add": _identity,
    "add_any": _identity,
    "neg": _neg,
    "sub": _sub,
    "mul": _mul,
    "div": _div,
    "select_n": _select_n,
    "broadcast_in_dim": _broadcast_in_dim,
    "reshape": _reshape,
    "squeeze": _reshape,
    "expand_dims": _reshape,
    "transpose": _transpose,
    "reduce_sum": _reduce_sum,
    "concatenate": _pullback,
    "pad": _pullback,
    "rev": _pullback,
    "tile": _pullback,
    "slice": _slice,
    "dynamic_slice": _dynamic_slice,
    "dynamic_update_slice": _dynamic_update_slice,
    "cumsum": _cumsum,
    "reduce_window_sum": _reduce_window_sum,
}
