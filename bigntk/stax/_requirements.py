"""Helpers of Neural Tangents for custom layers: ``layer``, ``requires``, ``Bool``, ``Diagonal``.

With them, a layer written for Neural Tangents, e.g.::

    @stax.layer
    @stax.supports_masking(remask_kernel=False)
    def Scale(c):
        init_fn = lambda rng, input_shape: (input_shape, ())
        apply_fn = lambda params, x, **kwargs: c * x

        @stax.requires(diagonal_spatial=stax.Diagonal())
        def kernel_fn(k, **kwargs):
            return k.replace(nngp=c**2 * k.nngp)

        return init_fn, apply_fn, kernel_fn

runs unchanged with bigntk: ``init_fn`` and ``apply_fn`` (hence the empirical
kernels) work; the user's ``kernel_fn`` acts on NT's ``Kernel`` objects, which
bigntk does not have, so the layer's ``kernel_fn`` raises
:class:`~bigntk.errors.UnsupportedLayerError`. ``Bool`` and ``Diagonal`` keep
NT's algebra (``&``, ``>>``, ``<<``) for code that computes with them.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable
from typing import Any

from bigntk.stax._layer import KernelFn, Layer

__all__ = ["Bool", "Diagonal", "layer", "requires"]


class Bool(enum.IntEnum):
    """Three-valued logic: ``NO < MAYBE < YES``; ``a & b`` is the smaller."""

    NO = 0
    MAYBE = 1
    YES = 2

    def __and__(self, other: Any) -> Bool:
        return Bool(min(self, other))

    __rand__ = __and__


@dataclasses.dataclass(frozen=True)
class Diagonal:
    """Whether a kernel may keep only its diagonal (batch or spatial) entries.

    Attributes:
        input: may this layer's *input* kernel be diagonal-only (``YES``),
            only if its off-diagonal entries are zero (``MAYBE``), or not (``NO``).
        output: may the kernels from this layer on be diagonal-only (``YES``),
            right after it but maybe not later (``MAYBE``), or not (``NO``).
    """

    input: Bool = Bool.YES
    output: Bool = Bool.NO

    def __rshift__(self, other: Diagonal) -> Diagonal:
        """Requirement of applying ``self``'s layer, then ``other``'s."""
        if self.output == Bool.YES:
            return self
        if self.output > Bool.NO and other.input > Bool.NO:
            first = self.input
        elif self.output == Bool.NO and other.input < Bool.YES:
            first = Bool.NO
        else:
            first = Bool(min(self.input, other.input))
        return Diagonal(input=first, output=other.output)

    def __lshift__(self, other: Diagonal) -> Diagonal:
        """Requirement of applying ``other``'s layer, then ``self``'s."""
        return other >> self

    def __and__(self, other: Diagonal) -> Diagonal:
        """Requirement of two layers in parallel."""
        return Diagonal(input=self.input & other.input, output=self.output & other.output)

    __rand__ = __and__

    def __bool__(self) -> bool:
        return self.input == Bool.YES and self.output > Bool.NO


def requires(**static_reqs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Record a ``kernel_fn``'s input requirements (``batch_axis``, ``diagonal_spatial``, ...).

    bigntk keeps them in the ``input_req`` attribute, as Neural Tangents
    does, and otherwise leaves ``kernel_fn`` unchanged.
    """

    def decorate(kernel_fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(kernel_fn)
        def kernel_fn_with_reqs(*args: Any, **kwargs: Any) -> Any:
            return kernel_fn(*args, **kwargs)

        kernel_fn_with_reqs.input_req = dict(static_reqs)
        return kernel_fn_with_reqs

    return decorate


def layer(layer_fn: Callable[..., Any]) -> Callable[..., Layer]:
    """Make a factory of ``(init_fn, apply_fn, kernel_fn)`` a bigntk layer.

    A ``kernel_fn`` that is not a bigntk ``KernelFn`` (e.g. one written for
    Neural Tangents' ``Kernel`` objects) is replaced by one without closed
    form, which raises :class:`~bigntk.errors.UnsupportedLayerError` when
    called; ``init_fn`` and ``apply_fn`` are kept.
    """
    name = getattr(layer_fn, "__name__", "layer")

    @functools.wraps(layer_fn)
    def new_layer(*args: Any, **kwargs: Any) -> Layer:
        init_fn, apply_fn, kernel_fn = layer_fn(*args, **kwargs)
        if not isinstance(kernel_fn, KernelFn):
            kernel_fn = KernelFn(name, None)
        return init_fn, apply_fn, kernel_fn

    return new_layer
