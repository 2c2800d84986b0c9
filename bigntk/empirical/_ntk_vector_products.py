"""NTK_VECTOR_PRODUCTS: the NTK as ``v ↦ J1 J2ᵀ v`` applied to a basis of outputs.

Never materialises a Jacobian. For each output leaf, the side (x1 or x2) with
the smaller output gets the standard basis: one VJP per basis vector gives a
parameter-shaped cotangent, and one JVP of the other side (whole batch) turns
it into a row of the kernel. With ``vmap_axes`` the VJPs are per example, so
``|out_a|`` VJPs and as many batched JVPs in all; when the batch axis is traced
or diagonal, only pairs ``(i, i)`` are formed. Other traced and diagonal axes
are taken after the products, so they save no compute.

The cotangents of a batch of basis vectors are all held at once (one
parameter-sized array each); the basis is mapped in batches that keep them
under :data:`TANGENT_BYTES`, which is also faster than one huge batch on CPUs
(less memory traffic, smaller buffers).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from bigntk.empirical._axes import Out, contract
from bigntk.empirical._problem import Problem

#: Bytes of parameter-shaped cotangents held at once by default.
TANGENT_BYTES = 256 * 2**20


def _block(f_vjp: Callable, f_jvp: Callable, diff: list, basis_chunk: int | None) -> jnp.ndarray:
    """``J_jvp J_vjpᵀ`` of two array-valued functions, shape ``(*out_vjp, *out_jvp)``.

    The standard basis spans ``f_vjp``'s output: one VJP of ``f_vjp`` per basis
    vector, each followed by a JVP of ``f_jvp``. ``basis_chunk``: basis vectors
    per batch (None: all at once).
    """
    fx, vjp = jax.vjp(f_vjp, diff)
    _, jvp = jax.linearize(f_jvp, diff)
    n = fx.size
    if basis_chunk is None or basis_chunk >= n:
        basis = jnp.eye(n, dtype=fx.dtype).reshape(n, *fx.shape)
        cols = jax.vmap(lambda ct: jvp(vjp(ct)[0]))(basis)
    else:

        def column(i):
            ct = (jnp.arange(n) == i).astype(fx.dtype).reshape(fx.shape)
            return jvp(vjp(ct)[0])

        cols = jax.lax.map(column, jnp.arange(n), batch_size=basis_chunk)
    return cols.reshape(fx.shape + cols.shape[1:])


def _default_chunk(diff: list, basis: int, copies: int) -> int | None:
    """Basis vectors per batch keeping ``copies`` cotangents per vector under the budget.

    At least 1 (``lax.map`` computes an uneven tail separately); None: all at once.
    """
    per_vector = copies * sum(leaf.size * leaf.dtype.itemsize for leaf in diff)
    fit = max(1, TANGENT_BYTES // max(per_vector, 1))
    return None if fit >= basis else int(fit)


def _leaf_ntk(pb: Problem, o: int, shapes: list, basis_chunk: int | None) -> jnp.ndarray:
    """The NTK of output leaf ``o`` (shapes ``shapes`` for x1 and x2).

    ``basis_chunk`` None: batches by :data:`TANGENT_BYTES`.
    """
    diff = pb.params.diff
    spec = pb.specs[o]
    n = spec.ndim
    sides = pb.sides()
    a = 1 if pb.same or math.prod(shapes[0]) <= math.prod(shapes[1]) else 2
    b_side = 3 - a
    side_a, side_b = sides[a - 1], sides[b_side - 1]

    def leaf(g: Callable) -> Callable:
        return lambda d: g(d)[o]

    if pb.vmap is None:
        if basis_chunk is None:
            basis_chunk = _default_chunk(diff, math.prod(shapes[a - 1]), 1)
        block = _block(
            leaf(lambda d: pb.call(d, *side_a)),
            leaf(lambda d: pb.call(d, *side_b)),
            diff,
            basis_chunk,
        )
        labels = [Out(k, a) for k in range(n)] + [Out(k, b_side) for k in range(n)]
        return contract([(block, labels)], spec, pb.ntk_dtypes[o])

    b = pb.out_axes[o]
    rest = [k for k in range(n) if k != b]
    examples = shapes[a - 1][b]
    if basis_chunk is None:  # each basis vector is taken for every example of side a
        basis_chunk = _default_chunk(diff, math.prod(shapes[a - 1]) // max(examples, 1), examples)
    tail = [Out(k, a) for k in rest] + [Out(k, b_side) for k in rest]
    if b in spec.trace or b in spec.diagonal:  # only pairs (i, i) are needed

        def pair(g1: Callable, g2: Callable) -> jnp.ndarray:
            ga, gb = (g1, g2) if a == 1 else (g2, g1)
            return _block(leaf(ga), leaf(gb), diff, basis_chunk)

        block = pb.map_examples(list(sides), pair)
        return contract([(block, [Out(b, 0)] + tail)], spec, pb.ntk_dtypes[o])

    def batch_b(d: list) -> jnp.ndarray:  # side b's whole batch, per example inside
        return pb.map_examples([side_b], lambda gb: gb(d)[o])

    # per example of side a: its basis, then one JVP of side b's batch per basis vector
    block = pb.map_examples([side_a], lambda ga: _block(leaf(ga), batch_b, diff, basis_chunk))
    labels = (
        [Out(b, a)] + [Out(k, a) for k in rest] + [Out(b, b_side)] + [Out(k, b_side) for k in rest]
    )
    return contract([(block, labels)], spec, pb.ntk_dtypes[o])


def ntk_vector_products(pb: Problem, basis_chunk: int | None = None) -> list:
    """One NTK per output leaf, each of shape ``spec.result_shape``.

    ``basis_chunk`` bounds the output basis vectors processed at once (memory);
    None: batches that keep the cotangents under :data:`TANGENT_BYTES`.
    """
    per_side = [
        jax.eval_shape(lambda d, x=x, kw=kw: pb.call(d, x, kw), pb.params.diff)
        for x, kw in pb.sides()
    ]
    return [
        _leaf_ntk(pb, o, [per_side[0][o].shape, per_side[1][o].shape], basis_chunk)
        for o in range(len(pb.specs))
    ]
