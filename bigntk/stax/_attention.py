"""Global multi-head self-attention, ``GlobalSelfAttention``, with its two enums.

Attention runs over all spatial positions (all axes but batch and channel,
flattened). Parameters are ``(W_Q, W_K, W_V, W_O, b, pos_emb)`` drawn as in
Neural Tangents from ``split(rng, 6)`` (keys for Q, K, V, O, b, pos_emb), all
standard normal and scaled in ``apply_fn`` (NTK parameterization):

* ``W_Q``, ``W_K``: ``(n_heads, c_keys, n_chan_key)``; ``W_Q`` is ``None``
  under ``linear_scaling`` (queries use the key weights);
* ``W_V``: ``(n_heads, c_vals, n_chan_val)``; ``W_O``:
  ``(n_heads * n_chan_val, n_chan_out)``;
* ``b``: ``(1, ..., n_chan_out, ..., 1)`` at the channel axis, or ``None``;
* ``pos_emb``: the inputs' shape with batch size 1 and ``n_chan_pos_emb``
  channels, or ``None`` when ``pos_emb_type='NONE'``.

``c_keys`` / ``c_vals`` are the input channels, plus the positional channels
under ``'CONCAT'`` (for the values only with ``val_pos_emb``).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bigntk.errors import LayerArgumentError
from bigntk.stax._layer import KernelFn, Layer
from bigntk.stax._masking import all_masked, masked

__all__ = ["AttentionMechanism", "GlobalSelfAttention", "PositionalEmbedding"]

# masked logits before a softmax: finite, so that an all-masked row stays defined
_MASKED_LOGIT = -1e20


class PositionalEmbedding(enum.Enum):
    """Positional embeddings of :func:`GlobalSelfAttention`.

    Attributes:
        NONE: none.
        SUM: added to the inputs.
        CONCAT: concatenated to the inputs along the channel axis.
    """

    NONE = "NONE"
    SUM = "SUM"
    CONCAT = "CONCAT"


class AttentionMechanism(enum.Enum):
    """Map from query-key dot products to attention weights in :func:`GlobalSelfAttention`.

    Attributes:
        SOFTMAX: :func:`jax.nn.softmax` over the keys.
        IDENTITY: the dot products themselves.
        ABS: their absolute values.
        RELU: ``max(x, 0)``.
    """

    SOFTMAX = "SOFTMAX"
    IDENTITY = "IDENTITY"
    ABS = "ABS"
    RELU = "RELU"

    def fn(self) -> Callable[[jax.Array], jax.Array]:
        """The function applied to the dot products."""
        return {
            "SOFTMAX": jax.nn.softmax,
            "IDENTITY": lambda x: x,
            "ABS": jnp.abs,
            "RELU": lambda x: jnp.maximum(x, 0.0),
        }[self.value]


def _enum(cls: type[enum.Enum], value: Any, name: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        raise LayerArgumentError(
            f"expected GlobalSelfAttention {name} among {[m.value for m in cls]}, got "
            f"{value!r} instead."
        ) from None


@functools.lru_cache(maxsize=8)
def _pos_emb_cholesky(
    spatial_shape: tuple[int, ...], p_norm: float, decay_fn: Callable[[Any], Any]
) -> np.ndarray:
    """Cholesky factor of ``decay_fn(sum_axes |i_a - j_a| ** p_norm)``, shape ``(*S, *S)``."""
    grids = np.meshgrid(*(np.arange(n) for n in spatial_shape), indexing="ij")
    coords = np.stack([g.reshape(-1) for g in grids], axis=-1)  # (size, n_axes)
    dist = np.sum(np.abs(coords[:, None, :] - coords[None, :, :]) ** p_norm, axis=-1)
    with jax.ensure_compile_time_eval():
        cov = jnp.asarray(decay_fn(jnp.asarray(dist, dtype=float)))
        factor = np.asarray(jnp.linalg.cholesky(cov))
    return factor.reshape(spatial_shape * 2)


def GlobalSelfAttention(
    n_chan_out: int,
    n_chan_key: int,
    n_chan_val: int,
    n_heads: int,
    linear_scaling: bool = True,
    W_key_std: float = 1.0,
    W_value_std: float = 1.0,
    W_query_std: float = 1.0,
    W_out_std: float = 1.0,
    b_std: float | None = None,
    attention_mechanism: str | AttentionMechanism = "SOFTMAX",
    pos_emb_type: str | PositionalEmbedding = "NONE",
    pos_emb_p_norm: float = 2,
    pos_emb_decay_fn: Callable[[Any], Any] | None = None,
    n_chan_pos_emb: int | None = None,
    W_pos_emb_std: float = 1.0,
    val_pos_emb: bool = False,
    batch_axis: int = 0,
    channel_axis: int = -1,
) -> Layer:
    """Scaled dot-product self-attention over all spatial positions, with ``n_heads`` heads.

    Per head ``h``: ``G = mechanism(QK_std * Q K^T / (c * n_chan_key ** p))``
    with ``Q = x W_Q[h]``, ``K = x W_K[h]``, ``c`` the key inputs' channels and
    ``p = 1`` (``linear_scaling``, ``W_Q = W_K``) or ``1/2``; the output is
    ``OV_std / sqrt(n_chan_val * n_heads * c_v) * concat_h(G V_h) W_O (+ b_std * b)``
    with ``V_h = x_v W_V[h]``, ``QK_std = W_query_std * W_key_std`` and
    ``OV_std = W_out_std * W_value_std``.

    Args:
        n_chan_out: output channels.
        n_chan_key: channels of keys and queries.
        n_chan_val: channels of values.
        n_heads: number of heads.
        linear_scaling: ``True``: scale dot products by ``1 / n_chan_key`` and
            tie query and key weights; ``False``: ``1 / sqrt(n_chan_key)``,
            independent weights.
        W_key_std: key weight scale.
        W_value_std: value weight scale.
        W_query_std: query weight scale.
        W_out_std: output weight scale.
        b_std: bias scale; ``None`` means no bias.
        attention_mechanism: ``'SOFTMAX'``, ``'IDENTITY'``, ``'ABS'`` or ``'RELU'``.
        pos_emb_type: ``'NONE'``, ``'SUM'`` or ``'CONCAT'``.
        pos_emb_p_norm: ``p`` of the ``L_p ** p`` distance between positions
            fed to ``pos_emb_decay_fn``.
        pos_emb_decay_fn: ``None`` for independent embeddings per position, or
            a function of the distance array giving the embeddings'
            covariance across positions (embeddings are then the Cholesky
            factor of that covariance times the drawn ``pos_emb``).
        n_chan_pos_emb: channels of the embeddings; ``None`` means the inputs'.
        W_pos_emb_std: embedding scale.
        val_pos_emb: also use the embeddings for the values.
        batch_axis: batch axis of the inputs.
        channel_axis: channel axis of the inputs.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)``; params as in the module docstring.
        ``kernel_fn`` raises :class:`~bigntk.errors.UnsupportedLayerError`.
        Unlike Neural Tangents, ``init_fn`` does not warn that ``W_Q`` is
        ``None`` under ``linear_scaling``.
    """
    qk_std = W_query_std * W_key_std
    ov_std = W_out_std * W_value_std
    pos_emb_type = _enum(PositionalEmbedding, pos_emb_type, "pos_emb_type")
    mechanism = _enum(AttentionMechanism, attention_mechanism, "attention_mechanism")

    def init_fn(rng: jax.Array, input_shape: Sequence[int]) -> tuple[Any, Any]:
        input_shape = tuple(input_shape)
        channel = channel_axis % len(input_shape)
        output_shape = input_shape[:channel] + (n_chan_out,) + input_shape[channel + 1 :]
        rng_q, rng_k, rng_v, rng_o, rng_b, rng_pe = jax.random.split(rng, 6)
        c_keys = c_vals = input_shape[channel]
        pos_emb = None
        if pos_emb_type is not PositionalEmbedding.NONE:
            c_pos = c_keys if n_chan_pos_emb is None else n_chan_pos_emb
            shape = list(input_shape)
            shape[channel] = c_pos
            shape[batch_axis] = 1
            pos_emb = jax.random.normal(rng_pe, tuple(shape))
            if pos_emb_type is PositionalEmbedding.CONCAT:
                c_keys += c_pos
                c_vals += c_pos if val_pos_emb else 0
        W_k = jax.random.normal(rng_k, (n_heads, c_keys, n_chan_key))
        W_v = jax.random.normal(rng_v, (n_heads, c_vals, n_chan_val))
        W_o = jax.random.normal(rng_o, (n_chan_val * n_heads, n_chan_out))
        b = None
        if b_std is not None:
            b_shape = [1] * len(input_shape)
            b_shape[channel] = n_chan_out
            b = jax.random.normal(rng_b, tuple(b_shape))
        W_q = None if linear_scaling else jax.random.normal(rng_q, (n_heads, c_keys, n_chan_key))
        return output_shape, (W_q, W_k, W_v, W_o, b, pos_emb)

    def embed(
        pos_emb: jax.Array, spatial_axes: tuple[int, ...], mask: jax.Array | None
    ) -> jax.Array:
        """The positional embeddings added to / concatenated with the inputs."""
        if pos_emb_decay_fn is not None:
            spatial_shape = tuple(pos_emb.shape[a] for a in spatial_axes)
            factor = _pos_emb_cholesky(spatial_shape, pos_emb_p_norm, pos_emb_decay_fn)
            k = len(spatial_shape)
            mixed = jnp.tensordot(
                jnp.asarray(factor), pos_emb, (tuple(range(k, 2 * k)), spatial_axes)
            )
            pos_emb = jnp.moveaxis(mixed, tuple(range(k)), spatial_axes)
        if mask is not None:
            pos_emb = jnp.where(mask, jnp.zeros((), pos_emb.dtype), pos_emb)
        return W_pos_emb_std * pos_emb

    def tokens(x: jax.Array) -> jax.Array:
        """``(batch, positions, channels)``."""
        x = jnp.moveaxis(x, (batch_axis, channel_axis), (0, -1))
        return x.reshape(x.shape[0], -1, x.shape[-1])

    def apply_fn(
        params: Any, inputs: jax.Array, mask: jax.Array | None = None, **kwargs: Any
    ) -> jax.Array:
        W_q, W_k, W_v, W_o, b, pos_emb = params
        ndim = inputs.ndim
        batch, channel = batch_axis % ndim, channel_axis % ndim
        spatial_axes = tuple(a for a in range(ndim) if a not in (batch, channel))
        spatial_shape = tuple(inputs.shape[a] for a in spatial_axes)
        n = inputs.shape[batch]

        value_inputs = inputs
        if pos_emb_type is PositionalEmbedding.SUM:
            inputs = inputs + embed(pos_emb, spatial_axes, mask)
        elif pos_emb_type is PositionalEmbedding.CONCAT:
            emb = embed(pos_emb, spatial_axes, mask)
            shape = list(inputs.shape)
            shape[channel] = emb.shape[channel]
            inputs = jnp.concatenate([inputs, jnp.broadcast_to(emb, tuple(shape))], channel)
        if pos_emb_type is PositionalEmbedding.NONE or val_pos_emb:
            value_inputs = inputs

        x = tokens(inputs)  # (n, T, c)
        x_v = tokens(value_inputs)

        def project(t: jax.Array, W: jax.Array) -> jax.Array:
            return jnp.moveaxis(jnp.dot(t, W), 2, 0)  # (heads, n, T, chan)

        keys = project(x, W_k)
        queries = keys if linear_scaling else project(x, W_q)
        values = project(x_v, W_v)
        logits = jnp.matmul(queries, jnp.swapaxes(keys, -1, -2))
        logits = logits * (qk_std / (x.shape[-1] * n_chan_key ** (1 if linear_scaling else 0.5)))
        if mask is not None:
            key_mask = jnp.all(mask, axis=channel_axis, keepdims=True)
            key_mask = jnp.moveaxis(key_mask, (batch_axis, channel_axis), (0, -1))
            key_mask = key_mask.reshape(1, key_mask.shape[0], 1, -1)
            fill = _MASKED_LOGIT if mechanism is AttentionMechanism.SOFTMAX else 0.0
            logits = jnp.where(key_mask, jnp.asarray(fill, logits.dtype), logits)
        heads = jnp.matmul(mechanism.fn()(logits), values)  # (heads, n, T, n_chan_val)
        heads = jnp.moveaxis(heads, 0, -1)
        heads = heads.reshape(heads.shape[:-2] + (-1,))  # channel index: val * n_heads + head
        out = jnp.matmul(heads, W_o) * (ov_std / (n_chan_val * n_heads * x_v.shape[-1]) ** 0.5)
        out = out.reshape((n,) + spatial_shape + (n_chan_out,))
        out = jnp.moveaxis(out, (0, -1), (batch_axis, channel_axis))
        return out if b is None else out + b_std * b

    return (
        init_fn,
        masked(apply_fn, all_masked(channel_axis)),
        KernelFn("GlobalSelfAttention", None),
    )
