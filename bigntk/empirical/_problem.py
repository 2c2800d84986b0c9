"""What every kernel implementation receives: ``f``, its arguments, and the output conventions."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from bigntk.empirical._axes import AxesSpec, Out
from bigntk.empirical._trees import SplitParams
from bigntk.empirical._vmap import VmapAxes, per_example, split_static, squeeze_outputs


@dataclasses.dataclass(frozen=True)
class Problem:
    """One kernel evaluation, already checked.

    Attributes:
        f: the function, called as ``f(params, x, **kwargs)``.
        params: the parameters, split into differentiated leaves and the rest.
        x1, x2: the inputs (``x2`` is never None here).
        kw1, kw2: keyword arguments of the x1 and x2 calls.
        same: True when the x2 call is the x1 call (``x2=None``, nothing split),
            so derivatives of x1 can be reused.
        specs: output-axis conventions, one per output leaf.
        ntk_dtypes, nngp_dtypes: result dtype per output leaf.
        vmap: batch axes, or None.
        out_axes: batch axis of each output leaf (when ``vmap`` is given).
    """

    f: Callable
    params: SplitParams
    x1: Any
    x2: Any
    kw1: dict
    kw2: dict
    same: bool
    specs: list[AxesSpec]
    ntk_dtypes: list
    nngp_dtypes: list
    vmap: VmapAxes | None
    out_axes: list[int] | None

    def call(self, diff: list, x: Any, kw: dict) -> list:
        """Output leaves of ``f`` at differentiated parameters ``diff`` (arrays, even for
        Python scalars such as a constant ``1.0``)."""
        return [jnp.asarray(o) for o in jax.tree.leaves(self.f(self.params.rebuild(diff), x, **kw))]

    def sides(self) -> tuple[tuple[Any, dict], tuple[Any, dict]]:
        return (self.x1, self.kw1), (self.x2, self.kw2)

    def out_labels(self, leaf: int, side: int) -> list[Out]:
        """Labels of an output leaf's axes; with vmap, the batch axis comes first."""
        ndim = self.specs[leaf].ndim
        if self.vmap is None:
            return [Out(k, side) for k in range(ndim)]
        b = self.out_axes[leaf]
        return [Out(b, side)] + [Out(k, side) for k in range(ndim) if k != b]

    def map_examples(self, batches: list[tuple[Any, dict]], body: Callable[..., Any]) -> Any:
        """``vmap`` ``body(diff_fn_1, ..., diff_fn_n)`` jointly over the examples of ``batches``.

        Each ``diff_fn_i(diff)`` returns the squeezed output leaves of ``f`` on one
        example of batch ``i``.
        """
        statics = []
        dynamics = []
        for x, kw in batches:
            dyn, static = split_static(kw)
            statics.append(static)
            dynamics.append((x, dyn))

        def inner(*flat):
            fns = []
            for i, static in enumerate(statics):
                xi, kwi = flat[2 * i], flat[2 * i + 1]
                fns.append(
                    lambda diff, xi=xi, kwi=kwi, static=static: squeeze_outputs(
                        self.f(self.params.rebuild(diff), xi, **kwi, **static), self.out_axes
                    )
                )
            return body(*fns)

        return per_example(self.vmap, dynamics, inner)
