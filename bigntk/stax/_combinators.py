"""Layer combinators and branching layers: ``serial``, ``parallel``, fan-out / fan-in.

Parameter containers, random-key splitting and ``rng`` threading follow
``jax.example_libraries.stax`` (on which Neural Tangents builds), so the same
key gives the same parameters and the same dropout masks as Neural Tangents:

* ``serial``: params are a ``list`` (one entry per layer); ``init_fn`` splits
  ``rng, layer_rng = split(rng)`` before each layer; ``apply_fn`` splits an
  ``rng`` keyword into one key per layer (``None`` for all when absent).
* ``parallel``: params are a ``tuple`` (one entry per branch), output shapes a
  ``tuple``; keys are ``split(rng, n_layers)``.
* ``repeat(layer, n)``: params are ``layer``'s params stacked along a new
  leading axis of size ``n`` (drawn in a ``lax.scan`` that splits ``rng,
  layer_rng = split(rng)`` before each copy); ``apply_fn`` scans over them.
* ``FanOut``, ``FanInSum``, ``FanInProd``, ``FanInConcat``: params ``()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from bigntk.errors import LayerArgumentError, UnsupportedLayerError
from bigntk.stax._closed_form import KernelState
from bigntk.stax._layer import KernelFn, Layer
from bigntk.stax._masking import and_masks, concat_masks, masked

__all__ = ["FanInConcat", "FanInProd", "FanInSum", "FanOut", "parallel", "repeat", "serial"]


def _split(rng: jax.Array | None, num: int) -> Sequence[jax.Array | None]:
    return (None,) * num if rng is None else jax.random.split(rng, num)


def serial(*layers: Layer) -> Layer:
    """Compose layers in sequence (``layers[0]`` is applied first).

    Args:
        *layers: ``(init_fn, apply_fn, kernel_fn)`` triples.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``. Params are a list with one entry per
        layer. ``kernel_fn`` composes the children's closed forms and raises
        :class:`~bigntk.errors.UnsupportedLayerError` when called (not when
        built) if a child has none.
    """
    init_fns, apply_fns, kernel_fns = _unzip(layers, "serial")

    def init_fn(rng: jax.Array, input_shape: Any) -> tuple[Any, list[Any]]:
        params = []
        for init in init_fns:
            rng, layer_rng = jax.random.split(rng)
            input_shape, param = init(layer_rng, input_shape)
            params.append(param)
        return input_shape, params

    def apply_fn(params: Sequence[Any], inputs: Any, **kwargs: Any) -> Any:
        _check_len(params, len(apply_fns), "serial")
        rngs = _split(kwargs.pop("rng", None), len(apply_fns))
        for fn, param, rng in zip(apply_fns, params, rngs, strict=True):
            inputs = fn(param, inputs, rng=rng, **kwargs)
        return inputs

    def transform(state: KernelState) -> KernelState:
        for i, kernel_fn in enumerate(kernel_fns):
            state = _child(kernel_fn, i, "serial").transform(state)
        return state

    return init_fn, apply_fn, KernelFn("serial", transform)


def repeat(layer: Layer, n: int) -> Layer:
    """Apply ``layer`` ``n`` times in a ``lax.scan`` (faster to compile than ``serial``).

    Same function as ``serial(*[layer] * n)`` with independent params per copy,
    but a different parameter layout (see the module docstring). ``layer`` must
    keep the shape of its inputs. As in Neural Tangents, every copy receives the
    same keyword arguments, ``rng`` included.

    Args:
        layer: an ``(init_fn, apply_fn, kernel_fn)`` triple whose output shape
            equals its input shape.
        n: number of copies, ``n >= 0``.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``. Params: ``layer``'s param tree with
        each leaf stacked to shape ``(n, *leaf.shape)``. ``kernel_fn`` applies
        ``layer``'s closed form ``n`` times, where it has one.
    """
    _unzip([layer], "repeat")  # a clear error unless a triple
    init_one, apply_one, kernel_one = layer
    if n < 0:
        raise LayerArgumentError(f"expected repeat count n >= 0, got n={n} instead.")

    def init_fn(rng: jax.Array, input_shape: Any) -> tuple[Any, Any]:
        output_shape, _ = init_one(rng, input_shape)
        if tuple(output_shape) != tuple(input_shape):
            raise LayerArgumentError(
                f"repeat expected a layer keeping its input shape {tuple(input_shape)}, "
                f"got output shape {tuple(output_shape)} instead; use "
                f"serial(*[layer] * n) for shape-changing layers."
            )

        def draw(rng: jax.Array, _: None) -> tuple[jax.Array, Any]:
            rng, layer_rng = jax.random.split(rng)
            return rng, init_one(layer_rng, input_shape)[1]

        _, params = jax.lax.scan(draw, rng, None, n)
        return output_shape, params

    def apply_fn(params: Any, inputs: Any, **kwargs: Any) -> Any:
        def step(x: Any, param: Any) -> tuple[Any, None]:
            return apply_one(param, x, **kwargs), None

        outputs, _ = jax.lax.scan(step, inputs, params, n)
        return outputs

    def transform(state: KernelState) -> KernelState:
        for _ in range(n):
            state = _child(kernel_one, 0, "repeat").transform(state)
        return state

    return init_fn, apply_fn, KernelFn("repeat", transform)


def parallel(*layers: Layer) -> Layer:
    """Apply layers side by side, the ``i``-th layer to the ``i``-th input.

    Usually placed between :func:`FanOut` and :func:`FanInSum` /
    :func:`FanInConcat`.

    Args:
        *layers: ``(init_fn, apply_fn, kernel_fn)`` triples.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``. ``init_fn`` takes a sequence of
        input shapes and returns a tuple of output shapes and a tuple of params;
        ``apply_fn`` returns outputs in a container of the inputs' type.
        ``kernel_fn`` raises :class:`~bigntk.errors.UnsupportedLayerError`.
    """
    init_fns, apply_fns, _ = _unzip(layers, "parallel")

    def init_fn(rng: jax.Array, input_shape: Sequence[Any]) -> tuple[Any, tuple[Any, ...]]:
        _check_len(input_shape, len(init_fns), "parallel", what="input shapes")
        rngs = jax.random.split(rng, len(init_fns))
        results = [
            init(r, shape) for init, r, shape in zip(init_fns, rngs, input_shape, strict=True)
        ]
        output_shapes, params = zip(*results, strict=True)
        return tuple(output_shapes), tuple(params)

    def apply_fn(params: Sequence[Any], inputs: Sequence[Any], **kwargs: Any) -> Any:
        _check_len(params, len(apply_fns), "parallel")
        _check_len(inputs, len(apply_fns), "parallel", what="inputs")
        rngs = _split(kwargs.pop("rng", None), len(apply_fns))
        outputs = [
            fn(p, x, rng=r, **kwargs)
            for fn, p, x, r in zip(apply_fns, params, inputs, rngs, strict=True)
        ]
        return type(inputs)(outputs)

    return init_fn, apply_fn, KernelFn("parallel", None)


def FanOut(num: int) -> Layer:
    """Copy the input ``num`` times, e.g. into the branches of a ``parallel``.

    Args:
        num: number of copies.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``; outputs and output shapes are lists
        of length ``num``, params ``()``. ``kernel_fn`` raises
        :class:`~bigntk.errors.UnsupportedLayerError`.
    """

    def init_fn(rng: jax.Array, input_shape: Any) -> tuple[list[Any], tuple[()]]:
        return [input_shape] * num, ()

    def apply_fn(params: Any, inputs: Any, **kwargs: Any) -> list[Any]:
        return [inputs] * num

    return init_fn, apply_fn, KernelFn("FanOut", None)


def FanInSum() -> Layer:
    """Sum a sequence of inputs of equal shape.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)`` with params ``()``. ``kernel_fn``
        raises :class:`~bigntk.errors.UnsupportedLayerError`.
    """

    def init_fn(rng: jax.Array, input_shape: Sequence[Any]) -> tuple[Any, tuple[()]]:
        return input_shape[0], ()

    def apply_fn(params: Any, inputs: Sequence[jax.Array], **kwargs: Any) -> jax.Array:
        out = inputs[0]
        for x in inputs[1:]:
            out = out + x
        return out

    return init_fn, masked(apply_fn, and_masks), KernelFn("FanInSum", None)


def FanInProd() -> Layer:
    """Multiply a sequence of inputs of equal shape elementwise.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)`` with params ``()``. ``kernel_fn``
        raises :class:`~bigntk.errors.UnsupportedLayerError`.
    """

    def init_fn(rng: jax.Array, input_shape: Sequence[Any]) -> tuple[Any, tuple[()]]:
        return input_shape[0], ()

    def apply_fn(params: Any, inputs: Sequence[jax.Array], **kwargs: Any) -> jax.Array:
        out = inputs[0]
        for x in inputs[1:]:
            out = out * x
        return out

    return init_fn, masked(apply_fn, and_masks), KernelFn("FanInProd", None)


def FanInConcat(axis: int = -1) -> Layer:
    """Concatenate a sequence of inputs along ``axis``.

    Args:
        axis: concatenation axis, the channel axis by default.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)`` with params ``()``. ``kernel_fn``
        raises :class:`~bigntk.errors.UnsupportedLayerError`.
    """

    def init_fn(rng: jax.Array, input_shape: Sequence[Any]) -> tuple[Any, tuple[()]]:
        first = tuple(input_shape[0])
        ax = axis % len(first)
        size = sum(shape[ax] for shape in input_shape)
        return first[:ax] + (size,) + first[ax + 1 :], ()

    def apply_fn(params: Any, inputs: Sequence[jax.Array], **kwargs: Any) -> jax.Array:
        return jnp.concatenate(inputs, axis)

    def mask_fn(masks: Sequence[Any], input_shapes: Sequence[Any]) -> Any:
        return concat_masks(masks, input_shapes, axis)

    return init_fn, masked(apply_fn, mask_fn), KernelFn("FanInConcat", None)


def _unzip(layers: Sequence[Layer], name: str) -> tuple[tuple[Any, ...], ...]:
    for i, layer in enumerate(layers):
        if not (isinstance(layer, tuple | list) and len(layer) == 3):
            raise TypeError(
                f"{name} expected (init_fn, apply_fn, kernel_fn) triples, got "
                f"{type(layer).__name__} at position {i} instead; did you forget to "
                f"call the layer, e.g. stax.Relu() rather than stax.Relu?"
            )
    if not layers:
        return (), (), ()
    return tuple(zip(*layers, strict=True))


def _child(kernel_fn: Any, index: int, name: str) -> KernelFn:
    if not isinstance(kernel_fn, KernelFn):
        raise UnsupportedLayerError(
            f"{name}.kernel_fn: layer {index} has a kernel_fn of type "
            f"{type(kernel_fn).__name__}, not a bigntk.stax layer, so no closed form is "
            f"available; build the network from bigntk.stax layers only."
        )
    return kernel_fn


def _check_len(seq: Sequence[Any], expected: int, name: str, what: str = "params") -> None:
    if len(seq) != expected:
        raise LayerArgumentError(
            f"{name} expected {expected} {what} (one per layer), got {len(seq)} instead."
        )
