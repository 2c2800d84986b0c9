"""STRUCTURED_DERIVATIVES on a corpus of small functions, one or two primitives each."""

import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import bigntk as nt
from bigntk.empirical._structured_derivatives import _compat
from bigntk.empirical._structured_derivatives._derivatives import derivatives
from bigntk.empirical._structured_derivatives._graph import linear_graph
from tests.oracle import oracle

SD = nt.NtkImplementation.STRUCTURED_DERIVATIVES
LOGGER = "bigntk.empirical.structured"


@dataclasses.dataclass
class Case:
    f: Callable
    params: Any
    x1: Any
    x2: Any
    vmap: bool = False  # f is batch-separable along axis 0: also test vmap_axes=0
    fallback: bool = False  # some parameter use has no structure rule
    tol: float = 1e-9


def r(*shape, seed=0):
    return np.random.default_rng(seed + 7 * len(shape) + sum(shape)).normal(size=shape)


def X(*feature_shape, n=(2, 2)):
    """Two batches of inputs with ``n`` examples each (equal counts halve the oracle's work)."""
    return r(n[0], *feature_shape, seed=1), r(n[1], *feature_shape, seed=2)


def case(f, params, features=(3,), **kw):
    return Case(f, params, *X(*features), **kw)


def _conv(x, w, strides=(1, 1), padding="SAME", dn=("NHWC", "HWIO", "NHWC"), **kw):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn, **kw)


def _idx(x, n):
    """Integer indices in [0, n) computed from float inputs."""
    return (jnp.abs(x) * 7).astype(jnp.int32) % n


def _sum(ab, x):
    return ab[0] * x + ab[1]


@jax.custom_vjp
def _half_grad(x):
    return x


_half_grad.defvjp(lambda x: (x, None), lambda _, g: (0.5 * g,))  # linear, unlike autodiff


