"""Computing the NTK in pieces, so that each piece fits in memory.

Three independent ways of cutting the work, each leaving the result unchanged:

* **examples** (only with ``vmap_axes``, which promises that output slice ``i``
  depends only on input slice ``i``): x1 (and then x2) is cut along its batch
  axis and the blocks ``Θ(x1[a:b], x2)`` are computed one after another with
  ``lax.map``, then put side by side. When the batch axis is traced or
  diagonal, x1 and x2 are cut together.
* **parameters**: the NTK is a sum over parameters, ``Σ_w ∂f/∂w ∂f/∂wᵀ``, so the
  differentiated leaves are split into groups of at most ``params`` elements
  (a large leaf into slices along its first axis), each group's NTK computed
  with the other parameters held constant, and the groups summed.
* **basis** (NTK_VECTOR_PRODUCTS only): the output basis vectors are mapped in
  batches of ``basis`` instead of all at once.

A :class:`Chunks` of all None is the plain, unchunked computation.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from bigntk.empirical._problem import Problem
from bigntk.empirical._trees import SplitParams, prefix_axes
from bigntk.empirical._vmap import kwargs_batch_axes, split_static


@dataclasses.dataclass(frozen=True)
class Chunks:
    """How an NTK computation is cut (None: not cut that way).

    Attributes:
        examples: examples of x1 per block (of x1 and x2 together when the
            batch axis is traced or diagonal).
        examples2: examples of x2 per block (batch axis neither traced nor diagonal).
        params: parameter elements per group.
        basis: output basis vectors per batch (NTK_VECTOR_PRODUCTS).
    """

    examples: int | None = None
    examples2: int | None = None
    params: int | None = None
    basis: int | None = None

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in dataclasses.asdict(self).items() if v is not None]
        return ", ".join(parts) if parts else "unchunked"


# --- parameters ------------------------------------------------------------------------


class _ParamGroup:
    """Some pieces of the differentiated leaves, the rest held constant (a ``SplitParams``).

    ``pieces`` are ``(leaf, start, rows)``; ``start`` may be traced (a loop index).
    """

    def __init__(self, sp: SplitParams, pieces: list[tuple[int, Any, int]]):
        self._sp = sp
        self._pieces = pieces
        self.diff = [
            sp.diff[i] if _whole(sp.diff[i], a, n) else lax.dynamic_slice_in_dim(sp.diff[i], a, n)
            for i, a, n in pieces
        ]

    def rebuild(self, diff: list) -> Any:
        full = list(self._sp.diff)
        for (i, a, n), d in zip(self._pieces, diff, strict=True):
            if _whole(full[i], a, n):
                full[i] = d
            else:
                full[i] = lax.dynamic_update_slice_in_dim(full[i], d.astype(full[i].dtype), a, 0)
        return self._sp.rebuild(full)

    @property
    def dtype(self):
        return self._sp.dtype


def _whole(leaf: Any, start: Any, rows: int) -> bool:
    return isinstance(start, int) and start == 0 and rows == _rows(leaf)


def _rows(leaf: Any) -> int:
    return leaf.shape[0] if leaf.ndim else 1


def _row_size(leaf: Any) -> int:
    return math.prod(leaf.shape[1:]) if leaf.ndim else 1


def min_param_group(sp: SplitParams) -> int:
    """The smallest group size parameter chunking can reach: the largest row of a leaf."""
    return max((_row_size(leaf) for leaf in sp.diff), default=1)


def param_groups(sp: SplitParams, limit: int) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """``(packed, split)``: whole leaves packed into groups of at most ``limit`` elements,
    and the leaves larger than ``limit`` with the rows per slice they are cut into."""
    packed: list[list[int]] = []
    split: list[tuple[int, int]] = []
    room = 0
    for i, leaf in enumerate(sp.diff):
        size = int(leaf.size)
        if size > limit and _rows(leaf) > 1:
            split.append((i, max(1, limit // _row_size(leaf))))
            continue
        if not packed or size > room:
            packed.append([])
            room = limit
        packed[-1].append(i)
        room -= size
    return packed, split


def _by_params(impl: Callable, limit: int, pb: Problem) -> list:
    """The NTK as a sum over parameter groups; big leaves are sliced in a loop, not unrolled."""
    sp = pb.params
    packed, split = param_groups(sp, limit)

    def part(pieces: list[tuple[int, Any, int]]) -> list:
        return impl(dataclasses.replace(pb, params=_ParamGroup(sp, pieces)))

    total = None

    def add(t: list | None, p: list) -> list:
        return p if t is None else [a + b for a, b in zip(t, p, strict=True)]

    for leaves in packed:
        if total is not None:  # the next group starts after the previous one is summed
            total = lax.optimization_barrier(total)
        total = add(total, part([(i, 0, _rows(sp.diff[i])) for i in leaves]))
    for i, rows in split:
        n_full, rest = divmod(_rows(sp.diff[i]), rows)
        if n_full:
            first = part([(i, 0, rows)])

            def body(k, acc, i=i, rows=rows):
                return add(acc, part([(i, k * rows, rows)]))

            looped = lax.fori_loop(1, n_full, body, first) if n_full > 1 else first
            total = add(total, looped)
        if rest:
            total = add(total, part([(i, n_full * rows, rest)]))
    return total


# --- examples ----------------------------------------------------------------------------


def _batched(pb: Problem, x: Any, kw: dict) -> tuple[list, Callable, dict]:
    """``(leaves with their batch axis, rebuild(leaves) -> (x, kw_dynamic), static kw)``."""
    dyn, static = split_static(kw)
    tree = (x, dyn)
    axes = (pb.vmap.in_axes, kwargs_batch_axes(pb.vmap, dyn))
    leaves, treedef = jax.tree.flatten(tree)
    pairs = list(zip(leaves, prefix_axes(axes, tree), strict=True))

    def rebuild(new: list) -> tuple[Any, dict]:
        return jax.tree.unflatten(treedef, new)

    return pairs, rebuild, static


def batch_size(pb: Problem, side: int = 1) -> int | None:
    """Examples along the batch axis of x1 (side 1) or x2, None if nothing is batched."""
    if pb.vmap is None:
        return None
    x, kw = pb.sides()[side - 1]
    pairs, _, _ = _batched(pb, x, kw)
    for leaf, ax in pairs:
        if ax is not None:
            return jnp.shape(leaf)[ax]
    return None


def _batch_role(pb: Problem) -> str | None:
    """'joint' if every output leaf's batch axis is traced or diagonal, 'kept' if none is."""
    roles = {
        "joint" if b in spec.trace or b in spec.diagonal else "kept"
        for b, spec in zip(pb.out_axes, pb.specs, strict=True)
    }
    return roles.pop() if len(roles) == 1 else None


