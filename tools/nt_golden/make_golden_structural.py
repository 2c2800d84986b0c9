r"""Golden numbers from the real Neural Tangents 0.6.5 for the structural ``stax`` layers.

Covers the layers beyond ``make_golden.py``'s: ``Conv(padding='CIRCULAR')``,
``ConvTranspose``, ``ConvLocal``, ``DotGeneral``, ``Index``/``Slice``,
``ImageResize``, ``FanInProd``, ``repeat``, ``Aggregate`` (dense and sparse),
``GlobalSelfAttention`` and masking (``mask_constant`` + ``unmask_fn``).
Writes ``tests/data/nt_golden_structural.npz``; ``tests/test_stax_structural.py``
only reads it. Runs in the NT virtualenv of ``tools/nt_golden/README.md``::

    /work/nt-venv/bin/python tools/nt_golden/make_golden_structural.py

For each case: inputs (numpy ``default_rng(SEED + case index)``), NT's params
from ``init_fn(PRNGKey(0), x1.shape)``, outputs of ``apply_fn`` on ``x1`` and
``x2``, and the empirical NNGP and NTK (``trace_axes=(-1,)``; NTK from
implementation 1, checked against implementation 2) for ``x2`` given and
``x2=None``. Everything is float64.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platform_name", "cpu")

import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(
    os.path.dirname(os.path.dirname(HERE)), "tests", "data", "nt_golden_structural.npz"
)
SEED = 4321

# `definition` is evaluated with stax (NT's here, bigntk's in the tests), jnp and np.
# `kwargs` (optional) is evaluated with x1, x2, rng (a numpy Generator), jnp, np and
# gives apply_fn's keyword arguments for x1 and for x2: {name: (for_x1, for_x2)}.
# `f` is 'apply' or 'unmask' (stax.unmask_fn(apply_fn), for masked cases).
CASES = {
    "conv_circular": dict(
        definition="stax.serial(stax.Conv(3, (3, 2), strides=(2, 1), padding='CIRCULAR', "
        "b_std=0.1), stax.Relu(), stax.Conv(2, (2, 2), padding='CIRCULAR'), stax.Flatten())",
        x1=(3, 5, 4, 2),
        x2=(2, 5, 4, 2),
    ),
    "conv_transpose": dict(
        definition="stax.serial(stax.ConvTranspose(3, (3, 3), strides=(2, 2), padding='SAME', "
        "b_std=0.2), stax.Relu(), stax.ConvTranspose(2, (2, 3), padding='VALID'), "
        "stax.Flatten())",
        x1=(3, 3, 4, 2),
        x2=(2, 3, 4, 2),
    ),
    "conv_transpose_circular": dict(
        definition="stax.serial(stax.ConvTranspose(3, (3, 4), strides=(2, 1), "
        "padding='CIRCULAR', b_std=0.1), stax.Erf(), stax.ConvTranspose(2, (2, 3), "
        "strides=(1, 2), padding='CIRCULAR', dimension_numbers=('NHWC', 'OIHW', 'NCHW')), "
        "stax.Flatten())",
        x1=(3, 3, 4, 2),
        x2=(2, 3, 4, 2),
    ),
    "conv_local": dict(
        definition="stax.serial(stax.ConvLocal(3, (2, 2), strides=(1, 2), padding='SAME', "
        "b_std=0.1), stax.Relu(), stax.ConvLocal(2, (3, 1), padding='CIRCULAR'), "
        "stax.Flatten())",
        x1=(3, 4, 5, 2),
        x2=(2, 4, 5, 2),
    ),
    "conv_nchw_standard": dict(
        definition="stax.serial(stax.ConvLocal(3, (2, 2), W_std=1.3, b_std=0.2, "
        "dimension_numbers=('NCHW', 'OIHW', 'NCHW'), parameterization='standard', s=(2, 3)), "
        "stax.Relu(), stax.ConvTranspose(2, (2, 2), strides=(2, 1), b_std=0.1, "
        "dimension_numbers=('NCHW', 'IOHW', 'NHWC'), parameterization='standard', s=(3, 2)), "
        "stax.Flatten())",
        x1=(3, 2, 4, 3),
        x2=(2, 2, 4, 3),
    ),
    "dot_general": dict(
        definition="stax.serial(stax.Conv(4, (2,), padding='SAME'), stax.Relu(), "
        "stax.DotGeneral(rhs=jnp.array([[1., -1., 0.5], [0.2, 2., 1.], [0., 1., -3.], "
        "[1., 1., 1.]]), dimension_numbers=(((1,), (0,)), ((), ()))), stax.DotGeneral(rhs=2.), "
        "stax.DotGeneral(lhs=jnp.array([[0., 1., 2.], [1., 0., -1.]]), "
        "dimension_numbers=(((1,), (2,)), ((), ()))), stax.Flatten(batch_axis=1))",
        x1=(3, 4, 2),
        x2=(2, 4, 2),
    ),
    "index": dict(
        definition="stax.serial(stax.Conv(4, (2, 2), padding='SAME'), stax.Relu(), "
        "stax.Index(stax.Slice[:, ::2, 1:, :]), stax.Conv(3, (2, 2)), "
        "stax.Index(stax.Slice[:, 0, ...]), stax.Flatten())",
        x1=(3, 5, 4, 2),
        x2=(2, 5, 4, 2),
    ),
    "image_resize": dict(
        definition="stax.serial(stax.Conv(3, (2, 2), padding='SAME'), "
        "stax.ImageResize((-1, 6, 3, -1), 'linear'), stax.Erf(), "
        "stax.ImageResize((-1, 4, 5, -1), 'nearest'), stax.Conv(2, (2, 2)), "
        "stax.ImageResize((-1, 2, 2, -1), 'cubic'), stax.Flatten())",
        x1=(3, 4, 4, 2),
        x2=(2, 4, 4, 2),
    ),
    "fan_in_prod": dict(
        definition="stax.serial(stax.Dense(6, b_std=0.1), stax.FanOut(3), "
        "stax.parallel(stax.Erf(), stax.serial(stax.Relu(), stax.Dense(6)), stax.Identity()), "
        "stax.FanInProd(), stax.Dense(2))",
        x1=(3, 4),
        x2=(2, 4),
    ),
    "repeat": dict(
        definition="stax.serial(stax.Dense(5), stax.repeat(stax.serial(stax.Relu(), "
        "stax.Dense(5, W_std=1.2, b_std=0.1)), 3))",
        x1=(3, 4),
        x2=(2, 4),
    ),
    "aggregate_dense": dict(
        definition="stax.serial(stax.Dense(4, b_std=0.1), stax.Aggregate(aggregate_axis=1), "
        "stax.Relu(), stax.Aggregate(), stax.GlobalAvgPool())",
        x1=(3, 5, 2),
        x2=(2, 5, 2),
        kwargs="{'pattern': (rng.standard_normal((3, 5, 5)), rng.standard_normal((2, 5, 5)))}",
    ),
    "aggregate_dense_2d_nchw": dict(
        definition="stax.serial(stax.Conv(3, (1, 1), dimension_numbers=('NCHW', 'OIHW', "
        "'NCHW')), stax.Aggregate(aggregate_axis=(2, 3), channel_axis=1, "
        "to_dense=lambda p: p * 2.0), stax.Relu(), stax.Flatten())",
        x1=(3, 2, 3, 2),
        x2=(2, 2, 3, 2),
        kwargs="{'pattern': ((rng.random((3, 3, 2, 3, 2)) < 0.5) * 1.0, "
        "(rng.random((2, 3, 2, 3, 2)) < 0.5) * 1.0)}",
    ),
    "aggregate_sparse": dict(
        definition="stax.serial(stax.Dense(4, b_std=0.1), stax.Aggregate(aggregate_axis=1, "
        "implementation='SPARSE'), stax.Relu(), stax.Aggregate(aggregate_axis=(1,), "
        "implementation='SPARSE'), stax.GlobalAvgPool())",
        x1=(3, 5, 2),
        x2=(2, 5, 2),
        # heads of -1 are padding; tails of -1 index from the end (NT's behaviour)
        kwargs="{'pattern': (np.concatenate([rng.integers(0, 5, (3, 7, 2)), "
        "np.array([[[1, -1]], [[2, -1]], [[-1, 3]]])], 1), rng.integers(0, 5, (2, 6, 2)))}",
    ),
    "aggregate_sparse_2d": dict(
        definition="stax.serial(stax.Conv(3, (1, 1)), stax.Aggregate(aggregate_axis=(1, 2), "
        "implementation='SPARSE'), stax.Relu(), stax.Flatten())",
        x1=(3, 3, 2, 2),
        x2=(2, 3, 2, 2),
        kwargs="{'pattern': (np.stack([rng.integers(0, 3, (3, 6, 2)), "
        "rng.integers(0, 2, (3, 6, 2))], 2), np.stack([rng.integers(0, 3, (2, 5, 2)), "
        "rng.integers(0, 2, (2, 5, 2))], 2))}",
    ),
    "attention_softmax": dict(
        definition="stax.serial(stax.GlobalSelfAttention(5, 4, 3, 2, linear_scaling=False, "
        "W_key_std=1.1, W_value_std=0.9, W_query_std=1.3, W_out_std=1.2, b_std=0.1), "
        "stax.GlobalAvgPool())",
        x1=(3, 4, 3),
        x2=(2, 4, 3),
    ),
    "attention_relu_abs": dict(
        definition="stax.serial(stax.GlobalSelfAttention(5, 4, 3, 2, linear_scaling=True, "
        "attention_mechanism='RELU'), stax.Erf(), stax.GlobalSelfAttention(3, 3, 2, 3, "
        "linear_scaling=False, attention_mechanism='ABS', b_std=0.2), stax.GlobalAvgPool())",
        x1=(3, 4, 3),
        x2=(2, 4, 3),
    ),
    "attention_pos_emb_sum_2d": dict(
        definition="stax.serial(stax.GlobalSelfAttention(4, 3, 3, 2, linear_scaling=False, "
        "pos_emb_type='SUM', pos_emb_decay_fn=lambda d: jnp.exp(-d), pos_emb_p_norm=1.5, "
        "W_pos_emb_std=0.7), stax.GlobalAvgPool())",
        x1=(3, 3, 2, 2),
        x2=(2, 3, 2, 2),
    ),
    "attention_pos_emb_concat_nchw": dict(
        definition="stax.serial(stax.GlobalSelfAttention(4, 3, 2, 2, linear_scaling=False, "
        "attention_mechanism='IDENTITY', pos_emb_type='CONCAT', n_chan_pos_emb=3, "
        "val_pos_emb=True, channel_axis=1), stax.Flatten())",
        x1=(3, 2, 5),
        x2=(2, 2, 5),
    ),
    "attention_pos_emb_concat_keys_only": dict(
        definition="stax.serial(stax.GlobalSelfAttention(3, 3, 2, 2, linear_scaling=True, "
        "pos_emb_type='CONCAT', b_std=0.3), stax.GlobalAvgPool())",
        x1=(3, 5, 2),
        x2=(2, 5, 2),
    ),
    "masked_attention": dict(
        definition="stax.serial(stax.GlobalSelfAttention(5, 4, 3, 2, linear_scaling=False, "
        "pos_emb_type='SUM'), stax.LayerNorm(), stax.GlobalSelfAttention(3, 3, 3, 2, "
        "attention_mechanism='RELU'), stax.GlobalAvgPool())",
        x1=(3, 5, 3),
        x2=(2, 5, 3),
        mask=dict(constant=-10.0, lengths1=(5, 3, 2), lengths2=(4, 1)),
    ),
    "masked_conv": dict(
        definition="stax.serial(stax.Conv(3, (2,), padding='SAME'), stax.Erf(), "
        "stax.FanOut(2), stax.parallel(stax.Identity(), stax.Dense(3)), stax.FanInSum(), "
        "stax.AvgPool((2,), strides=(2,)), stax.Conv(2, (2,), padding='SAME', b_std=0.1), "
        "stax.GlobalAvgPool())",
        x1=(3, 6, 2),
        x2=(2, 6, 2),
        mask=dict(constant=-10.0, lengths1=(6, 4, 1), lengths2=(3, 5)),
    ),
    "masked_flatten": dict(
        definition="stax.serial(stax.Dense(3), stax.FanOut(2), stax.parallel(stax.Relu(), "
        "stax.Dense(2)), stax.FanInConcat(), stax.Flatten(), stax.Dense(2))",
        x1=(3, 4, 2),
        x2=(2, 4, 2),
        mask=dict(constant=-10.0, lengths1=(4, 2, 0), lengths2=(3, 4)),
    ),
}


def build(definition):
    return eval(definition, {"stax": stax, "jnp": jnp, "np": np})  # noqa: S307 (our constant)


def masked_inputs(x, lengths, constant):
    """Positions at and after ``lengths[n]`` along axis 1 hold ``constant`` (all channels)."""
    x = np.array(x)
    for n, length in enumerate(lengths):
        x[n, length:] = constant
    return x


def max_rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-300))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    arrays, cases_meta = {}, {}
    for ci, (case, spec) in enumerate(CASES.items()):
        init_fn, apply_fn, _ = build(spec["definition"])
        rng = np.random.default_rng(SEED + ci)
        x1 = rng.standard_normal(spec["x1"])
        x2 = rng.standard_normal(spec["x2"])
        kw = {}
        mask = spec.get("mask")
        if mask is not None:
            x1 = masked_inputs(x1, mask["lengths1"], mask["constant"])
            x2 = masked_inputs(x2, mask["lengths2"], mask["constant"])
            kw["mask_constant"] = mask["constant"]
        split = {}
        if "kwargs" in spec:
            split = eval(spec["kwargs"], {"rng": rng, "np": np, "jnp": jnp})  # noqa: S307
            for name, (v1, v2) in split.items():
                arrays[f"{case}/kwarg/{name}/1"] = np.asarray(v1)
                arrays[f"{case}/kwarg/{name}/2"] = np.asarray(v2)
        f = stax.unmask_fn(apply_fn) if mask is not None else apply_fn
        _, params = init_fn(jax.random.PRNGKey(0), x1.shape)
        leaves = jax.tree_util.tree_leaves(params)
        treedef = jax.tree_util.tree_structure(params)
        out1 = f(params, x1, **kw, **{k: v[0] for k, v in split.items()})
        out2 = f(params, x2, **kw, **{k: v[1] for k, v in split.items()})
        arrays[f"{case}/x1"], arrays[f"{case}/x2"] = x1, x2
        arrays[f"{case}/out1"], arrays[f"{case}/out2"] = np.asarray(out1), np.asarray(out2)
        for i, leaf in enumerate(leaves):
            assert leaf.dtype == jnp.float64, (case, leaf.dtype)
            arrays[f"{case}/param/{i}"] = np.asarray(leaf)
        arrays[f"{case}/treedef"] = np.array(str(treedef))
        kernel_kw = dict(kw, **{k: tuple(jnp.asarray(a) for a in v) for k, v in split.items()})
        diffs = {}
        for mode in ("x2", "self"):
            xx2 = x2 if mode == "x2" else None
            if mode == "self":
                kernel_kw = dict(kw, **{k: (jnp.asarray(v[0]),) * 2 for k, v in split.items()})
            nngp = nt.empirical_nngp_fn(f)(x1, xx2, params, **kernel_kw)
            ntk1 = nt.empirical_ntk_fn(f, implementation=1)(x1, xx2, params, **kernel_kw)
            ntk2 = nt.empirical_ntk_fn(f, implementation=2)(x1, xx2, params, **kernel_kw)
            np.testing.assert_allclose(ntk2, ntk1, rtol=1e-9, atol=1e-11)
            diffs[mode] = max_rel(ntk2, ntk1)
            arrays[f"{case}/nngp/{mode}"] = np.asarray(nngp)
            arrays[f"{case}/ntk/{mode}"] = np.asarray(ntk1)
        cases_meta[case] = dict(
            definition=spec["definition"],
            x1_shape=list(x1.shape),
            x2_shape=list(x2.shape),
            out_shape=list(np.shape(out1)),
            kwargs=sorted(split),
            mask_constant=None if mask is None else mask["constant"],
            n_param_leaves=len(leaves),
            n_params=int(sum(leaf.size for leaf in leaves)),
            treedef=str(treedef),
            ntk_impl_1_vs_2_max_rel_diff=diffs,
        )
        print(
            f"{case:36s} out{tuple(np.shape(out1))} params {cases_meta[case]['n_params']:5d} "
            f"impl1 vs 2: {max(diffs.values()):.1e}",
            flush=True,
        )
    meta = dict(
        generator="tools/nt_golden/make_golden_structural.py",
        versions=dict(
            neural_tangents=nt.__version__,
            jax=jax.__version__,
            numpy=np.__version__,
            python=sys.version.split()[0],
        ),
        cases=cases_meta,
    )
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out}: {len(arrays)} arrays, {os.path.getsize(args.out) / 1e6:.3f} MB")


if __name__ == "__main__":
    main()
