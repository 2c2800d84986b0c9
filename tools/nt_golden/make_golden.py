r"""Golden reference numbers computed by the real Neural Tangents (NT 0.6.5).

bigntk re-implements NT's empirical kernel API and an NT-compatible ``stax``
on current JAX.  NT itself no longer runs on current JAX, so this script runs
in a separate, pinned virtualenv (outside the repo) and writes
``tests/data/nt_golden.npz``; bigntk's tests only *read* that file.

Reproduce (from the repo root, on CPU; only PyPI is needed)::

    python3 -m venv /work/nt-venv
    /work/nt-venv/bin/pip install --no-deps neural-tangents==0.6.5
    /work/nt-venv/bin/pip install jax==0.4.23 jaxlib==0.4.23 "numpy<2" \
        "scipy<1.14" frozendict typing_extensions
    # NT's __init__ imports `experimental`, which needs TensorFlow: comment
    # out that single import in the installed copy (nothing else is changed).
    sed -i 's/^from \. import experimental$/# &  # disabled: needs TensorFlow/' \
        /work/nt-venv/lib/python3.11/site-packages/neural_tangents/__init__.py
    /work/nt-venv/bin/python tools/nt_golden/make_golden.py

Versions used to produce the committed file: neural-tangents 0.6.5,
jax/jaxlib 0.4.23, numpy 1.26.4, scipy 1.13.1, frozendict 2.5.1,
typing_extensions 4.16.0, ml_dtypes 0.5.4, opt_einsum 3.4.0, Python 3.11.

See ``tools/nt_golden/README.md`` for the key scheme and the cases.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platform_name", "cpu")

import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402
from neural_tangents import stax  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_OUT = os.path.join(REPO, "tests", "data", "nt_golden.npz")

# NTK implementations compared; the stored NTK is the one from IMPL_STORED.
IMPLS = (1, 2, 3)  # 1 JACOBIAN_CONTRACTION, 2 NTK_VECTOR_PRODUCTS,
# 3 STRUCTURED_DERIVATIVES (extra cross-check only)
IMPL_STORED = 1
RTOL, ATOL = 1e-9, 1e-11  # agreement required between implementations 1 & 2


# -- settings: name -> (trace_axes, diagonal_axes, x2 modes) -----------------
# Setting name: 't' + comma-joined trace_axes + '_d' + comma-joined
# diagonal_axes, e.g. 't-1_d' (NT default), 't_d' (no tracing), 't-1_d0',
# 't1,2_d3'.  x2 mode: 'x2' (x2 given) or 'self' (x2=None).
def setting_name(trace_axes, diagonal_axes):
    return (
        "t" + ",".join(str(a) for a in trace_axes) + "_d" + ",".join(str(a) for a in diagonal_axes)
    )


BOTH = ("x2", "self")
SELF = ("self",)
STD_SETTINGS = [
    ((-1,), (), BOTH),  # NT default
    ((), (), BOTH),  # full kernel
    ((-1,), (0,), SELF),  # batch diagonal (x2 must have same batch size)
]

# -- cases -------------------------------------------------------------------
# `definition` is evaluated with `stax` bound to neural_tangents.stax; bigntk
# tests can evaluate the very same string with `stax` bound to bigntk.stax.
CASES = {
    "cnn": dict(
        definition=(
            "stax.serial(stax.Conv(32, (3, 3)), stax.Relu(), "
            "stax.Conv(32, (3, 3)), stax.Relu(), stax.Conv(32, (3, 3)), "
            "stax.Flatten(), stax.Dense(10))"
        ),
        x1=(4, 8, 8, 3),
        x2=(3, 8, 8, 3),
        settings=STD_SETTINGS + [((1,), (), BOTH)],
    ),
    "fcn_erf_gelu": dict(
        definition=(
            "stax.serial(stax.Dense(64, W_std=1.5, b_std=0.1), stax.Erf(), "
            "stax.Dense(32, W_std=1.2, b_std=0.05), stax.Gelu(), "
            "stax.Dense(5, b_std=0.2))"
        ),
        x1=(4, 7),
        x2=(3, 7),
        settings=STD_SETTINGS,
    ),
    "fcn_standard": dict(
        definition=(
            "stax.serial("
            "stax.Dense(64, W_std=1.5, b_std=0.1, parameterization='standard'),"
            " stax.Erf(), "
            "stax.Dense(32, W_std=1.2, b_std=0.05, parameterization='standard'),"
            " stax.Gelu(), "
            "stax.Dense(5, b_std=0.2, parameterization='standard'))"
        ),
        x1=(4, 7),
        x2=(3, 7),
        settings=STD_SETTINGS,
    ),
    "fcn_relu": dict(
        definition=(
            "stax.serial(stax.Dense(512, W_std=1.4, b_std=0.1), stax.Relu(), "
            "stax.Dense(512, W_std=1.4, b_std=0.1), stax.Relu(), "
            "stax.Dense(3, b_std=0.1))"
        ),
        x1=(4, 6),
        x2=(3, 6),
        settings=STD_SETTINGS,
    ),
    "fcn_relu_standard": dict(
        definition=(
            "stax.serial("
            "stax.Dense(512, W_std=1.4, b_std=0.1, parameterization='standard'),"
            " stax.Relu(), "
            "stax.Dense(512, W_std=1.4, b_std=0.1, parameterization='standard'),"
            " stax.Relu(), "
            "stax.Dense(3, b_std=0.1, parameterization='standard'))"
        ),
        x1=(4, 6),
        x2=(3, 6),
        settings=STD_SETTINGS,
        # NT's standard init is the ntk init (same key, same N(0,1) draws)
        # times a per-leaf scale: W * W_std / sqrt(fan_in), b * b_std.  To
        # keep the file small the 2 MB of params are NOT stored again: leaf i
        # is exactly fcn_relu/param/{i} * {case}/param_scale[i] (checked
        # bitwise below).
        params_from="fcn_relu",
        param_scale=[1.4 / 6**0.5, 0.1, 1.4 / 512**0.5, 0.1, 1.0 / 512**0.5, 0.1],
    ),
    "fcn_erf_inf": dict(
        definition=("stax.serial(stax.Dense(256, b_std=0.3), stax.Erf(), stax.Dense(2))"),
        x1=(4, 7),
        x2=(3, 7),
        settings=STD_SETTINGS,
    ),
    "fcn_erf_abc": dict(
        definition=(
            "stax.serial(stax.Dense(256, b_std=0.3), stax.Erf(a=2., b=0.5, c=0.1), stax.Dense(2))"
        ),
        x1=(4, 7),
        x2=(3, 7),
        settings=STD_SETTINGS,
    ),
    "resnet": dict(
        definition=(
            "stax.serial(stax.Dense(16), stax.FanOut(2), "
            "stax.parallel(stax.serial(stax.Relu(), stax.Dense(16)), "
            "stax.Identity()), stax.FanInSum(), stax.LayerNorm(), "
            "stax.Dense(3))"
        ),
        x1=(4, 5),
        x2=(3, 5),
        settings=STD_SETTINGS,
    ),
    "conv_pool": dict(
        definition=(
            "stax.serial(stax.Conv(8, (3, 3), strides=(2, 2), padding='SAME',"
            " b_std=0.1), stax.Erf(), stax.AvgPool((2, 2)), "
            "stax.Conv(4, (2, 2)), stax.Relu(), stax.GlobalAvgPool(), "
            "stax.Dense(2))"
        ),
        x1=(4, 9, 9, 2),
        x2=(3, 9, 9, 2),
        settings=STD_SETTINGS,
    ),
    "conv_pool_branch": dict(
        definition=(
            "stax.serial(stax.Conv(8, (3, 3), strides=(2, 2), padding='SAME',"
            " b_std=0.1), stax.Erf(), stax.FanOut(2), "
            "stax.parallel(stax.Identity(), stax.Conv(8, (1, 1))), "
            "stax.FanInConcat(), stax.AvgPool((2, 2)), "
            "stax.Conv(4, (2, 2)), stax.Relu(), stax.GlobalAvgPool(), "
            "stax.Dense(2))"
        ),
        x1=(4, 9, 9, 2),
        x2=(3, 9, 9, 2),
        settings=STD_SETTINGS,
    ),
    "image_out": dict(
        definition=(
            "stax.serial(stax.Conv(4, (3, 3), padding='SAME'), stax.Relu(), "
            "stax.Conv(3, (3, 3), padding='SAME'))"
        ),
        # H != W on purpose (catches swapped spatial axes); small to keep the
        # full (trace_axes=()) kernel small.
        x1=(2, 4, 3, 2),
        x2=(3, 4, 3, 2),
        settings=[
            ((-1,), (), BOTH),
            ((), (), BOTH),
            ((-1,), (1,), BOTH),
            ((1, 2), (3,), BOTH),
            ((-1,), (0,), SELF),
        ],
    ),
}

SEED_PARAMS = 0  # jax.random.PRNGKey(SEED_PARAMS) for init_fn
SEED_INPUTS = 1234  # numpy.random.default_rng(SEED_INPUTS + case index)


def to_np(x):
    return np.asarray(x)


def max_rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.max(np.abs(a)), 1e-300) if a.size else 1.0
    return float(np.max(np.abs(a - b)) / scale) if a.size else 0.0


def build(definition):
    return eval(definition, {"stax": stax})  # noqa: S307 (our own constant)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--cases", nargs="*", default=None)
    args = ap.parse_args()

    arrays = {}
    index = []
    failures = []
    cases_meta = {}
    params_cache = {}

    for ci, (case, spec) in enumerate(CASES.items()):
        if args.cases and case not in args.cases:
            continue
        print(f"== {case}", flush=True)
        init_fn, apply_fn, kernel_fn = build(spec["definition"])
        rng = np.random.default_rng(SEED_INPUTS + ci)
        x1 = rng.standard_normal(spec["x1"])
        x2 = rng.standard_normal(spec["x2"])
        out_shape, params = init_fn(jax.random.PRNGKey(SEED_PARAMS), x1.shape)
        leaves = jax.tree_util.tree_leaves(params)
        treedef = jax.tree_util.tree_structure(params)
        params_cache[case] = leaves
        src = spec.get("params_from")
        if src is not None:
            scale = spec["param_scale"]
            derived = [np.asarray(a) * c for a, c in zip(params_cache[src], scale, strict=False)]
            same = len(params_cache[src]) == len(leaves) == len(scale) and all(
                np.array_equal(a, np.asarray(b)) for a, b in zip(derived, leaves, strict=False)
            )
            if not same:
                raise AssertionError(f"{case}: params are not {src} * scale")
            arrays[f"{case}/param_scale"] = np.asarray(scale, np.float64)
        for leaf in leaves:
            assert leaf.dtype == jnp.float64, (case, leaf.dtype)

        f = apply_fn
        out1 = f(params, x1)
        out2 = f(params, x2)
        assert out1.shape == tuple(out_shape), (out1.shape, out_shape)

        arrays[f"{case}/x1"] = x1
        arrays[f"{case}/x2"] = x2
        arrays[f"{case}/out1"] = to_np(out1)
        arrays[f"{case}/out2"] = to_np(out2)
        if src is None:
            for i, leaf in enumerate(leaves):
                arrays[f"{case}/param/{i}"] = to_np(leaf)
        arrays[f"{case}/treedef"] = np.array(str(treedef))
        arrays[f"{case}/param_shapes"] = np.array(json.dumps([list(l.shape) for l in leaves]))
        cases_meta[case] = dict(
            definition=spec["definition"],
            x1_shape=list(x1.shape),
            x2_shape=list(x2.shape),
            out_shape=list(out1.shape),
            params_seed=f"jax.random.PRNGKey({SEED_PARAMS})",
            params_from=src or case,
            param_scale=spec.get("param_scale"),
            n_param_leaves=len(leaves),
            n_params=int(sum(l.size for l in leaves)),
            treedef=str(treedef),
            param_shapes=[list(l.shape) for l in leaves],
        )

        # -- empirical kernels ----------------------------------------------------
        for trace_axes, diagonal_axes, modes in spec["settings"]:
            sname = setting_name(trace_axes, diagonal_axes)
            for mode in modes:
                xx2 = x2 if mode == "x2" else None
                base = dict(
                    case=case,
                    setting=sname,
                    trace_axes=list(trace_axes),
                    diagonal_axes=list(diagonal_axes),
                    x2=mode,
                )
                # NNGP (no implementation argument in NT).
                key = f"{case}/nngp/{sname}/{mode}"
                nngp = nt.empirical_nngp_fn(f, trace_axes, diagonal_axes)(x1, xx2, params)
                arrays[key] = to_np(nngp)
                index.append(
                    dict(base, key=key, kind="nngp", shape=list(nngp.shape), dtype=str(nngp.dtype))
                )
                # NTK with each implementation.
                ntks = {}
                for impl in IMPLS:
                    try:
                        ntks[impl] = to_np(
                            nt.empirical_ntk_fn(f, trace_axes, diagonal_axes, implementation=impl)(
                                x1, xx2, params
                            )
                        )
                    except Exception as e:  # noqa: BLE001
                        failures.append(
                            dict(
                                base,
                                what=f"empirical_ntk_fn impl={impl}",
                                error=f"{type(e).__name__}: {e}"[:500],
                            )
                        )
                if 1 not in ntks or 2 not in ntks:
                    raise RuntimeError(f"{case} {sname} {mode}: impl 1/2 failed")
                np.testing.assert_allclose(ntks[2], ntks[1], rtol=RTOL, atol=ATOL)
                assert ntks[1].shape == ntks[2].shape
                # empirical_kernel_fn must give the same numbers.
                for impl in (1, 2):
                    kf = nt.empirical_kernel_fn(f, trace_axes, diagonal_axes, implementation=impl)
                    both = kf(x1, xx2, ("nngp", "ntk"), params)
                    np.testing.assert_allclose(both.ntk, ntks[1], rtol=RTOL, atol=ATOL)
                    np.testing.assert_allclose(both.nngp, nngp, rtol=RTOL, atol=ATOL)
                    single = kf(x1, xx2, "ntk", params)
                    assert single.shape == ntks[1].shape
                key = f"{case}/ntk/{sname}/{mode}"
                arrays[key] = ntks[IMPL_STORED]
                index.append(
                    dict(
                        base,
                        key=key,
                        kind="ntk",
                        shape=list(ntks[1].shape),
                        dtype=str(ntks[1].dtype),
                        impl_max_rel_diff={str(i): max_rel(ntks[i], ntks[1]) for i in ntks},
                    )
                )
                print(
                    f"   {sname:10s} {mode:4s} nngp{tuple(nngp.shape)} "
                    f"ntk{tuple(ntks[1].shape)} "
                    f"d12={max_rel(ntks[2], ntks[1]):.1e}"
                    + (f" d13={max_rel(ntks[3], ntks[1]):.1e}" if 3 in ntks else " impl3=FAILED"),
                    flush=True,
                )

            # Batch-diagonal with x2 of another batch size: record what NT does.
            if tuple(diagonal_axes) == (0,) and "x2" not in modes:
                for impl in (1, 2):
                    try:
                        r = nt.empirical_ntk_fn(f, trace_axes, diagonal_axes, implementation=impl)(
                            x1, x2, params
                        )
                        failures.append(
                            dict(
                                case=case,
                                setting=sname,
                                x2="x2",
                                what=f"empirical_ntk_fn impl={impl} diag0 with N1!=N2",
                                error=f"no error; returned shape {tuple(r.shape)}",
                            )
                        )
                    except Exception as e:  # noqa: BLE001
                        failures.append(
                            dict(
                                case=case,
                                setting=sname,
                                x2="x2",
                                what=f"empirical_ntk_fn impl={impl} diag0 with N1!=N2",
                                error=f"{type(e).__name__}: {e}"[:300],
                            )
                        )
                try:
                    r = nt.empirical_nngp_fn(f, trace_axes, diagonal_axes)(x1, x2, params)
                    failures.append(
                        dict(
                            case=case,
                            setting=sname,
                            x2="x2",
                            what="empirical_nngp_fn diag0 with N1!=N2",
                            error=f"no error; returned shape {tuple(r.shape)}",
                        )
                    )
                except Exception as e:  # noqa: BLE001
                    failures.append(
                        dict(
                            case=case,
                            setting=sname,
                            x2="x2",
                            what="empirical_nngp_fn diag0 with N1!=N2",
                            error=f"{type(e).__name__}: {e}"[:300],
                        )
                    )

        # -- infinite-width closed form ---------------------------------------------
        for mode in BOTH:
            xx2 = x2 if mode == "x2" else None
            try:
                k = kernel_fn(x1, xx2, ("nngp", "ntk"))
                for kind in ("nngp", "ntk"):
                    v = to_np(getattr(k, kind))
                    key = f"{case}/inf/{kind}/{mode}"
                    arrays[key] = v
                    index.append(
                        dict(
                            case=case,
                            key=key,
                            kind=f"inf_{kind}",
                            setting="inf",
                            trace_axes=None,
                            diagonal_axes=None,
                            x2=mode,
                            shape=list(v.shape),
                            dtype=str(v.dtype),
                        )
                    )
                print(
                    f"   inf {mode}: nngp{tuple(k.nngp.shape)} ntk{tuple(k.ntk.shape)}", flush=True
                )
            except Exception as e:  # noqa: BLE001
                failures.append(
                    dict(
                        case=case,
                        x2=mode,
                        what="kernel_fn (inf)",
                        error=f"{type(e).__name__}: {e}"[:500],
                    )
                )
                print(f"   inf {mode}: FAILED {type(e).__name__}: {e}"[:200])

    # -- dtype probe: f32 params / f64 inputs and vice versa ----------------------
    probe = dtype_probe()

    meta = dict(
        generator="tools/nt_golden/make_golden.py",
        versions=dict(
            neural_tangents=nt.__version__,
            jax=jax.__version__,
            jaxlib=jax.lib.__version__,
            numpy=np.__version__,
            python=sys.version.split()[0],
        ),
        jax_enable_x64=True,
        ntk_stored_implementation=IMPL_STORED,
        impl_agreement=dict(rtol=RTOL, atol=ATOL),
        cases=cases_meta,
        index=index,
        failures=failures,
        dtype_probe=probe,
    )
    arrays["meta"] = np.array(json.dumps(meta))

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out}: {len(arrays)} arrays, {os.path.getsize(args.out) / 1e6:.2f} MB")
    if failures:
        print("Recorded failures / observations:")
        for fl in failures:
            print("  ", fl)


def dtype_probe():
    """Result dtypes for mixed f32/f64 params and inputs, per implementation."""
    init_fn, apply_fn, _ = build(CASES["fcn_erf_gelu"]["definition"])
    rng = np.random.default_rng(7)
    x64 = rng.standard_normal((3, 7))
    _, p64 = init_fn(jax.random.PRNGKey(0), x64.shape)
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), p64)
    x32 = x64.astype(np.float32)
    res = {}
    for pname, p in (("f32", p32), ("f64", p64)):
        for xname, x in (("f32", x32), ("f64", x64)):
            tag = f"params_{pname}__inputs_{xname}"
            r = dict(out=str(apply_fn(p, x).dtype))
            for name, fn in [("nngp", nt.empirical_nngp_fn(apply_fn))] + [
                (f"ntk_impl{i}", nt.empirical_ntk_fn(apply_fn, implementation=i)) for i in IMPLS
            ]:
                try:
                    r[name] = str(fn(x, None, p).dtype)
                except Exception as e:  # noqa: BLE001
                    r[name] = f"ERROR {type(e).__name__}: {e}"[:200]
            res[tag] = r
            print("   dtype probe", tag, r, flush=True)
    return res


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.exit(1)
