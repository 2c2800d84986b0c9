"""Dropout, with Neural Tangents' convention that ``rate`` is the *keep* probability."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from bigntk.errors import LayerArgumentError
from bigntk.stax._layer import KernelFn, Layer
from bigntk.stax._masking import masked

__all__ = ["Dropout"]


def Dropout(rate: float, mode: str = "train") -> Layer:
    """Dropout (params ``()``), as ``jax.example_libraries.stax.Dropout``.

    In ``'train'`` mode each entry is kept with probability ``rate`` and scaled
    by ``1 / rate``, otherwise set to zero: ``rate=1`` keeps everything. The
    mask is ``jax.random.bernoulli(rng, rate, inputs.shape)``, so a given key
    drops the same entries as Neural Tangents.

    Args:
        rate: keep probability, in ``(0, 1]``.
        mode: ``'train'`` or ``'test'`` (the identity).

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``. ``apply_fn(params, inputs, rng=key)``
        needs ``rng`` in ``'train'`` mode; unlike Neural Tangents it does not in
        ``'test'`` mode. ``kernel_fn`` is the identity in ``'test'`` mode and
        raises :class:`~bigntk.errors.UnsupportedLayerError` in ``'train'`` mode.
    """
    if mode not in ("train", "test"):
        raise LayerArgumentError(f"expected Dropout mode 'train' or 'test', got {mode!r} instead.")
    if not 0.0 < rate <= 1.0:
        raise LayerArgumentError(
            f"expected Dropout rate (the keep probability) in (0, 1], got {rate} instead."
        )

    def init_fn(rng: jax.Array, input_shape: Any) -> tuple[Any, tuple[()]]:
        return input_shape, ()

    def apply_fn(params: Any, inputs: jax.Array, **kwargs: Any) -> jax.Array:
        if mode == "test":
            return inputs
        rng = kwargs.get("rng")
        if rng is None:
            raise LayerArgumentError(
                "Dropout in 'train' mode expected a PRNG key, got rng=None instead; call "
                "apply_fn(params, inputs, rng=jax.random.key(0))."
            )
        keep = jax.random.bernoulli(rng, rate, inputs.shape)
        return jnp.where(keep, inputs / rate, jnp.zeros((), inputs.dtype))

    transform = (lambda state: state) if mode == "test" else None
    return init_fn, masked(apply_fn), KernelFn("Dropout", transform)