def example_sides(pb: Problem) -> tuple[int, ...]:
    """Which example knobs apply: () none, (1,) joint, (1, 2) x1 then x2."""
    if pb.vmap is None or batch_size(pb) is None:
        return ()
    role = _batch_role(pb)
    if role == "joint":
        return (1,)
    if role == "kept":
        return (1, 2) if batch_size(pb, 2) is not None else (1,)
    return ()


def _slicer(pairs: list, fn: Callable) -> list:
    return [leaf if ax is None else fn(leaf, ax) for leaf, ax in pairs]


class _Side(NamedTuple):
    """x1's or x2's batched leaves (see :func:`_batched`)."""

    pairs: list  # (leaf, batch axis or None)
    rebuild: Callable  # leaves -> (x, array keyword arguments)
    static: dict  # the other keyword arguments

    def mapped(self) -> list[int]:
        """Positions of the leaves with a batch axis."""
        return [i for i, (_, ax) in enumerate(self.pairs) if ax is not None]

    def stacked(self, blocks: int, size: int) -> list:
        """The leaves with a batch axis, their first ``blocks * size`` examples as
        ``blocks`` blocks on a new leading axis."""

        def split(leaf, ax):
            head = lax.slice_in_dim(leaf, 0, blocks * size, axis=ax)
            head = head.reshape(*leaf.shape[:ax], blocks, size, *leaf.shape[ax + 1 :])
            return jnp.moveaxis(head, ax, 0)

        every = _slicer(self.pairs, split)
        return [every[i] for i in self.mapped()]

    def examples(self, start: int, stop: int) -> list:
        """Every leaf, those with a batch axis cut to examples ``start:stop``."""
        return _slicer(self.pairs, lambda leaf, ax: lax.slice_in_dim(leaf, start, stop, axis=ax))

    def with_mapped(self, values: list) -> list:
        """Every leaf, those with a batch axis replaced by ``values``."""
        leaves = [leaf for leaf, _ in self.pairs]
        for i, v in zip(self.mapped(), values, strict=True):
            leaves[i] = v
        return leaves


