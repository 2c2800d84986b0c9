"""The ``(init_fn, apply_fn, kernel_fn)`` layer triple and its ``kernel_fn`` object.

Every ``bigntk.stax`` layer returns ``(init_fn, apply_fn, kernel_fn)``, as
Neural Tangents' ``stax`` does:

* ``init_fn(rng, input_shape) -> (output_shape, params)``;
* ``apply_fn(params, inputs, **kwargs) -> outputs``;
* ``kernel_fn(x1, x2=None, get=None, **kwargs)``, an instance of
  :class:`KernelFn`, the infinite-width NNGP / NTK in closed form.

A :class:`KernelFn` wraps a *transform*, a function from one
:class:`~bigntk.stax._closed_form.KernelState` to the next. Combinators compose
the transforms of their children; layers without a closed form carry no
transform and raise :class:`~bigntk.errors.UnsupportedLayerError` when called.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax

from bigntk.errors import LayerArgumentError, UnsupportedLayerError
from bigntk.stax import _closed_form

__all__ = [
    "ApplyFn",
    "InitFn",
    "Kernel",
    "KernelFn",
    "Layer",
    "Transform",
    "eval_output_shape",
]

Shape = tuple[int, ...]
InitFn = Callable[[jax.Array, Any], tuple[Any, Any]]
ApplyFn = Callable[..., Any]
Transform = Callable[[_closed_form.KernelState], _closed_form.KernelState]

Kernel = collections.namedtuple("Kernel", ["nngp", "ntk"])
Kernel.__doc__ = """Infinite-width kernels returned by ``kernel_fn(x1, x2)``.

Attributes:
    nngp: NNGP kernel, shape ``(n1, n2)`` for flat outputs.
    ntk: neural tangent kernel, same shape as ``nngp``.