CORPUS: dict[str, Case] = {
    # --- elementwise -----------------------------------------------------------------------
    "add_vector": case(lambda p, x: x + p, r(3), vmap=True),
    "add_scalar": case(lambda p, x: x + p, r()),
    "add_row": case(lambda p, x: x + p, r(1, 3), vmap=True),
    "add_self": case(lambda p, x: x * (p + p), r(3)),
    "sub_left": case(lambda p, x: p - x, r(3), vmap=True),
    "sub_right": case(lambda p, x: x - p, r(3)),
    "sub_two": case(lambda p, x: x * (p[0] - p[1]), [r(3), r(3, seed=3)]),
    "neg": case(lambda p, x: -p * x, r(3)),
    "mul_vector": case(lambda p, x: x * p, r(3), vmap=True),
    "mul_scalar": case(lambda p, x: x * p, r()),
    "mul_literal": case(lambda p, x: 2.5 * p + x, r(3)),
    "mul_square": case(lambda p, x: x * p * p, r(3)),
    "mul_matrix": case(lambda p, x: x * p, r(4, 3), features=(4, 3)),
    "mul_outer": case(lambda p, x: x[:, :, None] * p[None, None, :], r(4)),
    "div": case(lambda p, x: p / (x**2 + 1.0), r(3), vmap=True),
    "div_scalar": case(lambda p, x: x * (p / 3.0), r(3)),
    "sin": case(lambda p, x: jnp.sin(p) * x, r(3)),
    "exp_sum": case(lambda p, x: jnp.exp(x * p).sum(-1, keepdims=True), r(3), vmap=True),
    "integer_pow": case(lambda p, x: x * p**3, r(3)),
    "sqrt": case(lambda p, x: jnp.sqrt(p**2 + x**2), r(3)),
    "abs": case(lambda p, x: jnp.abs(p) * x, r(3)),
    "maximum": case(lambda p, x: jnp.maximum(p, x), r(3)),
    "clip": case(lambda p, x: jnp.clip(p, -0.3, 0.3) * x, r(3)),
    "where_left": case(lambda p, x: jnp.where(x > 0, p, 0.0), r(3), vmap=True),
    "where_right": case(lambda p, x: jnp.where(x > 0, x, p), r(3)),
    "select_n_three": case(
        lambda p, x: lax.select_n(_idx(x, 3), x, 2 * x, jnp.broadcast_to(p, x.shape)), r(3)
    ),
    "clamp": case(lambda p, x: lax.clamp(-0.5, p * x, 0.5), r(3)),
    "where_scalar_pred": case(lambda p, x: jnp.where(p[0] > 0, p, -p) * x, r(3)),
    "leaky_relu": case(lambda p, x: x * jnp.where(p > 0, p, 0.1 * p), r(3)),
    "convert_f32": case(lambda p, x: x * p.astype(jnp.float32), r(3), tol=1e-6),
    "copy": case(lambda p, x: x * jnp.array(p, copy=True), r(3)),
    "scalar_output": Case(lambda p, x: jnp.sum(x) * p, r(), r(3), r(4)),
    "scalar_param_output": Case(lambda p, x: jnp.sin(p) * 2.0, r(), r(3), r(4)),
    # --- products -------------------------------------------------------------------------
    "matmul": case(lambda p, x: x @ p, r(3, 4), vmap=True),
    "matmul_uneven": Case(lambda p, x: x @ p, r(3, 4), *X(3, n=(2, 3)), vmap=True),
    "conv_uneven": Case(lambda p, x: _conv(x, p), r(2, 2, 2, 3), *X(3, 3, 2, n=(3, 1)), vmap=True),
    "embedding_uneven": Case(lambda p, x: p[_idx(x[:, 0], 5)], r(5, 3), *X(3, n=(1, 3))),
    "matmul_lhs": case(lambda p, x: p @ x.T, r(4, 3)),
    "matvec": case(lambda p, x: x @ p, r(3), vmap=True),
    "vecmat_lhs": case(lambda p, x: (p @ x.T)[None], r(3)),
    "matmul_chain": case(lambda p, x: x @ p[0] @ p[1], [r(3, 4), r(4, 2)], vmap=True),
    "matmul_transposed": case(lambda p, x: x @ p.T, r(4, 3), vmap=True),
    "matmul_scaled": case(lambda p, x: x @ (0.5 * p), r(3, 4), vmap=True),
    "matmul_f32": case(lambda p, x: x @ p.astype(jnp.float32), r(3, 4), tol=1e-6),
    "matmul_reshaped": case(lambda p, x: x @ p.reshape(3, 4), r(12), vmap=True),
    "matmul_expanded": case(lambda p, x: x @ p[None, :], r(5), features=(1,)),
    "matmul_shared": case(lambda p, x: jnp.tanh(x @ p) @ p.T, r(3, 3), vmap=True),
    "matmul_twice": case(lambda p, x: x @ p + (x**2) @ p, r(3, 2)),
    "einsum_batch": case(lambda p, x: jnp.einsum("bij,nbj->nbi", p, x), r(2, 4, 3), (2, 3)),
    "einsum_batch_lhs": case(lambda p, x: jnp.einsum("nbj,bji->nbi", x, p), r(2, 3, 4), (2, 3)),
    "einsum_three": case(
        lambda p, x: jnp.einsum("nj,jk,kl->nl", x, p[0], p[1]), [r(3, 2), r(2, 2)]
    ),
    "einsum_contract_all": case(lambda p, x: jnp.einsum("nij,ij->n", x, p), r(2, 3), (2, 3)),
    "tensordot": case(lambda p, x: jnp.tensordot(x, p, ((1, 2), (1, 0))), r(3, 2, 4), (2, 3)),
    "dot_preferred": case(
        lambda p, x: lax.dot_general(
            x, p, (((1,), (0,)), ((), ())), preferred_element_type=p.dtype
        ),
        r(3, 2),
    ),
    "outer": case(lambda p, x: jnp.outer(x[:, 0], p), r(4)),
    "kron": case(lambda p, x: jnp.kron(x, p), r(2), features=(2,)),
    "vmap_inside": case(lambda p, x: jax.vmap(lambda xi: p @ xi)(x), r(4, 3), vmap=True),
    "zero_size_param": case(lambda p, x: x @ p[0] + jnp.sum(p[1]), [r(3, 2), r(0, 3)]),
    "zero_size_contraction": case(lambda p, x: x[:, :0] @ p + 1.0, r(0, 2)),
    "zero_size_output": case(lambda p, x: x[:, :0] * p[:0], r(3)),
    # --- convolutions ---------------------------------------------------------------------
    "conv_same": case(lambda p, x: _conv(x, p), r(3, 3, 2, 3), (4, 4, 2), vmap=True),
    "conv_valid": case(lambda p, x: _conv(x, p, padding="VALID"), r(2, 3, 2, 3), (4, 5, 2)),
    "conv_strided": case(lambda p, x: _conv(x, p, (2, 1)), r(3, 2, 2, 2), (5, 4, 2), vmap=True),
    "conv_padding_pairs": case(
        lambda p, x: _conv(x, p, padding=((1, 0), (2, 1))), r(2, 2, 2, 1), (3, 3, 2)
    ),
    "conv_rhs_dilation": case(
        lambda p, x: _conv(x, p, rhs_dilation=(2, 1)), r(2, 2, 1, 2), (5, 3, 1)
    ),
    "conv_lhs_dilation": case(
        lambda p, x: _conv(x, p, padding=((1, 1), (0, 1)), lhs_dilation=(2, 2)),
        r(2, 2, 1, 2),
        (3, 3, 1),
    ),
    "conv_transpose": case(
        lambda p, x: lax.conv_transpose(
            x, p, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        ),
        r(2, 2, 2, 1),
        (3, 3, 2),
    ),
    "conv_nchw": case(
        lambda p, x: _conv(x, p, dn=("NCHW", "OIHW", "NCHW")), r(3, 2, 2, 2), (2, 4, 3)
    ),
    "conv_mixed_layout": case(
        lambda p, x: _conv(x, p, dn=("NCHW", "HWIO", "NHWC")), r(2, 2, 2, 3), (2, 4, 3)
    ),
    "conv_1d": case(
        lambda p, x: _conv(x, p, (1,), dn=("NWC", "WIO", "NWC")), r(3, 2, 2), (5, 2), vmap=True
    ),
    "conv_3d": case(
        lambda p, x: _conv(x, p, (1, 1, 1), dn=("NDHWC", "DHWIO", "NDHWC")),
        r(2, 1, 2, 1, 2),
        (3, 2, 3, 1),
    ),
    "conv_depthwise": case(
        lambda p, x: _conv(x, p, feature_group_count=2), r(2, 2, 1, 4), (3, 3, 2), vmap=True
    ),
    "conv_grouped": case(lambda p, x: _conv(x, p, feature_group_count=2), r(2, 2, 2, 2), (3, 3, 4)),
    "conv_batch_grouped": case(
        lambda p, x: _conv(x[:2], p, batch_group_count=2)[None],
        r(2, 2, 2, 2),
        (3, 3, 2),
        fallback=True,
    ),
    "conv_scaled_kernel": case(lambda p, x: _conv(x, 2.0 * p), r(2, 2, 2, 2), (3, 3, 2)),
    "conv_param_input": case(
        lambda p, x: _conv(p, x[0][..., None], padding="VALID"),
        r(1, 4, 4, 1),
        (2, 2, 1),
        fallback=True,
    ),
    "conv_bias_relu": case(
        lambda p, x: jax.nn.relu(_conv(x, p[0]) + p[1]), [r(2, 2, 2, 3), r(3)], (3, 3, 2)
    ),
    # --- shapes ---------------------------------------------------------------------------
    "broadcast": case(lambda p, x: x[:, None, :] * jnp.broadcast_to(p, (2, 3)), r(3)),
    "broadcast_ones": case(lambda p, x: x + jnp.broadcast_to(p, (1, 3)), r(1, 1)),
    "broadcast_new_axes": case(lambda p, x: x[:, :, None] + p[None, None, :], r(2)),
    "reshape_merge": case(lambda p, x: x * p.reshape(-1), r(3, 2), features=(6,)),
    "reshape_split": case(lambda p, x: x * p.reshape(2, 3), r(6), features=(2, 3)),
    "reshape_regroup": case(lambda p, x: x * p.reshape(3, 2), r(2, 3), features=(3, 2)),
    "expand_dims": case(lambda p, x: x * jnp.expand_dims(p, 0), r(3)),
    "squeeze": case(lambda p, x: x * jnp.squeeze(p), r(1, 3, 1)),
    "transpose": case(lambda p, x: x * p.T, r(3, 2), features=(2, 3)),
    "transpose_3d": case(lambda p, x: x * jnp.transpose(p, (2, 0, 1)), r(2, 3, 2), (2, 2, 3)),
    "reduce_sum": case(lambda p, x: x * p.sum(0), r(4, 3)),
    "reduce_sum_all": case(lambda p, x: x * p.sum(), r(2, 3)),
    "reduce_sum_middle": case(lambda p, x: x @ p.sum(1), r(3, 2, 4)),
    "mean": case(lambda p, x: x * jnp.mean(p, axis=-1), r(3, 2)),
    "concatenate": case(lambda p, x: jnp.concatenate([x, p[None].repeat(x.shape[0], 0)], 1), r(2)),
    "concatenate_self": case(lambda p, x: x * jnp.concatenate([p, p[::-1]]), r(2), features=(4,)),
    "pad": case(lambda p, x: x * jnp.pad(p, (1, 2)), r(2), features=(5,)),
    "pad_interior": case(
        lambda p, x: x * lax.pad(p, 0.0, ((1, 0, 1), (-1, 1, 0))), r(3, 3), features=(6, 3)
    ),
    "rev": case(lambda p, x: x * p[::-1], r(3), vmap=True),
    "slice": case(lambda p, x: x * p[1:4], r(5)),
    "slice_strided": case(lambda p, x: x * p[::2, 1:], r(5, 3), features=(3, 2)),
    "dynamic_slice": case(lambda p, x: x * lax.dynamic_slice(p, (_idx(x[0, 0], 3),), (3,)), r(5)),
    "dynamic_slice_clamped": case(
        lambda p, x: x * lax.dynamic_slice(p, (7, 0), (2, 3)), r(4, 3), features=(2, 3)
    ),
    "dynamic_slice_vmapped": case(
        lambda p, x: jax.vmap(lambda xi: xi * lax.dynamic_slice(p, (_idx(xi[0], 3),), (3,)))(x),
        r(5),
        vmap=True,
    ),
    "dynamic_update_slice_operand": case(
        lambda p, x: x * lax.dynamic_update_slice(p, jnp.zeros(2), (1,)), r(4), features=(4,)
    ),
    "dynamic_update_slice_update": case(
        lambda p, x: x * lax.dynamic_update_slice(jnp.ones(4), p, (_idx(x[0, 0], 3),)),
        r(2),
        features=(4,),
    ),
    "cumsum": case(lambda p, x: x * jnp.cumsum(p), r(3)),
    "cumsum_reverse": case(lambda p, x: x * lax.cumsum(p, axis=0, reverse=True), r(3)),
    "roll": case(lambda p, x: x * jnp.roll(p, 1), r(3)),
    "tile": case(lambda p, x: x * jnp.tile(p, 2), r(2), features=(4,)),
    "repeat": case(lambda p, x: x * jnp.repeat(p, 2), r(2), features=(4,)),
    "triu": case(lambda p, x: x * jnp.triu(p), r(3, 3), features=(3, 3)),
    "split": case(lambda p, x: x * jnp.split(p, [1])[1], r(4)),
    "diagonal": case(lambda p, x: x * jnp.diagonal(p), r(3, 3), fallback=True),  # via cond
    # --- pooling --------------------------------------------------------------------------
    "avg_pool": case(
        lambda p, x: lax.reduce_window(x * p, 0.0, lax.add, (1, 2, 2, 1), (1, 2, 1, 1), "VALID"),
        r(4, 3, 2),
        (4, 3, 2),
        vmap=True,
    ),
    "sum_pool_param": case(
        lambda p, x: x * lax.reduce_window(p, 0.0, lax.add, (2,), (1,), ((1, 0),)), r(3)
    ),
    "sum_pool_dilated": case(
        lambda p, x: x * lax.reduce_window(p, 0.0, lax.add, (2,), (2,), ((1, 1),), (2,), (1,)),
        r(3),
    ),
    "max_pool": case(
        lambda p, x: x * lax.reduce_window(p, -jnp.inf, lax.max, (2,), (1,), "VALID"),
        r(4),
        fallback=True,
    ),
    # --- lookups --------------------------------------------------------------------------
    "embedding": case(lambda p, x: p[_idx(x[:, 0], 5)], r(5, 3), vmap=True),
    "embedding_2d": case(lambda p, x: p[_idx(x, 5)].sum(1), r(5, 2), vmap=True),
    "take_clip": case(lambda p, x: jnp.take(p, _idx(x, 9) - 2, axis=0, mode="clip"), r(5)),
    "take_fill": case(
        lambda p, x: jnp.take(p, _idx(x, 9) - 2, axis=0, mode="fill", fill_value=0), r(5)
    ),
    "take_axis1": case(lambda p, x: jnp.take(p, _idx(x[:, 0], 4), axis=1).T, r(2, 4)),
    "gather_two_axes": case(lambda p, x: p[_idx(x[:, 0], 3), _idx(x[:, 1], 4)], r(3, 4)),
    "gather_window": case(lambda p, x: p[_idx(x[:, 0], 4), 1:3], r(4, 3)),
    "negative_index": case(lambda p, x: x * p[-1], r(3, 3)),
    "take_along_axis": case(
        lambda p, x: x * jnp.take_along_axis(p, jnp.array([[2, 0, 1]]), axis=0), r(3, 3)
    ),
    "sort": case(lambda p, x: x * jnp.sort(p), r(3)),
    "scatter_set": case(lambda p, x: x * p.at[1].set(0.0), r(3), fallback=True),
    "one_hot_mix": case(lambda p, x: jax.nn.one_hot(_idx(x[:, 0], 4), 4) @ p, r(4, 3)),
    # --- control flow and calls -----------------------------------------------------------
    "jit": case(lambda p, x: jax.jit(lambda a, b: a @ b)(x, p), r(3, 2), vmap=True),
    "nested_jit": case(lambda p, x: jax.jit(lambda a: jax.jit(jnp.tanh)(a @ p) * p[0])(x), r(3, 3)),
    "checkpoint": case(
        lambda p, x: jax.checkpoint(lambda a: jnp.sin(a @ p))(x), r(3, 2), vmap=True
    ),
    "relu": case(lambda p, x: jax.nn.relu(x @ p), r(3, 2)),
    "gelu": case(lambda p, x: jax.nn.gelu(x @ p), r(3, 2)),
    "softmax": case(lambda p, x: jax.nn.softmax(x @ p), r(3, 4), vmap=True),
    "logsumexp": case(lambda p, x: jax.nn.logsumexp(x @ p, axis=-1, keepdims=True), r(3, 4)),
    "layer_norm": case(
        lambda p, x: (x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1) * p,
        r(3),
    ),
    "custom_vjp": case(lambda p, x: _half_grad(x @ p), r(3, 2)),
    "custom_vjp_param": case(lambda p, x: _half_grad(p) * x, r(3), fallback=True),
    "cond_two_outputs": case(
        lambda p, x: _sum(lax.cond(x.sum() > 0, lambda: (p, 2 * p), lambda: (-p, p)), x),
        r(3),
        fallback=True,
    ),
    "cond_reduce": case(
        lambda p, x: x * lax.cond(x.sum() > 0, lambda: p[:2].sum(), lambda: p[1:].sum()),
        r(5),
        fallback=True,
    ),
    "cond": case(
        lambda p, x: lax.cond(x.sum() > 0, lambda: x @ p, lambda: -(x @ p)), r(3, 2), fallback=True
    ),
    "cond_outside": case(
        lambda p, x: lax.cond(x.sum() > 0, lambda a: a * 2.0, lambda a: -a, x @ p), r(3, 2)
    ),
    "switch": case(
        lambda p, x: (
            lax.switch(_idx(x[0, 0], 3), [lambda: p, lambda: 2 * p, lambda: jnp.sin(p)]) * x
        ),
        r(3),
        fallback=True,
    ),
    "scan": case(
        lambda p, x: lax.scan(lambda c, _: (jnp.tanh(c @ p), None), x, None, length=3)[0],
        r(3, 3),
        fallback=True,
    ),
    "fori_loop": case(
        lambda p, x: lax.fori_loop(0, 2, lambda i, c: c * p + 1.0, x), r(3), fallback=True
    ),
    "lax_map": case(lambda p, x: lax.map(lambda xi: xi @ p, x), r(3, 2), fallback=True),
    "linear_solve": case(
        lambda p, x: x * jnp.linalg.solve(jnp.eye(3) * 2 + 0.1, p), r(3), fallback=True
    ),
    "reduce_precision": case(
        lambda p, x: x * lax.reduce_precision(p, exponent_bits=11, mantissa_bits=52),
        r(3),
        fallback=True,
    ),
    "fft": case(lambda p, x: x * jnp.fft.fft(p).real, r(4), features=(4,)),
    # --- parameters -----------------------------------------------------------------------
    "param_is_output": Case(lambda p, x: p, r(3), *X(2)),
    "param_is_output_and_used": Case(lambda p, x: (p, x @ p), r(2), *X(2)),
    "param_output_twice": Case(lambda p, x: [p, x * 0 + p, p], r(2), *X(2)),
    "unused_param": case(lambda p, x: x @ p[0], [r(3, 2), r(4)]),
    "all_unused": case(lambda p, x: x * 2.0, r(3)),
    "integer_leaf": case(lambda p, x: x @ p["w"] * p["n"], {"w": r(3, 2), "n": np.int32(3)}),
    "dict_params": case(
        lambda p, x: jnp.tanh(x @ p["a"]["w"] + p["a"]["b"]) @ p["c"],
        {"a": {"w": r(3, 4), "b": r(4)}, "c": r(4, 2)},
        vmap=True,
    ),
    "pytree_output": case(lambda p, x: {"a": x @ p, "b": (x @ p).sum(-1)}, r(3, 2), vmap=True),
    "mixed_usage": case(lambda p, x: x * p + jnp.sin(p) + x @ jnp.outer(p, p), r(3)),
    "param_as_index_source": case(lambda p, x: x * p[jnp.argmax(p)], r(3)),
}


