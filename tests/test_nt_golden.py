"""Same numbers and shapes as the real Neural Tangents 0.6.5 (golden data in tests/data).

The golden file was produced by tools/nt_golden/make_golden.py running NT on
jax 0.4.23. Each case is rebuilt here with bigntk.stax, loaded with NT's own
parameters (same pytree layout), and every stored kernel is recomputed.
"""

import functools
import json
import pathlib

import jax
import numpy as np
import pytest

import bigntk as nt
from bigntk import stax

GOLDEN = pathlib.Path(__file__).parent / "data" / "nt_golden.npz"
# cases with a closed form in bigntk.stax (NT also has one for Gelu, conv and pooling)
CLOSED_FORM = {"fcn_relu", "fcn_relu_standard", "fcn_erf_inf", "fcn_erf_abc"}


@functools.cache
def golden():
    data = np.load(GOLDEN)
    return data, json.loads(str(data["meta"]))


def load_case(case):
    data, meta = golden()
    info = meta["cases"][case]
    init_fn, apply_fn, kernel_fn = eval(info["definition"], {"stax": stax})  # our own test data
    _, ours = init_fn(jax.random.PRNGKey(0), tuple(info["x1_shape"]))
    treedef = jax.tree.structure(ours)
    assert str(treedef) == str(data[f"{case}/treedef"]), "parameter layout differs from NT"
    src = info["params_from"]
    leaves = [data[f"{src}/param/{i}"] for i in range(info["n_param_leaves"])]
    if info["param_scale"] is not None:
        leaves = [a * s for a, s in zip(leaves, info["param_scale"])]
    assert [list(a.shape) for a in leaves] == [list(a.shape) for a in jax.tree.leaves(ours)]
    params = jax.tree.unflatten(treedef, leaves)
    return apply_fn, kernel_fn, params, data[f"{case}/x1"], data[f"{case}/x2"]


def _cases():
    _, meta = golden()
    return sorted(meta["cases"])


def _kernel_entries(case):
    _, meta = golden()
    return [e for e in meta["index"] if e["case"] == case and e["kind"] in ("nngp", "ntk")]


@pytest.mark.parametrize("case", _cases())
def test_same_function_on_nt_parameters(case):
    data, _ = golden()
    apply_fn, _, params, x1, x2 = load_case(case)
    np.testing.assert_allclose(apply_fn(params, x1), data[f"{case}/out1"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(apply_fn(params, x2), data[f"{case}/out2"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", _cases())
@pytest.mark.parametrize(
    "implementation,vmap_axes",
    [(1, None), (1, 0), (2, 0), (3, None), (3, 0)],
    ids=["jc", "jc-vmap", "vp-vmap", "sd", "sd-vmap"],
)
def test_same_empirical_kernels(case, implementation, vmap_axes):
    data, _ = golden()
    apply_fn, _, params, x1, x2 = load_case(case)
    entries = _kernel_entries(case)
    assert entries
    for e in entries:
        kernel_fn = nt.empirical_kernel_fn(
            apply_fn, tuple(e["trace_axes"]), tuple(e["diagonal_axes"]), vmap_axes, implementation
        )
        got = kernel_fn(x1, x2 if e["x2"] == "x2" else None, e["kind"], params)
        expected = data[e["key"]]
        assert got.shape == expected.shape == tuple(e["shape"]), e["key"]
        assert str(got.dtype) == e["dtype"], e["key"]
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12 * scale, err_msg=e["key"])


@pytest.mark.parametrize("case", _cases())
def test_infinite_width_kernels(case):
    data, _ = golden()
    _, kernel_fn, _, x1, x2 = load_case(case)
    if case not in CLOSED_FORM:
        with pytest.raises(NotImplementedError):
            kernel_fn(x1, x2, ("nngp", "ntk"))
        return
    for mode, second in (("x2", x2), ("self", None)):
        got = kernel_fn(x1, second, ("nngp", "ntk"))
        for kind in ("nngp", "ntk"):
            expected = data[f"{case}/inf/{kind}/{mode}"]
            np.testing.assert_allclose(
                # arccos near cos θ = 1 (diagonal entries) amplifies rounding: rtol 1e-7
                getattr(got, kind),
                expected,
                rtol=1e-7,
                atol=1e-12,
                err_msg=f"{case} {kind}",
            )
