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


def _output(g: Callable, o: int) -> Callable:
    """``d ↦ g(d)[o]``: output leaf ``o`` of a function returning every leaf."""
    return lambda d: g(d)[o]


def _leaf_ntk(pb: Problem, o: int, shapes: list, basis_chunk: int | None) -> jnp.ndarray:
    """The NTK of output leaf ``o`` (shapes ``shapes`` for x1 and x2).

    The basis spans side ``a``: the side with the smaller output (x1 when they
    are the same). ``basis_chunk`` None: batches by :data:`TANGENT_BYTES`.
    """
    a = 1 if pb.same or math.prod(shapes[0]) <= math.prod(shapes[1]) else 2
    if pb.vmap is None:
        return _whole_batches(pb, o, shapes, a, basis_chunk)
    b = pb.out_axes[o]
    examples = shapes[a - 1][b]
    if basis_chunk is None:  # each basis vector is taken for every example of side a
        per_example = math.prod(shapes[a - 1]) // max(examples, 1)
        basis_chunk = _default_chunk(pb.params.diff, per_example, examples)
    if b in pb.specs[o].trace or b in pb.specs[o].diagonal:
        return _example_pairs(pb, o, a, basis_chunk)
    return _all_examples(pb, o, a, basis_chunk)


def _whole_batches(pb: Problem, o: int, shapes: list, a: int, basis_chunk: int | None):
    """Without ``vmap_axes``: the basis of side ``a``'s whole output, one JVP of side b each."""
    diff = pb.params.diff
    n = pb.specs[o].ndim
    b_side = 3 - a
    side_a, side_b = pb.sides()[a - 1], pb.sides()[b_side - 1]
    if basis_chunk is None:
        basis_chunk = _default_chunk(diff, math.prod(shapes[a - 1]), 1)
    block = _block(
        _output(lambda d: pb.call(d, *side_a), o),
        _output(lambda d: pb.call(d, *side_b), o),
        diff,
        basis_chunk,
    )
    labels = [Out(k, a) for k in range(n)] + [Out(k, b_side) for k in range(n)]
    return contract([(block, labels)], pb.specs[o], pb.ntk_dtypes[o])


def _example_pairs(pb: Problem, o: int, a: int, basis_chunk: int | None) -> jnp.ndarray:
    """Batch axis traced or diagonal: only the pairs ``(i, i)`` of examples are formed."""
    spec, b = pb.specs[o], pb.out_axes[o]
    rest = [k for k in range(spec.ndim) if k != b]
    tail = [Out(k, a) for k in rest] + [Out(k, 3 - a) for k in rest]

    def pair(g1: Callable, g2: Callable) -> jnp.ndarray:
        ga, gb = (g1, g2) if a == 1 else (g2, g1)
        return _block(_output(ga, o), _output(gb, o), pb.params.diff, basis_chunk)

    block = pb.map_examples(list(pb.sides()), pair)
    return contract([(block, [Out(b, 0)] + tail)], spec, pb.ntk_dtypes[o])


def _all_examples(pb: Problem, o: int, a: int, basis_chunk: int | None) -> jnp.ndarray:
    """Batch axis kept: per example of side ``a``, its basis, then one JVP of side b's batch
    per basis vector."""
    spec, b = pb.specs[o], pb.out_axes[o]
    b_side = 3 - a
    side_a, side_b = pb.sides()[a - 1], pb.sides()[b_side - 1]
    rest = [k for k in range(spec.ndim) if k != b]

    def batch_b(d: list) -> jnp.ndarray:  # side b's whole batch, per example inside
        return pb.map_examples([side_b], lambda gb: gb(d)[o])

    block = pb.map_examples(
        [side_a], lambda ga: _block(_output(ga, o), batch_b, pb.params.diff, basis_chunk)
    )
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