_F32 = ["matmul", "mul_vector", "conv_strided", "embedding", "broadcast", "where_left", "cumsum"]
_F32 += ["matmul_shared", "reduce_sum", "slice", "avg_pool", "conv_depthwise", "param_is_output"]


def _to32(tree):
    return jax.tree.map(lambda v: np.asarray(v, np.float32) if v.dtype == np.float64 else v, tree)


for _name in _F32:
    _c = CORPUS[_name]
    CORPUS[_name + "_f32"] = dataclasses.replace(
        _c, params=_to32(_c.params), x1=_to32(_c.x1), x2=_to32(_c.x2), tol=2e-5
    )


def _check(case, expected, vmap_axes=None):
    """Implementation 3 against the oracle's kernels ``expected`` (full output axes)."""
    with jax.numpy_rank_promotion("allow"):
        fn = nt.empirical_kernel_fn(case.f, (), (), vmap_axes, SD)
        got = jax.tree.leaves(fn(case.x1, case.x2, "ntk", case.params))
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        assert g.dtype == jnp.result_type(*jax.tree.leaves(case.params), *jax.tree.leaves(case.x1))
        scale = max(1.0, float(np.abs(e).max(initial=0)))
        np.testing.assert_allclose(np.asarray(g), e, rtol=case.tol, atol=case.tol * scale)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_against_oracle(name, caplog):
    c = CORPUS[name]
    with jax.numpy_rank_promotion("allow"):
        _, expected = oracle(jax.jit(c.f), c.params, c.x1, c.x2, (), ())
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        _check(c, expected)
    fell_back = [rec.getMessage() for rec in caplog.records if rec.name == LOGGER]
    assert bool(fell_back) == c.fallback, fell_back
    assert len(fell_back) == len(set(fell_back))  # once per primitive
    if c.vmap:
        _check(c, expected, vmap_axes=0)


