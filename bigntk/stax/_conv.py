"""Convolutions: ``Conv``, ``ConvTranspose``, ``ConvLocal`` and their ``Padding``.

All three share Neural Tangents' parameter layout and initialisation:
``k1, k2 = split(rng)``, ``W = normal(k1, kernel_shape)``, ``b =
normal(k2, bias_shape)`` (``None`` when ``b_std`` is ``None``), with
``fan_in = in_chan * prod(filter_shape)`` and the same ``'ntk'`` /
``'standard'`` scalings as ``Dense``.

``padding='CIRCULAR'`` treats the image as a torus: the output has the shape a
``'SAME'`` convolution would give, and the values wrap around the edges. It is
computed as a ``'VALID'`` convolution of the input padded with its own
opposite edges (transpose: a ``'VALID'`` transpose convolution whose overhang
is folded back onto the ``'SAME'`` output shape).
"""

from __future__ import annotations

import enum
import functools
import math
import string
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from bigntk.errors import LayerArgumentError
from bigntk.stax._layer import KernelFn, Layer, eval_output_shape
from bigntk.stax._linear import check_parameterization
from bigntk.stax._masking import masked, pool_mask

__all__ = ["Conv", "ConvLocal", "ConvTranspose", "Padding"]


class Padding(enum.Enum):
    """Padding of convolutions (and, in Neural Tangents, of pooling layers).

    Attributes:
        CIRCULAR: periodic padding, as if the input were a torus.
        SAME: zero padding keeping the spatial shape (for stride one).
        VALID: no padding.
    """

    CIRCULAR = "CIRCULAR"
    SAME = "SAME"
    VALID = "VALID"


def as_padding(layer: str, padding: str | Padding) -> Padding:
    """``padding`` as a :class:`Padding`, or a clear error naming ``layer``."""
    try:
        return Padding(padding)
    except ValueError:
        raise LayerArgumentError(
            f"expected {layer} padding among {[p.value for p in Padding]}, got {padding!r} instead."
        ) from None


def default_dimension_numbers(n_spatial: int) -> tuple[str, str, str]:
    """Channels-last specs, e.g. ``('NHWC', 'HWIO', 'NHWC')`` for 2 spatial axes."""
    spatial = "".join(c for c in string.ascii_uppercase if c not in "NCIO")[:n_spatial]
    return "N" + spatial + "C", spatial + "IO", "N" + spatial + "C"


def circular_pad(
    x: jax.Array, filter_shape: Sequence[int], strides: Sequence[int], axes: Sequence[int]
) -> jax.Array:
    """Pad ``axes`` of ``x`` with wrapped-around values by ``'SAME'`` amounts.

    A ``'VALID'`` convolution of the result has the ``'SAME'`` output shape.
    """
    sizes = [x.shape[a] for a in axes]
    pads = lax.padtype_to_pads(sizes, filter_shape, strides, "SAME")
    widths = [(0, 0)] * x.ndim
    for axis, pad in zip(axes, pads, strict=True):
        widths[axis] = tuple(pad)
    return jnp.pad(x, widths, mode="wrap")