def _cut_sides(pb: Problem, cut: tuple[int, ...]) -> tuple[dict[int, _Side], int]:
    """``({side: its batched leaves}, examples)`` of the sides in ``cut``."""
    sides = {}
    n = None
    for s in cut:
        x, kw = pb.sides()[s - 1]
        sides[s] = _Side(*_batched(pb, x, kw))
        n = n or next(jnp.shape(leaf)[ax] for leaf, ax in sides[s].pairs if ax is not None)
    return sides, n


def _with_blocks(pb: Problem, sides: dict[int, _Side], side: int, parts: dict) -> Problem:
    """``pb`` with each side ``s`` in ``parts`` replaced by the block of leaves ``parts[s]``."""
    changes: dict[str, Any] = {}
    for s, leaves in parts.items():
        x, dyn = sides[s].rebuild(leaves)
        changes.update({f"x{s}": x, f"kw{s}": {**dyn, **sides[s].static}})
    if side != 0:
        changes["same"] = False
    return dataclasses.replace(pb, **changes)


def _by_examples(impl: Callable, size: int, side: int, pb: Problem) -> list:
    """The NTK with x1 (side 1), x2 (side 2), or both (side 0) cut into blocks of ``size``.

    The ``g`` whole blocks are mapped with ``lax.map``; a remainder of ``r``
    examples is one more block; :func:`_assemble` puts them back together.
    """
    cut = (1, 2) if side == 0 else (side,)
    sides, n = _cut_sides(pb, cut)
    g, r = divmod(n, size)

    def block(parts: dict[int, list]) -> list:
        return impl(_with_blocks(pb, sides, side, parts))

    def body(xs: dict[int, list]) -> list:  # one whole block of each side in cut
        return block({s: sides[s].with_mapped(xs[s]) for s in cut})

    results = []
    if g:
        xs = {s: sides[s].stacked(g, size) for s in cut}
        results.append((g * size, lax.map(body, xs), True))
    if r:
        tail = {s: sides[s].examples(g * size, n) for s in cut}
        results.append((r, block(tail), False))
    return [_assemble(pb, o, side, n, results) for o in range(len(pb.specs))]


def _assemble(pb: Problem, o: int, side: int, n: int, results: list) -> jnp.ndarray:
    spec, b = pb.specs[o], pb.out_axes[o]
    labels = spec.result_labels()
    key = (b, 0) if side == 0 else (b, side)
    pieces = []
    for count, out, is_stacked in results:
        leaf = out[o]
        if b in spec.trace:  # each block is a mean over its examples: weigh by their count
            blocks = leaf.shape[0] if is_stacked else 1
            pieces.append((leaf.sum(0) if is_stacked else leaf) * (count / blocks))
            continue
        p = labels.index(key)
        if is_stacked:
            leaf = jnp.moveaxis(leaf, 0, p)
            leaf = leaf.reshape(*leaf.shape[:p], -1, *leaf.shape[p + 2 :])
        pieces.append(leaf)
    if b in spec.trace:
        return functools.reduce(jnp.add, pieces) / n
    return pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=labels.index(key))


# --- all together ------------------------------------------------------------------------


def chunked(impl: Callable, chunks: Chunks) -> Callable[[Problem], list]:
    """``impl`` (a ``Problem -> NTK leaves`` function) computed in the pieces ``chunks`` gives."""
    fn = impl
    if chunks.basis is not None:
        fn = functools.partial(fn, basis_chunk=chunks.basis)
    if chunks.params is not None:
        fn = functools.partial(_by_params, fn, chunks.params)
    if chunks.examples2 is not None:
        by_x2 = functools.partial(_by_examples, fn, chunks.examples2, 2)
        plain = fn

        def fn(pb: Problem) -> list:  # x2 alone is cut only when the batch axis stays
            return by_x2(pb) if _batch_role(pb) == "kept" else plain(pb)

    if chunks.examples is not None:
        inner = fn

        def fn(pb: Problem) -> list:
            side = 0 if _batch_role(pb) == "joint" else 1
            return _by_examples(inner, chunks.examples, side, pb)

    return fn