def test_corpus_is_large_and_varied():
    assert len(CORPUS) >= 100
    assert sum(c.fallback for c in CORPUS.values()) >= 10
    assert sum(c.vmap for c in CORPUS.values()) >= 20


# --- the fallback ------------------------------------------------------------------------


@functools.cache
def _double_p():
    """A linear primitive no structure rule knows: ``x ↦ 2x``."""
    from jax.interpreters import ad, batching, mlir

    prim = jex.Primitive("bigntk_test_double")
    prim.def_impl(lambda x: 2 * x)
    prim.def_abstract_eval(lambda x: x)
    ad.deflinear2(prim, lambda ct, x: [prim.bind(ct)])
    batching.defvectorized(prim)
    mlir.register_lowering(prim, mlir.lower_fun(lambda x: 2 * x, multiple_results=False))
    return prim


@pytest.mark.parametrize("vmap_axes", [None, 0])
@pytest.mark.parametrize("x2_given", [True, False])
@pytest.mark.parametrize("width", [2, 12])  # dense dy/dw when y is small, a pull-back otherwise
def test_unknown_primitive_falls_back_and_logs_once(vmap_axes, x2_given, width, caplog):
    double = _double_p()

    def f(p, x):
        h = jnp.tanh(x @ double.bind(p["w"]))
        return h * double.bind(p["b"])[None] + double.bind(p["b"]).sum()

    params = {"w": r(3, width), "b": r(width)}
    x1, x2 = X(3)
    x2 = x2 if x2_given else None
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        got = nt.empirical_ntk_fn(f, (), (), vmap_axes, SD)(x1, x2, params)
    _, (expected,) = oracle(f, params, x1, x2, (), ())
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    messages = [rec.getMessage() for rec in caplog.records if rec.name == LOGGER]
    assert len(messages) == 1 and "'bigntk_test_double'" in messages[0]
    assert all(rec.levelno == logging.DEBUG for rec in caplog.records if rec.name == LOGGER)


