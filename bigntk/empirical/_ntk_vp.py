"""NTK_VECTOR_PRODUCTS: the NTK as ``v ↦ J1 J2ᵀ v`` applied to a basis of outputs.

Never materialises a Jacobian: for each output leaf it runs one forward
linearisation of ``f(x1)``, one VJP of ``f(x2)``, and maps them over the
standard basis of that leaf of ``f(x2)`` (``|out₂|`` VJP + JVP pairs; with
``vmap_axes``, per pair of examples). Traced and diagonal axes are taken after
the products, so they save no compute.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from bigntk.empirical._axes import Out, contract
from bigntk.empirical._kwargs import split_kwargs
from bigntk.empirical._problem import Problem
from bigntk.empirical._trees import SplitParams


def _block(f1: Callable, f2: Callable, diff: list, basis_chunk: int | None) -> jnp.ndarray:
    """``(J1 J2ᵀ)`` of two array-valued functions, shape ``(*shape2, *shape1)``.

    ``basis_chunk``: basis vectors per batch (None: all at once).
    """
    _, jvp1 = jax.linearize(f1, diff)
    fx2, vjp2 = jax.vjp(f2, diff)
    n = fx2.size
    if basis_chunk is None or basis_chunk >= n:
        basis = jnp.eye(n, dtype=fx2.dtype).reshape(n, *fx2.shape)
        cols = jax.vmap(lambda ct: jvp1(vjp2(ct)[0]))(basis)
    else:

        def column(i):
            ct = (jnp.arange(n) == i).astype(fx2.dtype).reshape(fx2.shape)
            return jvp1(vjp2(ct)[0])

        cols = jax.lax.map(column, jnp.arange(n), batch_size=basis_chunk)
    return cols.reshape(fx2.shape + cols.shape[1:])


def _leaf_ntk(pb: Problem, o: int, basis_chunk: int | None) -> jnp.ndarray:
    """The NTK of output leaf ``o``."""
    diff = pb.params.diff
    spec = pb.specs[o]
    n = spec.ndim

    def leaf(g: Callable) -> Callable:
        return lambda d: g(d)[o]

    if pb.vmap is None:
        block = _block(
            leaf(lambda d: pb.call(d, pb.x1, pb.kw1)),
            leaf(lambda d: pb.call(d, pb.x2, pb.kw2)),
            diff,
            basis_chunk,
        )
        labels = [Out(k, 2) for k in range(n)] + [Out(k, 1) for k in range(n)]
        return contract([(block, labels)], spec, pb.ntk_dtypes[o])

    b = pb.out_axes[o]
    rest = [k for k in range(n) if k != b]
    tail = [Out(k, 2) for k in rest] + [Out(k, 1) for k in rest]

    def pair(g1: Callable, g2: Callable) -> jnp.ndarray:
        return _block(leaf(g1), leaf(g2), diff, basis_chunk)

    side1, side2 = pb.sides()
    if b in spec.trace or b in spec.diagonal:  # only pairs (i, i) are needed
        block = pb.map_examples([side1, side2], pair)
        labels = [Out(b, 0)] + tail
    else:
        block = pb.map_examples(
            [side1], lambda g1: pb.map_examples([side2], lambda g2: pair(g1, g2))
        )
        labels = [Out(b, 1), Out(b, 2)] + tail
    return contract([(block, labels)], spec, pb.ntk_dtypes[o])


def ntk_vector_products(pb: Problem, basis_chunk: int | None = None) -> list:
    """One NTK per output leaf, each of shape ``spec.result_shape``.

    ``basis_chunk`` bounds the output basis vectors processed at once (memory).
    """
    return [_leaf_ntk(pb, o, basis_chunk) for o in range(len(pb.specs))]


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