"""

_GETTABLE = ("nngp", "ntk")
_CLOSED_FORM_LAYERS = (
    "Dense, Identity, Flatten, Dropout(mode='test'), the sum and average pooling "
    "layers, the elementwise nonlinearities but Tanh and Gelu, repeat and serial"
)


class KernelFn:
    """Closed-form infinite-width ``kernel_fn`` of a layer or network.

    Call it as ``kernel_fn(x1, x2=None, get=None)``. The input kernel is
    ``x1 @ x2.T / d`` over the trailing (channel) axis; ``x2=None`` means
    ``x2 = x1``.

    Args:
        name: the layer name used in error messages, e.g. ``"Conv"``.
        transform: maps the kernel of the layer inputs to the kernel of its
            outputs; ``None`` when the layer has no closed form.
    """

    def __init__(self, name: str, transform: Transform | None) -> None:
        self.name = name
        self._transform = transform
        self._compute = jax.jit(self._kernels, static_argnames="compute_ntk")

    def __repr__(self) -> str:
        return f"<bigntk.stax kernel_fn of {self.name}>"

    @property
    def has_closed_form(self) -> bool:
        """Whether this layer itself provides a transform (children are not checked)."""
        return self._transform is not None

    def transform(self, state: _closed_form.KernelState) -> _closed_form.KernelState:
        """Propagate ``state`` through the layer (used by combinators)."""
        if self._transform is None:
            raise UnsupportedLayerError(
                f"{self.name} has no closed-form kernel_fn in bigntk.stax; closed forms "
                f"exist only for networks built from {_CLOSED_FORM_LAYERS}. Compute a "
                f"finite-width (empirical) kernel of apply_fn instead."
            )
        return self._transform(state)

    def __call__(
        self, x1: Any, x2: Any = None, get: str | Sequence[str] | None = None, **kwargs: Any
    ) -> Any:
        """Compute the infinite-width kernels between ``x1`` and ``x2``.

        Args:
            x1: inputs of shape ``(n1, *spatial, d)``.
            x2: inputs of shape ``(n2, *spatial, d)``, or ``None`` for ``x1``.
            get: ``None`` for ``Kernel(nngp, ntk)``; ``"nngp"`` or ``"ntk"`` for
                one array; a tuple of those names for a namedtuple in that order.
            **kwargs: Neural Tangents' keyword arguments. ``diagonal_batch`` and
                ``diagonal_spatial`` are accepted and ignored (full kernels are
                always returned); ``mask_constant`` and ``pattern`` are not
                supported.

        Returns:
            ``nngp`` / ``ntk`` of shape ``(n1, n2)`` for flat network outputs, or
            ``(n1, n2, s_1, s_1, ..., s_k, s_k)`` for outputs with spatial axes.

        Raises:
            UnsupportedLayerError: if the network holds a layer without closed form.
        """
        names, single = _canonicalize_get(get)
        for key in ("mask_constant", "pattern"):
            if kwargs.get(key) is not None:
                raise UnsupportedLayerError(
                    f"kernel_fn does not support {key}={kwargs[key]!r}; call it without {key}."
                )
        nngp, ntk = self._compute(x1, x2, compute_ntk="ntk" in names)
        values = {"nngp": nngp, "ntk": ntk}
        if single:
            return values[names[0]]
        if get is None:
            return Kernel(nngp=values["nngp"], ntk=values["ntk"])
        return _analytic_kernel(names)(*(values[n] for n in names))

    def _kernels(self, x1: Any, x2: Any, compute_ntk: bool) -> tuple[jax.Array, jax.Array | None]:
        state = _closed_form.from_inputs(x1, x2, compute_ntk=compute_ntk)
        state = _closed_form.materialize(self.transform(state))
        return state.nngp, state.ntk


Layer = tuple[InitFn, ApplyFn, KernelFn]
"""An ``(init_fn, apply_fn, kernel_fn)`` triple."""


@functools.cache
def _analytic_kernel(names: tuple[str, ...]) -> type:
    """The namedtuple type returned for a tuple ``get`` (``AnalyticKernel`` in NT)."""
    return collections.namedtuple("AnalyticKernel", names)


def _canonicalize_get(get: str | Sequence[str] | None) -> tuple[tuple[str, ...], bool]:
    """Return the requested kernel names and whether a single array was asked for."""
    if get is None:
        return _GETTABLE, False
    single = isinstance(get, str)
    names = (get,) if single else tuple(get)
    if not names or not all(isinstance(n, str) for n in names):
        raise LayerArgumentError(
            f"expected get to be None, 'nngp', 'ntk' or a non-empty tuple of those, "
            f"got {get!r} instead."
        )
    names = tuple(n.lower() for n in names)
    bad = [n for n in names if n not in _GETTABLE]
    if bad:
        raise LayerArgumentError(
            f"expected get entries among {_GETTABLE}, got {bad} instead; e.g. "
            f"kernel_fn(x1, x2, get=('nngp', 'ntk'))."
        )
    if len(set(names)) != len(names):
        raise LayerArgumentError(f"expected unique get entries, got {names} instead.")
    return names, single


def eval_output_shape(
    fn: Callable[..., Any],
    input_shape: Sequence[int],
    *others: jax.ShapeDtypeStruct,
    batch_axis: int = 0,
    out_batch_axis: int | None = None,
) -> Shape:
    """Output shape of ``fn(x, *others)`` for ``x`` of ``input_shape``, without FLOPs.

    A batch size of ``-1`` (Neural Tangents allows it in ``init_fn``) is kept,
    at ``out_batch_axis`` (default: ``batch_axis``) of the output.
    """
    shape = list(input_shape)
    batch_axis %= len(shape)
    unknown_batch = shape[batch_axis] == -1
    if unknown_batch:
        shape[batch_axis] = 1
    x = jax.ShapeDtypeStruct(tuple(shape), "float32")
    out = list(jax.eval_shape(fn, x, *others).shape)
    if unknown_batch:
        out[batch_axis if out_batch_axis is None else out_batch_axis] = -1
    return tuple(out)