# --- structure -----------------------------------------------------------------------------


def test_dense_weights_use_the_other_operand_not_the_jacobian():
    """For ``x @ W`` the factor is ``x`` and ``df/dy`` has the size of ``y``: no ``out × W``."""
    params = [r(5, 64), r(64), r(64, 3)]

    def g(p):
        h = jnp.tanh(X(5)[0] @ p[0] + p[1][None])
        return [h @ p[2]]

    d = derivatives(g, [jnp.asarray(v) for v in params])
    assert d.fallbacks == ()
    (w1,), (b1,), (w2,) = d.uses
    for use, y_shape in ((w1, (2, 64)), (b1, (1, 64)), (w2, (2, 3))):
        assert not use.key.startswith("w")  # no pull-back to df/dw
        assert d.df[use.key][0].shape == (2, 3, *y_shape)
    assert [a.shape for a in w1.factor.arrays] == [(2, 5)]
    assert [a.shape for a in w2.factor.arrays] == [(2, 64)]


def test_scaled_and_converted_weights_are_pushed_into_the_product():
    def g(p):
        return [X(5)[0] @ (2.0 * p[0]).astype(jnp.float32).T]

    d = derivatives(g, [jnp.asarray(r(7, 5))])
    ((use,),) = d.uses
    assert d.df[use.key][0].shape == (2, 7, 2, 7)  # at the product's output, not at W's size
    assert d.fallbacks == ()


