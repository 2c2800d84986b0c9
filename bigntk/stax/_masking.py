"""Masked inputs, as Neural Tangents' ``stax`` handles them (e.g. padded sequences).

``apply_fn(params, x, mask_constant=c)`` treats the entries of ``x`` equal to
``c`` (``nan`` allowed) as masked; it may also be given a :class:`MaskedArray`.
Each layer then

1. zeroes its masked inputs,
2. computes its outputs (attention, global average pooling and ``LayerNorm``
   leave masked entries out; other layers just see zeros),
3. returns a :class:`MaskedArray` whose ``mask`` says which outputs only come
   from masked inputs (its ``mask_fn``; masks may keep size-1 axes, e.g. the
   channel axis, that broadcast against the outputs).

:func:`unmask_fn` turns the final :class:`MaskedArray` into an array with
masked entries set to zero, e.g. for ``bigntk.empirical_kernel_fn``.
Combinators (``serial``, ``parallel``, ``repeat``, ``FanOut``) pass
``mask_constant`` and masked arrays through unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from bigntk.errors import LayerArgumentError, UnsupportedLayerError

__all__ = [
    "MaskedArray",
    "concat_masks",
    "masked",
    "pool_mask",
    "supports_masking",
    "unmask_fn",
]

MaskFn = Callable[[Any, Any], Any]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MaskedArray:
    """An array (or pytree) with a boolean mask (``True`` = masked), a pytree itself.

    Attributes:
        masked_value: the values; masked entries are zero.
        mask: booleans broadcastable to ``masked_value`` (same pytree structure).
    """

    masked_value: Any
    mask: Any


def _is_masked(x: Any) -> bool:
    return isinstance(x, MaskedArray)


def _split(x: Any, mask_constant: Any) -> MaskedArray:
    """``x`` with masked entries zeroed, and its mask (``None``: nothing masked)."""
    if isinstance(x, MaskedArray):
        value, mask = x.masked_value, x.mask
    elif mask_constant is None or x is None:
        return MaskedArray(x, None)
    else:
        value = x
        c = jnp.asarray(mask_constant)
        mask = jnp.where(jnp.isnan(c), jnp.isnan(value), value == c)
    if mask is None:
        return MaskedArray(value, None)
    return MaskedArray(jnp.where(mask, jnp.zeros((), jnp.result_type(value)), value), mask)


def _shapes(inputs: Any) -> Any:
    if isinstance(inputs, list | tuple):
        return [jnp.shape(x) for x in inputs]
    return jnp.shape(inputs)


def masked(apply_fn: Callable[..., Any], mask_fn: MaskFn | None = None) -> Callable[..., Any]:
    """``apply_fn(params, inputs, mask=...)`` -> one taking ``mask_constant`` / masked arrays.

    Args:
        apply_fn: the layer's function; it is called with the masked inputs
            zeroed and ``mask=`` their masks (``None`` when nothing is masked).
        mask_fn: ``mask_fn(mask, input_shape)``, the outputs' mask; ``None``
            means the outputs' mask is the inputs'.

    Returns:
        ``apply_fn(params, inputs, *, mask_constant=None, **kwargs)``, returning
        a :class:`MaskedArray` when any input is masked, else a plain output.
    """

    def apply_with_masking(
        params: Any, inputs: Any, *, mask_constant: Any = None, **kwargs: Any
    ) -> Any:
        has_masked = any(_is_masked(x) for x in jax.tree.leaves(inputs, is_leaf=_is_masked))
        if mask_constant is None and not has_masked:
            return apply_fn(params, inputs, mask=None, **kwargs)
        pairs = jax.tree.map(lambda x: _split(x, mask_constant), inputs, is_leaf=_is_masked)
        values = jax.tree.map(lambda p: p.masked_value, pairs, is_leaf=_is_masked)
        masks = jax.tree.map(lambda p: p.mask, pairs, is_leaf=_is_masked)
        outputs = apply_fn(params, values, mask=masks, **kwargs)
        if masks is None:
            return outputs
        out_mask = masks if mask_fn is None else mask_fn(masks, _shapes(values))
        return outputs if out_mask is None else MaskedArray(outputs, out_mask)

    return apply_with_masking


def supports_masking(remask_kernel: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a layer factory so that its ``apply_fn`` supports masking (as NT's).

    The factory returns ``(init_fn, apply_fn, kernel_fn)`` or ``(init_fn,
    apply_fn, kernel_fn, mask_fn)``, where ``apply_fn`` takes a ``mask=``
    keyword; the decorated factory returns ``(init_fn, apply_fn', kernel_fn)``
    with ``apply_fn'`` taking ``mask_constant=`` and :class:`MaskedArray`
    inputs (see the module docstring).

    Args:
        remask_kernel: accepted for Neural Tangents compatibility; it concerns
            masked closed-form kernels, which bigntk does not compute.

    Returns:
        The decorator.
    """
    del remask_kernel

    def decorate(layer_fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(layer_fn)
        def layer_with_masking(*args: Any, **kwargs: Any) -> Any:
            fns = tuple(layer_fn(*args, **kwargs))
            if len(fns) not in (3, 4):
                raise LayerArgumentError(
                    f"supports_masking expected {layer_fn.__name__} to return (init_fn, "
                    f"apply_fn, kernel_fn) or (..., mask_fn), got {len(fns)} items instead."
                )
            mask_fn = fns[3] if len(fns) == 4 else None
            return fns[0], masked(fns[1], mask_fn), fns[2]

        return layer_with_masking

    return decorate


def unmask_fn(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Make ``fn``'s :class:`MaskedArray` outputs plain arrays with masked entries zeroed.

    Args:
        fn: e.g. an ``apply_fn`` called with ``mask_constant``.

    Returns:
        A function with ``fn``'s signature returning arrays.
    """

    def unmask(x: Any) -> Any:
        if isinstance(x, MaskedArray):
            return jnp.where(x.mask, jnp.zeros((), jnp.result_type(x.masked_value)), x.masked_value)
        return x

    @functools.wraps(fn)
    def fn_no_mask(*args: Any, **kwargs: Any) -> Any:
        return jax.tree.map(unmask, fn(*args, **kwargs), is_leaf=_is_masked)

    return fn_no_mask


def all_masked(axis: int | Sequence[int]) -> MaskFn:
    """A ``mask_fn`` reducing the mask with ``all`` over ``axis`` (dimensions kept)."""

    def mask_fn(mask: jax.Array, input_shape: Any) -> jax.Array:
        return jnp.all(mask, axis=axis, keepdims=True)

    return mask_fn


def check_channel_mask(layer: str, mask: jax.Array, channel_axis: int) -> None:
    """Pooling needs one mask for all channels (a size-1 channel axis)."""
    if mask.shape[channel_axis] != 1:
        raise UnsupportedLayerError(
            f"{layer} expected the same mask for every channel (mask of size 1 on the "
            f"channel axis), got a mask of shape {mask.shape} instead; mask whole "
            f"positions (all channels) or put a Dense/Conv layer first."
        )


def pool_mask(
    mask: jax.Array,
    window_shape: Sequence[int],
    strides: Sequence[int],
    padding: str,
    batch_axis: int,
    channel_axis: int,
) -> jax.Array:
    """Mask of a pooling / convolution output: the mask at each window's centre.

    ``window_shape`` and ``strides`` are spatial (batch and channel get 1).
    """
    ndim = mask.ndim
    non_spatial = sorted({batch_axis % ndim, channel_axis % ndim})
    window, steps = list(window_shape), list(strides)
    for axis in non_spatial:
        window.insert(axis, 1)
        steps.insert(axis, 1)
    out_shape = jax.eval_shape(
        lambda m: lax.reduce_window(m, False, lax.bitwise_or, window, steps, padding), mask
    ).shape
    if mask.shape == out_shape:
        return mask
    pads = lax.padtype_to_pads(mask.shape, window, steps, padding)
    index = []
    for size, w, step, (lo, _) in zip(out_shape, window, steps, pads, strict=True):
        start = (w - 1) // 2 - lo
        index.append(slice(start, start + 1 + (size - 1) * step, step))
    return mask[tuple(index)]


def concat_masks(masks: Sequence[Any], input_shapes: Sequence[Any], axis: int) -> Any:
    """Mask of ``concatenate(inputs, axis)`` from the inputs' (broadcastable) masks.

    An input without a mask counts as unmasked (Neural Tangents 0.6.5 raises there).
    """
    if all(m is None for m in masks):
        return None
    axis %= len(input_shapes[0])
    grown = [
        None if m is None else jnp.broadcast_to(m, _with(m.shape, axis, shape[axis]))
        for m, shape in zip(masks, input_shapes, strict=True)
    ]
    present = [m.shape for m in grown if m is not None]
    largest = tuple(max(sizes) for sizes in zip(*present, strict=True))
    parts = []
    for m, shape in zip(grown, input_shapes, strict=True):
        if m is None:
            parts.append(jnp.zeros(_with(tuple(map(min, largest, shape)), axis, shape[axis]), bool))
        else:
            parts.append(jnp.broadcast_to(m, _with(largest, axis, m.shape[axis])))
    return jnp.concatenate(parts, axis)


def _with(shape: Sequence[int], axis: int, size: int) -> tuple[int, ...]:
    return tuple(shape[:axis]) + (size,) + tuple(shape[axis + 1 :])


def and_masks(masks: Sequence[Any], input_shapes: Any) -> Any:
    """Mask of a sum or product of inputs: masked where every masked input is."""
    present = [m for m in masks if m is not None]
    return functools.reduce(jnp.logical_and, present) if present else None


def masked_mean_var(
    x: jax.Array, axes: Sequence[int], mask: Any, get_var: bool = False
) -> tuple[jax.Array, jax.Array | None]:
    """Mean (and biased variance) over ``axes`` counting unmasked entries, dimensions kept.

    ``x`` is zero where masked. As in Neural Tangents, the variance sums
    ``(x - mean) ** 2`` over all entries (masked ones included, as zeros) and
    divides by the unmasked count; a fully masked slice counts as one entry.
    """
    axes = tuple(a % x.ndim for a in axes)
    if mask is None:
        mean = jnp.mean(x, axis=axes, keepdims=True)
        return mean, jnp.var(x, axis=axes, keepdims=True) if get_var else None
    total = 1
    for a in axes:
        total *= x.shape[a]
    n_masked = jnp.count_nonzero(jnp.broadcast_to(mask, x.shape), axis=axes, keepdims=True)
    count = jnp.maximum(total - n_masked, 1)
    mean = jnp.sum(x, axis=axes, keepdims=True) / count
    var = jnp.sum((x - mean) ** 2, axis=axes, keepdims=True) / count if get_var else None
    return mean, var
