r"""Golden numbers from real Neural Tangents 0.6.5 for the nonlinearities and sum pooling.

A sibling of ``make_golden.py`` (same pinned virtualenv, see
``tools/nt_golden/README.md``): for every case, a small network around one
layer is run in NT, and ``tests/data/nt_golden_layers.npz`` gets its params,
inputs, outputs, empirical NNGP / NTK and NT's closed-form ``kernel_fn``.
``tests/test_stax_layers.py`` reads it. Run from the repo root::

    /work/nt-venv/bin/python tools/nt_golden/make_golden_layers.py [--out PATH]

Everything is float64 (``jax_enable_x64``) on CPU; rerunning gives the same
arrays (only the recorded warning texts may differ, e.g. in object addresses).
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import sys
import warnings

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platform_name", "cpu")

import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_OUT = os.path.join(REPO, "tests", "data", "nt_golden_layers.npz")
SEED_PARAMS = 0  # jax.random.PRNGKey(SEED_PARAMS) for init_fn
SEED_INPUTS = 4321  # numpy.random.default_rng(SEED_INPUTS + case index)
RTOL, ATOL = 1e-9, 1e-11  # agreement required between NTK implementations 1 and 2

FLAT = ((4, 5), (3, 5))


def around(layer: str, width: int = 8) -> str:
    """A small fully connected network with ``layer`` as its nonlinearity."""
    return (
        f"stax.serial(stax.Dense({width}, W_std=1.3, b_std=0.2), stax.{layer}, "
        f"stax.Dense(3, W_std=1.1, b_std=0.1))"
    )


ERF_NNGP = (
    "lambda c, v1, v2: jnp.arcsin(2 * c / jnp.sqrt((1 + 2 * v1) * (1 + 2 * v2))) * 2 / jnp.pi"
)

# name -> definition, input shapes, and options:
#   apply=False: NT's apply_fn raises (kernel-only layer): no outputs / empirical kernels;
#   mask=dict(constant, lengths1, lengths2): positions >= lengths[n] along axis 1 hold
#   `constant`; apply_fn runs as stax.unmask_fn(apply_fn)(..., mask_constant=constant) and
#   kernel_fn is not called (bigntk's closed forms take no masks);
#   unit_norm=True: inputs rescaled to |x|**2 = d (unit pre-activation variance after
#   Dense(W_std=1) without bias, as NT's Hermite kernel assumes).
CASES = {
    "abrelu": dict(definition=around("ABRelu(-0.4, 1.3)"), shapes=FLAT),
    "leaky_relu": dict(definition=around("LeakyRelu(0.1)"), shapes=FLAT),
    "abs": dict(definition=around("Abs()"), shapes=FLAT),
    "sign": dict(definition=around("Sign()"), shapes=FLAT),
    "sin": dict(definition=around("Sin(a=1.2, b=0.7, c=0.3)"), shapes=FLAT),
    "cos": dict(definition=around("Cos(a=0.9, b=1.1, c=-0.2)"), shapes=FLAT),
    "rbf": dict(definition=around("Rbf(gamma=0.6)"), shapes=FLAT),
    "exp": dict(definition=around("Exp(a=0.8, b=0.5)"), shapes=FLAT),
    "gaussian": dict(definition=around("Gaussian(a=1.1, b=-0.6)"), shapes=FLAT),
    "gabor": dict(definition=around("Gabor()"), shapes=FLAT),
    "sigmoid_like": dict(definition=around("Sigmoid_like()"), shapes=FLAT),
    "exp_normalized": dict(
        definition=around("ExpNormalized(gamma=0.8, shift=-0.5)"), shapes=FLAT, apply=False
    ),
    "exp_normalized_clip": dict(
        definition=around("ExpNormalized(gamma=1.5, shift=-1, do_clip=True)"),
        shapes=FLAT,
        apply=False,
    ),
    "hermite3_unit": dict(
        definition="stax.serial(stax.Dense(8), stax.Hermite(3), stax.Dense(3, b_std=0.1))",
        shapes=FLAT,
        unit_norm=True,
    ),
    "hermite2": dict(definition=around("Hermite(2)"), shapes=FLAT),
    "monomial0": dict(definition=around("Monomial(0)"), shapes=FLAT),
    "monomial2": dict(definition=around("Monomial(2)"), shapes=FLAT),
    "monomial3": dict(definition=around("Monomial(3)"), shapes=FLAT),
    "monomial5": dict(definition=around("Monomial(5)"), shapes=FLAT),
    "rectified_monomial0": dict(definition=around("RectifiedMonomial(0)"), shapes=FLAT),
    "rectified_monomial1": dict(definition=around("RectifiedMonomial(1)"), shapes=FLAT),
    "rectified_monomial2": dict(definition=around("RectifiedMonomial(2)"), shapes=FLAT),
    "rectified_monomial3": dict(definition=around("RectifiedMonomial(3)"), shapes=FLAT),
    "polynomial": dict(definition=around("Polynomial([0.3, -1.0, 0.5, 0.2])"), shapes=FLAT),
    "elementwise_erf": dict(
        definition=around(f"Elementwise(jax.scipy.special.erf, {ERF_NNGP})"), shapes=FLAT
    ),
    "elementwise_numerical": dict(
        definition=around("ElementwiseNumerical(jnp.tanh, deg=20)"), shapes=FLAT
    ),
    "deep_mix": dict(
        definition=(
            "stax.serial(stax.Dense(8, W_std=1.2, b_std=0.1), stax.Sin(), "
            "stax.Dense(8, W_std=1.5), stax.Gaussian(), stax.Dense(8, b_std=0.3), "
            "stax.LeakyRelu(0.2), stax.Dense(2))"
        ),
        shapes=FLAT,
    ),
    "sumpool_inputs": dict(
        definition=(
            "stax.serial(stax.SumPool((2,), padding='SAME'), stax.Dense(8, b_std=0.1), "
            "stax.Relu(), stax.GlobalSumPool(), stax.Dense(2))"
        ),
        shapes=((4, 6, 3), (3, 6, 3)),
    ),
    "sumpool_hidden": dict(
        definition=(
            "stax.serial(stax.Dense(6, b_std=0.1), stax.Erf(), "
            "stax.SumPool((2, 2), strides=(1, 2), padding='SAME'), stax.Dense(6), "
            "stax.Flatten(), stax.Dense(2))"
        ),
        shapes=((4, 5, 4, 3), (3, 5, 4, 3)),
    ),
    "sumpool_valid_strided": dict(
        definition=(
            "stax.serial(stax.Dense(6), stax.Abs(), stax.SumPool((3, 2), strides=(2, 1)), "
            "stax.Dense(4, b_std=0.2), stax.Flatten(), stax.Dense(2))"
        ),
        shapes=((4, 7, 4, 2), (3, 7, 4, 2)),
    ),
    "sumpool_stride_only": dict(
        definition=(
            "stax.serial(stax.Dense(6, b_std=0.1), stax.SumPool((1, 1), strides=(2, 1)), "
            "stax.Relu(), stax.Dense(4), stax.Flatten(), stax.Dense(2))"
        ),
        shapes=((4, 5, 3, 2), (3, 5, 3, 2)),
    ),
    "global_sumpool": dict(
        definition=(
            "stax.serial(stax.Dense(8, b_std=0.1), stax.Relu(), stax.GlobalSumPool(), "
            "stax.Dense(2))"
        ),
        shapes=((4, 4, 3, 2), (3, 4, 3, 2)),
    ),
    "avgpool_inputs": dict(
        definition=(
            "stax.serial(stax.AvgPool((3,), padding='SAME', normalize_edges=True), "
            "stax.Dense(8, b_std=0.1), stax.Abs(), stax.Dense(8), stax.Relu(), "
            "stax.GlobalAvgPool(), stax.Dense(2))"
        ),
        shapes=((4, 6, 3), (3, 6, 3)),
    ),
    "avgpool_hidden": dict(
        definition=(
            "stax.serial(stax.Dense(6, b_std=0.1), stax.Relu(), "
            "stax.AvgPool((2, 3), strides=(2, 1), padding='SAME'), stax.Dense(5), "
            "stax.AvgPool((2, 2), normalize_edges=True), stax.Flatten(), stax.Dense(2))"
        ),
        shapes=((4, 5, 4, 2), (3, 5, 4, 2)),
    ),
    "global_avgpool": dict(
        definition=(
            "stax.serial(stax.Dense(6, W_std=1.5), stax.Erf(), stax.GlobalAvgPool(), stax.Dense(2))"
        ),
        shapes=((4, 4, 3, 2), (3, 4, 3, 2)),
    ),
    "masked_sumpool": dict(
        definition=(
            "stax.serial(stax.Dense(4, b_std=0.1), stax.Sin(), "
            "stax.SumPool((2,), strides=(2,), padding='SAME'), stax.Dense(3), stax.Gabor(), "
            "stax.GlobalSumPool(), stax.Dense(2))"
        ),
        shapes=((3, 6, 2), (2, 6, 2)),
        mask=dict(constant=-10.0, lengths1=(6, 3, 1), lengths2=(4, 2)),
    ),
    "global_sumpool_nchw": dict(
        definition=(
            "stax.serial(stax.Conv(4, (2, 2), dimension_numbers=('NCHW', 'OIHW', 'NCHW')), "
            "stax.GlobalSumPool(channel_axis=1), stax.Dense(2))"
        ),
        shapes=((4, 2, 4, 3), (3, 2, 4, 3)),
    ),
    # CIRCULAR: asymmetric wrap-around (pads (1, 2) along length 6; (1, 1) and (0, 1) in 2D)
    "sumpool_circular_inputs": dict(
        definition=(
            "stax.serial(stax.SumPool((4,), padding='CIRCULAR'), stax.Dense(8, b_std=0.1), "
            "stax.Erf(), stax.GlobalSumPool(), stax.Dense(2))"
        ),
        shapes=((4, 6, 3), (3, 6, 3)),
    ),
    "avgpool_circular_hidden": dict(
        definition=(
            "stax.serial(stax.Dense(6, b_std=0.1), stax.Relu(), "
            "stax.AvgPool((3, 2), strides=(2, 1), padding='CIRCULAR', normalize_edges=True), "
            "stax.Dense(4), stax.Flatten(), stax.Dense(2))"
        ),
        shapes=((4, 5, 4, 2), (3, 5, 4, 2)),
    ),
}


# layers whose signatures (parameter names, order and defaults) are recorded
SIGNATURES = [
    "ABRelu",
    "Abs",
    "Cos",
    "Elementwise",
    "ElementwiseNumerical",
    "Exp",
    "ExpNormalized",
    "Gabor",
    "Gaussian",
    "GlobalSumPool",
    "Hermite",
    "LeakyRelu",
    "Monomial",
    "Polynomial",
    "Rbf",
    "RectifiedMonomial",
    "Sigmoid_like",
    "Sign",
    "Sin",
    "SumPool",
]


def signature(fn) -> list:
    """``[[name, repr(default) or None], ...]`` of ``fn``'s parameters, in order."""
    params = inspect.signature(fn).parameters.values()
    return [[p.name, None if p.default is p.empty else repr(p.default)] for p in params]


