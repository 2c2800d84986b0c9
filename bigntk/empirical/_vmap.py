"""``vmap_axes``: computing per-example quantities with ``jax.vmap``.

Passing ``vmap_axes`` promises that slice ``i`` (along the batch axis) of every
output leaf depends only on slice ``i`` of the batched inputs and keyword
arguments. Each per-example call of ``f`` gets its slice back with a size-1
batch axis, and its output has that axis squeezed out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from bigntk.empirical._trees import is_array, map_prefix, prefix_axes


class VmapAxes(NamedTuple):
    """Batch axes of the inputs (a prefix of ``x``), outputs, and keyword arguments."""

    in_axes: Any
    out_axes: Any
    kwargs_axes: Any  # dict name -> axes prefix, or an int for all


def canonical_vmap_axes(vmap_axes: Any) -> VmapAxes | None:
    """Read NT's forms: None, an int, a pytree for inputs and outputs, or a 3-tuple."""
    if vmap_axes is None:
        return None
    if isinstance(vmap_axes, tuple) and len(vmap_axes) == 3:
        in_axes, out_axes, kwargs_axes = vmap_axes
    else:
        in_axes = out_axes = vmap_axes
        kwargs_axes = {}
    if kwargs_axes is None:
        kwargs_axes = {}
    if not isinstance(kwargs_axes, dict | int):
        raise TypeError(
            "The third element of vmap_axes=(in_axes, out_axes, kwargs_axes) must be a dict "
            f"from keyword name to axes, or an int, got {kwargs_axes!r} instead."
        )
    return VmapAxes(in_axes, out_axes, kwargs_axes)


def out_axes_per_leaf(vm: VmapAxes, out_shapes: Any) -> list[int]:
    """The batch axis of every output leaf (non-negative), in flattening order.

    None in ``f``'s output is an empty subtree, not a leaf, as in ``jax.vmap``.
    """
    try:
        axes = prefix_axes(vm.out_axes, out_shapes)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"vmap_axes gives output axes {vm.out_axes!r}, which do not match the structure "
            f"of f's output {jax.tree.structure(out_shapes)}: {e}"
        ) from None
    shapes = jax.tree.leaves(out_shapes)
    if any(not isinstance(a, int) for a in axes):
        raise ValueError(
            f"vmap_axes must give an int batch axis for every output leaf, got out_axes="
            f"{vm.out_axes!r} for outputs of shapes {[s.shape for s in shapes]}."
        )
    out = []
    for ax, s in zip(axes, shapes, strict=True):
        if not -len(s.shape) <= ax < len(s.shape):
            raise ValueError(f"vmap_axes gives batch axis {ax} for an output of shape {s.shape}.")
        out.append(ax % len(s.shape))
    return out


def split_static(kwargs: dict) -> tuple[dict, dict]:
    """Keyword arguments whose leaves are all arrays (vmappable), and the rest."""
    dyn, static = {}, {}
    for name, value in kwargs.items():
        leaves = jax.tree.leaves(value)
        (dyn if leaves and all(is_array(v) for v in leaves) else static)[name] = value
    return dyn, static


def kwargs_batch_axes(vm: VmapAxes, kw: dict) -> dict:
    """The batch axes (prefix) of each keyword argument in ``kw``, by name (None: not batched)."""
    if isinstance(vm.kwargs_axes, int):
        return dict.fromkeys(kw, vm.kwargs_axes)
    return {name: vm.kwargs_axes.get(name) for name in kw}


def _expand(tree: Any, axes: Any) -> Any:
    return map_prefix(lambda a, ax: a if ax is None else jnp.expand_dims(a, ax), axes, tree)


def per_example(
    vm: VmapAxes,
    batches: Sequence[tuple[Any, dict]],
    body: Callable[..., Any],
) -> Any:
    """``vmap`` ``body`` jointly over the examples of every ``(x, kwargs)`` in ``batches``.

    ``body`` receives, for each batch, the example's ``x`` and array keyword
    arguments with their size-1 batch axes restored; results gain a leading
    batch axis.
    """
    in_axes = []
    args = []
    for x, kw in batches:
        in_axes += [vm.in_axes, kwargs_batch_axes(vm, kw)]
        args += [x, kw]

    def one(*flat):
        restored = []
        for i in range(0, len(flat), 2):
            restored += [_expand(flat[i], in_axes[i]), _expand(flat[i + 1], in_axes[i + 1])]
        return body(*restored)

    return jax.vmap(one, in_axes=tuple(in_axes))(*args)


def squeeze_outputs(out: Any, out_axes: list[int]) -> list:
    """Leaves of a per-example output, with the size-1 batch axis removed."""
    leaves = jax.tree.leaves(out)
    return [jnp.squeeze(o, b) for o, b in zip(leaves, out_axes, strict=True)]