# --- the JAX surface this relies on (fails loudly when JAX moves it) -----------------------


def test_jax_surface_used_by_the_compat_module():
    for name in ("Literal", "Var", "DropVar", "ClosedJaxpr", "Jaxpr", "Primitive"):
        assert getattr(_compat, name) is getattr(jex, name)
    assert callable(jex.Primitive.get_bind_params)


def test_calls_are_inlined_and_custom_vjp_is_transpose_only():
    @jax.jit
    def inner(a, b):
        return jax.checkpoint(lambda u: jnp.sin(u @ b))(a)

    def g(p):
        return [_half_grad(inner(X(3)[0], p[0])) + p[1][None]]

    _, graph = linear_graph(g, [jnp.ones((3, 2)), jnp.ones(2)])
    names = {e.name for e in graph.eqns}
    assert not names & set(_compat.CALL_PRIMITIVES), names
    assert "dot_general" in names
    assert names & _compat.TRANSPOSE_ONLY, names  # custom_vjp's linear part
    eqn = next(e for e in graph.eqns if e.name == "dot_general")
    args = [a.value if hasattr(a, "value") else jnp.ones((3, 2)) for a in eqn.ins]
    assert _compat.bind(eqn.primitive, eqn.params, args)[0].shape == (2, 2)


def test_integer_outputs_have_zero_ntk():
    def f(p, x):
        h = x @ p
        return h, jnp.argmax(h, -1)

    params = r(3, 2)
    x1, x2 = X(3)
    got = nt.empirical_ntk_fn(f, (), (), None, SD)(x1, x2, params)
    _, (expected,) = oracle(lambda p, x: f(p, x)[0], params, x1, x2, (), ())
    np.testing.assert_allclose(got[0], expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(got[1], np.zeros((2, 2)))