def circular_fold(x: jax.Array, axes: Sequence[int], out_shape: Sequence[int]) -> jax.Array:
    """Fold each of ``axes`` of ``x`` onto its size in ``out_shape``, wrapping around.

    Along an axis of size ``n`` folded to ``m <= n``, entry ``i`` of the result
    is the sum of ``x[o + i + k * m]`` over all integer ``k`` in range, with
    the offset ``o = (n - m) // 2`` that centres the ``m`` window.
    """
    for axis in axes:
        n, m = x.shape[axis], out_shape[axis]  # m <= n: a VALID transpose is never smaller
        offset = (n - m) // 2
        front = -offset % m  # zeros before x so that x[offset] lands on a multiple of m
        total = -(-(front + n) // m) * m
        widths = [(0, 0)] * x.ndim
        widths[axis] = (front, total - front - n)
        padded = jnp.pad(x, widths)
        shape = padded.shape[:axis] + (total // m, m) + padded.shape[axis + 1 :]
        x = jnp.sum(padded.reshape(shape), axis=axis)
    return x


def _conv(
    name: str,
    out_chan: int,
    filter_shape: Sequence[int],
    strides: Sequence[int] | None,
    padding: str | Padding,
    W_std: float,
    b_std: float | None,
    dimension_numbers: tuple[str, str, str] | None,
    parameterization: str,
    s: tuple[int, int],
    *,
    transpose: bool,
    shared: bool,
) -> Layer:
    """The three convolutions: shared weights (``Conv``), transposed, or unshared."""
    parameterization = check_parameterization(parameterization)
    padding = as_padding(name, padding)
    filter_shape = tuple(filter_shape)
    strides = tuple(strides) if strides else (1,) * len(filter_shape)
    if dimension_numbers is None:
        dimension_numbers = default_dimension_numbers(len(filter_shape))
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    # NT's ConvLocal always has out_chan output channels (s[1] is not applied)
    width = out_chan if parameterization == "ntk" or not shared else out_chan * s[1]
    # a CIRCULAR layer has the output shape of SAME; it runs VALID on padded inputs
    shape_padding = "SAME" if padding is Padding.CIRCULAR else padding.value
    run_padding = "VALID" if padding is Padding.CIRCULAR else padding.value
    in_axes = tuple(lhs_spec.index(c) for c in rhs_spec if c not in "IO")
    out_axes = tuple(out_spec.index(c) for c in rhs_spec if c not in "IO")

    def fan_in(input_shape: Sequence[int]) -> int:
        return input_shape[lhs_spec.index("C")] * math.prod(filter_shape)

    def dense_kernel_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
        filters = iter(filter_shape)
        in_chan = input_shape[lhs_spec.index("C")]
        return tuple(
            width if c == "O" else in_chan if c == "I" else next(filters) for c in rhs_spec
        )

    def lax_conv(padding_name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
        if transpose:
            return functools.partial(
                lax.conv_transpose,
                strides=strides,
                padding=padding_name,
                dimension_numbers=dimension_numbers,
            )
        return functools.partial(
            lax.conv_general_dilated,
            window_strides=strides,
            padding=padding_name,
            dimension_numbers=dimension_numbers,
        )

    def output_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
        kernel = jax.ShapeDtypeStruct(dense_kernel_shape(input_shape), "float32")
        return eval_output_shape(
            lax_conv(shape_padding),
            input_shape,
            kernel,
            batch_axis=lhs_spec.index("N"),
            out_batch_axis=out_spec.index("N"),
        )

    def shapes(input_shape: Sequence[int]) -> tuple[Any, tuple[int, ...], tuple[int, ...]]:
        out_shape = output_shape(input_shape)
        if shared:
            kernel_shape = dense_kernel_shape(input_shape)
            bias_shape = tuple(width if c == "C" else 1 for c in out_spec)
        else:  # one filter per output position; inputs fused with channels in "I"
            kernel_shape = tuple(
                width
                if c == "O"
                else fan_in(input_shape)
                if c == "I"
                else out_shape[out_spec.index(c)]
                for c in rhs_spec
            )
            bias_shape = tuple(
                1 if c == "N" else d for c, d in zip(out_spec, out_shape, strict=True)
            )
        return out_shape, kernel_shape, bias_shape

    def init_fn(rng: jax.Array, input_shape: Sequence[int]) -> tuple[Any, Any]:
        input_shape = tuple(input_shape)
        out_shape, kernel_shape, bias_shape = shapes(input_shape)
        rng_w, rng_b = jax.random.split(rng)
        W = jax.random.normal(rng_w, kernel_shape)
        b = None if b_std is None else jax.random.normal(rng_b, bias_shape)
        if parameterization == "standard":
            W = W * (W_std / (fan_in(input_shape) / s[0]) ** 0.5)
            b = None if b is None else b * b_std
        return out_shape, (W, b)

    def run(inputs: jax.Array, W: jax.Array) -> jax.Array:
        if not shared:
            return lax.conv_general_dilated_local(
                inputs,
                W,
                strides,
                run_padding,
                filter_shape=filter_shape,
                dimension_numbers=dimension_numbers,
            )
        return lax_conv(run_padding)(inputs, W)

    def apply_fn(params: Any, inputs: jax.Array, **kwargs: Any) -> jax.Array:
        W, b = params
        if padding is Padding.CIRCULAR and not transpose:
            out = run(circular_pad(inputs, filter_shape, strides, in_axes), W)
        elif padding is Padding.CIRCULAR:
            same = jax.eval_shape(lax_conv("SAME"), inputs, W).shape
            out = circular_fold(run(inputs, W), out_axes, same)
        else:
            out = run(inputs, W)
        if parameterization == "ntk":
            out = (W_std / fan_in(inputs.shape) ** 0.5) * out
            return out if b is None else out + b_std * b
        out = out / s[0] ** 0.5
        return out if b is None else out + b

    def mask_fn(mask: jax.Array, input_shape: Any) -> jax.Array:
        """Outputs are masked where their whole window is (channels collapsed)."""
        mask = jnp.all(mask, axis=lhs_spec.index("C"), keepdims=True)
        if transpose:
            filters = iter(filter_shape)
            ones = jnp.ones(tuple(1 if c in "IO" else next(filters) for c in rhs_spec))
            spread = lax_conv(shape_padding)(mask.astype(ones.dtype), ones)
            return spread > 0
        mask = pool_mask(
            mask, filter_shape, strides, shape_padding, lhs_spec.index("N"), lhs_spec.index("C")
        )
        return jnp.transpose(mask, tuple(lhs_spec.index(c) for c in out_spec))

    return init_fn, masked(apply_fn, mask_fn), KernelFn(name, None)


_CONV_ARGS = """
    Args:
        out_chan: output channels (``out_chan * s[1]`` under ``'standard'``{local}).
        filter_shape: spatial filter shape, e.g. ``(3, 3)``.
        strides: spatial strides; ``None`` means ones.
        padding: ``'VALID'``, ``'SAME'`` or ``'CIRCULAR'`` (periodic), or a
            :class:`Padding`.
        W_std: weight standard deviation.
        b_std: bias standard deviation; ``None`` means no bias.
        dimension_numbers: ``(lhs_spec, rhs_spec, out_spec)`` as in
            :func:`jax.lax.conv_general_dilated`; ``None`` means channels-last
            (``NHWC``, ``HWIO``, ``NHWC`` for 2D filters).
        parameterization: ``'ntk'`` or ``'standard'``.
        s: ``'standard'`` only: width scalings ``(input, output)`` of the layer.
"""


def Conv(
    out_chan: int,
    filter_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str | Padding = "VALID",
    W_std: float = 1.0,
    b_std: float | None = None,
    dimension_numbers: tuple[str, str, str] | None = None,
    parameterization: str = "ntk",
    s: tuple[int, int] = (1, 1),
) -> Layer:
    return _conv(
        "Conv",
        out_chan,
        filter_shape,
        strides,
        padding,
        W_std,
        b_std,
        dimension_numbers,
        parameterization,
        s,
        transpose=False,
        shared=True,
    )


Conv.__doc__ = (
    """Convolution, by default on ``NHWC`` inputs with ``HWIO`` kernels.
"""
    + _CONV_ARGS.format(local="")
    + """
    Returns:
        ``(init_fn, apply_fn, kernel_fn)``. Params ``(W, b)``: ``W`` laid out by
        ``rhs_spec`` (``(H, W, in_chan, out_chan)`` by default); ``b`` of shape
        ``(1, 1, 1, out_chan)`` (``out_chan`` at the ``C`` of ``out_spec``).
        ``fan_in = in_chan * prod(filter_shape)``. ``kernel_fn`` raises
        :class:`~bigntk.errors.UnsupportedLayerError`.
"""
)


def ConvTranspose(
    out_chan: int,
    filter_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str | Padding = "VALID",
    W_std: float = 1.0,
    b_std: float | None = None,
    dimension_numbers: tuple[str, str, str] | None = None,
    parameterization: str = "ntk",
    s: tuple[int, int] = (1, 1),
) -> Layer:
    return _conv(
        "ConvTranspose",
        out_chan,
        filter_shape,
        strides,
        padding,
        W_std,
        b_std,
        dimension_numbers,
        parameterization,
        s,
        transpose=True,
        shared=True,
    )


ConvTranspose.__doc__ = (
    """Transpose convolution, :func:`jax.lax.conv_transpose` (``transpose_kernel=False``).
"""
    + _CONV_ARGS.format(local="")
    + """
    Returns:
        ``(init_fn, apply_fn, kernel_fn)``. Params ``(W, b)`` laid out as for
        :func:`Conv` (``W`` of shape ``(H, W, in_chan, out_chan)`` by default).
        ``kernel_fn`` raises :class:`~bigntk.errors.UnsupportedLayerError`.
"""
)


def ConvLocal(
    out_chan: int,
    filter_shape: Sequence[int],
    strides: Sequence[int] | None = None,
    padding: str | Padding = "VALID",
    W_std: float = 1.0,
    b_std: float | None = None,
    dimension_numbers: tuple[str, str, str] | None = None,
    parameterization: str = "ntk",
    s: tuple[int, int] = (1, 1),
) -> Layer:
    return _conv(
        "ConvLocal",
        out_chan,
        filter_shape,
        strides,
        padding,
        W_std,
        b_std,
        dimension_numbers,
        parameterization,
        s,
        transpose=False,
        shared=False,
    )


ConvLocal.__doc__ = (
    """Unshared convolution (locally connected layer), a separate filter per position.

    Runs :func:`jax.lax.conv_general_dilated_local`.
"""
    + _CONV_ARGS.format(local="; like Neural Tangents, ``ConvLocal`` ignores ``s[1]``")
    + """
    Returns:
        ``(init_fn, apply_fn, kernel_fn)``. Params ``(W, b)``: ``W`` laid out by
        ``rhs_spec`` with the *output* spatial sizes in the spatial places and
        ``in_chan * prod(filter_shape)`` at ``I`` (e.g. ``(H_out, W_out,
        in_chan * fh * fw, out_chan)``); ``b`` has the output shape with a
        batch size of one (a bias per position and channel). ``kernel_fn``
        raises :class:`~bigntk.errors.UnsupportedLayerError`.
"""
)
