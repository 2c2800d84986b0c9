"""Graph aggregation, ``Aggregate``: each vertex becomes the sum of its predecessors.

The vertices of an input ``(batch, X_1, ..., X_N, channels)`` (subject to
``batch_axis`` and ``channel_axis``) are the positions along its
``aggregate_axis`` (K of the spatial axes); every other axis is processed
independently. The graph of each example comes in the ``pattern`` keyword of
``apply_fn``, in one of two formats (:class:`AggregateImplementation`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from bigntk.errors import LayerArgumentError
from bigntk.stax._layer import KernelFn, Layer
from bigntk.stax._masking import masked

__all__ = ["Aggregate", "AggregateImplementation"]


class AggregateImplementation(enum.Enum):
    """How :func:`Aggregate` represents graphs (and computes the sums).

    Attributes:
        DENSE: ``pattern`` is a (weighted) adjacency tensor of shape
            ``(batch, X_i1, ..., X_iK, X_i1, ..., X_iK)``; sums are matrix
            products. Best for dense graphs.
        SPARSE: ``pattern`` is an integer edge list of shape
            ``(batch, n_edges, K, 2)`` (or ``(batch, n_edges, 2)`` for K = 1),
            ``[..., 0]`` the tails and ``[..., 1]`` the heads; sums are
            :func:`jax.ops.segment_sum`. Best for sparse graphs.
    """

    DENSE = "DENSE"
    SPARSE = "SPARSE"


def Aggregate(
    aggregate_axis: int | Sequence[int] | None = None,
    batch_axis: int = 0,
    channel_axis: int = -1,
    to_dense: Callable[[Any], jax.Array] | None = lambda p: p,
    implementation: str | AggregateImplementation = "DENSE",
) -> Layer:
    """Replace every vertex with the (weighted) sum of its direct predecessors.

    ``apply_fn(params, inputs, pattern=...)``:

    * ``'DENSE'``: ``pattern[n, i_1..i_K, j_1..j_K] = w`` is an arc of weight
      ``w`` from vertex ``i`` to vertex ``j`` of example ``n``; the output at
      ``j`` is ``sum_i w * inputs[n, i]``, i.e. ``inputs @ pattern`` over the
      aggregate axes. ``to_dense(pattern)`` is applied first.
    * ``'SPARSE'``: each edge ``(tail, head)`` adds ``inputs[n, tail]`` to the
      output at ``head``; repeated edges count repeatedly. An edge whose head
      has a negative coordinate is dropped (padding). As in Neural Tangents, a
      negative *tail* coordinate is not dropped but indexes from the end.
    * ``pattern=None`` (the default): the identity.

    In the empirical kernels, pass ``pattern=(pattern1, pattern2)`` for the
    ``x1`` and ``x2`` batches.

    Args:
        aggregate_axis: the vertex axes (spatial axes); ``None`` means all axes
            other than batch and channel.
        batch_axis: batch axis of the inputs.
        channel_axis: channel axis of the inputs.
        to_dense: ``'DENSE'`` only: maps the given ``pattern`` to the dense
            adjacency tensor (default: the identity).
        implementation: ``'DENSE'`` or ``'SPARSE'`` (or an
            :class:`AggregateImplementation`).

    Returns:
        ``(init_fn, apply_fn, kernel_fn)`` with params ``()``; outputs have
        the inputs' shape. ``kernel_fn`` raises
        :class:`~bigntk.errors.UnsupportedLayerError`.
    """
    try:
        implementation = AggregateImplementation(implementation)
    except ValueError:
        raise LayerArgumentError(
            f"expected Aggregate implementation 'DENSE' or 'SPARSE', got "
            f"{implementation!r} instead."
        ) from None
    if to_dense is None:
        to_dense = lambda p: p  # noqa: E731

    def axes(ndim: int) -> tuple[tuple[int, ...], int, int]:
        batch, channel = batch_axis % ndim, channel_axis % ndim
        if aggregate_axis is None:
            agg = tuple(a for a in range(ndim) if a not in (batch, channel))
        else:
            given = (aggregate_axis,) if isinstance(aggregate_axis, int) else aggregate_axis
            agg = tuple(sorted(a % ndim for a in given))
        return agg, batch, channel

    def init_fn(rng: jax.Array, input_shape: Any) -> tuple[Any, tuple[()]]:
        return input_shape, ()

    def dense(inputs: jax.Array, pattern: jax.Array) -> jax.Array:
        agg, batch, channel = axes(inputs.ndim)
        k = len(agg)
        pattern = to_dense(pattern)
        expected = (inputs.shape[batch],) + tuple(inputs.shape[a] for a in agg) * 2
        if tuple(pattern.shape) != expected:
            raise LayerArgumentError(
                f"Aggregate('DENSE') expected a pattern of shape {expected} (batch, "
                f"then the aggregate axes twice), got {tuple(pattern.shape)} instead."
            )
        dims = ((agg, tuple(range(1, k + 1))), ((batch,), (0,)))
        out = lax.dot_general(inputs, pattern.astype(inputs.dtype), dims)
        # out: batch, the inputs' other axes in order, then the K head axes
        rest = [a for a in range(inputs.ndim) if a != batch and a not in agg]
        src = (0, 1 + rest.index(channel)) + tuple(range(-k, 0))
        return jnp.moveaxis(out, src, (batch, channel) + agg)

    def edges(pattern: jax.Array, batch: int, k: int) -> tuple[jax.Array, jax.Array]:
        pattern = jnp.asarray(pattern)
        if pattern.ndim == 3 and k == 1:
            pattern = pattern[:, :, None, :]
        if pattern.ndim != 4 or pattern.shape[0] != batch or pattern.shape[2:] != (k, 2):
            raise LayerArgumentError(
                f"Aggregate('SPARSE') expected an integer pattern of shape ({batch}, "
                f"n_edges, {k}, 2) (or ({batch}, n_edges, 2) for one aggregate axis), "
                f"got {tuple(pattern.shape)} instead."
            )
        return pattern[..., 0], pattern[..., 1]

    def flat_index(coords: jax.Array, agg_shape: tuple[int, ...]) -> jax.Array:
        """``(batch, n_edges, K)`` coordinates -> raveled vertex ids, -1 if any is negative."""
        ids = jnp.ravel_multi_index(tuple(jnp.moveaxis(coords, -1, 0)), agg_shape, mode="wrap")
        return jnp.where(jnp.all(coords >= 0, axis=-1), ids, -1)

    def sparse(inputs: jax.Array, pattern: jax.Array) -> jax.Array:
        agg, batch, channel = axes(inputs.ndim)
        k = len(agg)
        tails, heads = edges(pattern, inputs.shape[batch], k)
        x = jnp.moveaxis(inputs, (batch,) + agg + (channel,), tuple(range(k + 1)) + (-1,))
        moved_shape = x.shape
        agg_shape = moved_shape[1 : k + 1]
        x = x.reshape((x.shape[0], math.prod(agg_shape)) + x.shape[k + 1 :])
        tails, heads = flat_index(tails, agg_shape), flat_index(heads, agg_shape)

        def one(x: jax.Array, tails: jax.Array, heads: jax.Array) -> jax.Array:
            return jax.ops.segment_sum(x[tails], heads, num_segments=x.shape[0])

        out = jax.vmap(one)(x, tails, heads).reshape(moved_shape)
        return jnp.moveaxis(out, tuple(range(k + 1)) + (-1,), (batch,) + agg + (channel,))

    def apply_fn(
        params: Any, inputs: jax.Array, *, pattern: Any = None, **kwargs: Any
    ) -> jax.Array:
        if pattern is None:
            return inputs
        if implementation is AggregateImplementation.DENSE:
            return dense(inputs, pattern)
        return sparse(inputs, pattern)

    return init_fn, masked(apply_fn), KernelFn("Aggregate", None)