def build(definition):
    return eval(definition, {"stax": stax, "jnp": jnp, "jax": jax})  # noqa: S307 (constant)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    arrays, cases_meta, failures = {}, {}, []
    for ci, (case, spec) in enumerate(CASES.items()):
        print(f"== {case}", flush=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            init_fn, apply_fn, kernel_fn = build(spec["definition"])
        rng = np.random.default_rng(SEED_INPUTS + ci)
        x1, x2 = (rng.standard_normal(s) for s in spec["shapes"])
        if spec.get("unit_norm"):
            x1, x2 = (x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True)) for x in (x1, x2))
        mask = spec.get("mask")
        if mask is not None:
            x1, x2 = np.array(x1), np.array(x2)
            for x, lengths in ((x1, mask["lengths1"]), (x2, mask["lengths2"])):
                for n, length in enumerate(lengths):
                    x[n, length:] = mask["constant"]
            apply_fn = functools.partial(stax.unmask_fn(apply_fn), mask_constant=mask["constant"])
        _, params = init_fn(jax.random.PRNGKey(SEED_PARAMS), x1.shape)
        leaves = jax.tree_util.tree_leaves(params)
        assert all(leaf.dtype == jnp.float64 for leaf in leaves), case
        arrays[f"{case}/x1"], arrays[f"{case}/x2"] = x1, x2
        for i, leaf in enumerate(leaves):
            arrays[f"{case}/param/{i}"] = np.asarray(leaf)
        kinds = []
        if spec.get("apply", True):
            arrays[f"{case}/out1"] = np.asarray(apply_fn(params, x1))
            arrays[f"{case}/out2"] = np.asarray(apply_fn(params, x2))
            for mode, second in (("x2", x2), ("self", None)):
                nngp = nt.empirical_nngp_fn(apply_fn)(x1, second, params)
                ntk1, ntk2 = (
                    nt.empirical_ntk_fn(apply_fn, implementation=i)(x1, second, params)
                    for i in (1, 2)
                )
                np.testing.assert_allclose(ntk2, ntk1, rtol=RTOL, atol=ATOL)
                arrays[f"{case}/nngp/{mode}"] = np.asarray(nngp)
                arrays[f"{case}/ntk/{mode}"] = np.asarray(ntk1)
            kinds.append("empirical")
        for mode, second in (("x2", x2), ("self", None)) if mask is None else ():
            try:
                with warnings.catch_warnings(record=True) as kernel_warnings:
                    warnings.simplefilter("always")
                    k = kernel_fn(x1, second, ("nngp", "ntk"))
                caught.extend(kernel_warnings)
                arrays[f"{case}/inf/nngp/{mode}"] = np.asarray(k.nngp)
                arrays[f"{case}/inf/ntk/{mode}"] = np.asarray(k.ntk)
                if "inf" not in kinds:
                    kinds.append("inf")
            except Exception as e:  # noqa: BLE001 (recorded, see README)
                failures.append(dict(case=case, x2=mode, error=f"{type(e).__name__}: {e}"[:300]))
        nan_entries = {
            key.split("/", 1)[1]: int(np.isnan(v).sum())
            for key, v in arrays.items()
            if key.startswith(f"{case}/") and np.isnan(v).any()
        }
        cases_meta[case] = dict(
            definition=spec["definition"],
            x1_shape=list(x1.shape),
            x2_shape=list(x2.shape),
            unit_norm=bool(spec.get("unit_norm", False)),
            mask_constant=None if mask is None else mask["constant"],
            n_param_leaves=len(leaves),
            treedef=str(jax.tree_util.tree_structure(params)),
            kinds=kinds,
            nan_entries=nan_entries,
            warnings=sorted({str(w.message)[:120] for w in caught}),
        )
        print(f"   {kinds} nan={nan_entries}", flush=True)
    meta = dict(
        generator="tools/nt_golden/make_golden_layers.py",
        versions=dict(
            neural_tangents=nt.__version__,
            jax=jax.__version__,
            numpy=np.__version__,
            python=sys.version.split()[0],
        ),
        params_seed=f"jax.random.PRNGKey({SEED_PARAMS})",
        inputs_seed=f"numpy.random.default_rng({SEED_INPUTS} + case index)",
        eval_namespace=["stax", "jnp", "jax"],
        signatures={name: signature(getattr(stax, name)) for name in SIGNATURES},
        cases=cases_meta,
        failures=failures,
    )
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out}: {len(arrays)} arrays, {os.path.getsize(args.out) / 1e3:.0f} kB")
    for failure in failures:
        print("   kernel_fn failed:", failure)


if __name__ == "__main__":
    main()
