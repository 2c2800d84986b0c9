"""A build's identity: the model's program and parameters, every data row, canonical settings.

Fast checks of the fingerprints themselves (no Ray); the builder's use of them
(refusals, resumes, the probe, JAX upgrades) is in ``tests/test_resume_identity.py``.
"""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bigntk import stax
from bigntk.build._data import MemorySource, NpySource
from bigntk.build._identity import params_fingerprint, program_fingerprint
from bigntk.build._spec import canonical_kinds, canonical_vmap_axes, output_axes
from bigntk.empirical._planning import process_cache
from bigntk.empirical._planning._cpu_path import note_refusal
from bigntk.errors import BuildInputError
from bigntk.store import probe_difference


def _stax_program(*layers, features=4):
    init_fn, f, _ = stax.serial(*layers)
    _, params = init_fn(jax.random.PRNGKey(0), (-1, features))
    params = jax.tree.map(lambda p: np.asarray(p, np.float32), params)
    return program_fingerprint(f, params, {}, (features,), np.float32), params


def test_stax_networks_sharing_one_apply_function_are_told_apart():
    relu, p_relu = _stax_program(stax.Dense(8), stax.Relu(), stax.Dense(2))
    erf, p_erf = _stax_program(stax.Dense(8), stax.Erf(), stax.Dense(2))
    wide, p_wide = _stax_program(stax.Dense(8, W_std=1.5), stax.Relu(), stax.Dense(2))
    again, _ = _stax_program(stax.Dense(8), stax.Relu(), stax.Dense(2))
    # same parameter values and shapes: only the program tells these models apart
    assert params_fingerprint(p_relu) == params_fingerprint(p_erf) == params_fingerprint(p_wide)
    assert len({relu, erf, wide}) == 3
    assert again == relu


def test_closure_constants_and_arrays_and_kwargs_are_in_the_program():
    p = np.ones((4, 2), np.float32)
    fp = lambda f, **kw: program_fingerprint(f, p, kw, (4,), np.float32)  # noqa: E731
    two = fp(lambda p, x: 2.0 * x @ p)
    three = fp(lambda p, x: 3.0 * x @ p)
    assert two != three
    c1, c2 = np.eye(4, dtype=np.float32), 2 * np.eye(4, dtype=np.float32)
    assert fp(lambda p, x: x @ c1 @ p) != fp(lambda p, x: x @ c2 @ p)
    scaled = lambda p, x, scale: scale * x @ p  # noqa: E731
    assert fp(scaled, scale=2.0) != fp(scaled, scale=3.0)
    assert fp(scaled, scale=np.float32(2.0)) != fp(scaled, scale=np.float32(2.5))


def test_custom_derivative_rules_are_in_the_program():
    def with_jvp(rule_scale):
        @jax.custom_jvp
        def act(x):
            return jnp.sin(x)

        act.defjvp(lambda primals, tangents: (act(primals[0]), rule_scale * tangents[0]))
        return lambda p, x: act(x @ p)

    def with_vjp(rule_scale):
        @jax.custom_vjp
        def act(x):
            return jnp.sin(x)

        act.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (rule_scale * g * jnp.cos(x),))
        return lambda p, x: act(x @ p)

    p = np.ones((4, 2), np.float32)
    fp = lambda f: program_fingerprint(f, p, {}, (4,), np.float32)  # noqa: E731
    assert fp(with_jvp(1.0)) != fp(with_jvp(2.0))
    assert fp(with_vjp(1.0)) != fp(with_vjp(2.0))


def test_the_program_depends_on_dtype_and_feature_shape_not_on_parameter_values():
    p = np.ones((4, 2), np.float32)
    f = lambda p, x: jnp.tanh(x @ p)  # noqa: E731
    base = program_fingerprint(f, p, {}, (4,), np.float32)
    assert program_fingerprint(f, 2 * p, {}, (4,), np.float32) == base
    assert params_fingerprint(2 * p) != params_fingerprint(p)
    assert program_fingerprint(f, p.astype(np.float64), {}, (4,), np.float64) != base


def test_the_fingerprint_is_the_same_in_another_process():
    """Nothing process-specific (addresses, ids) enters the text."""
    code = textwrap.dedent(
        """
        import functools, jax, jax.numpy as jnp, numpy as np
        from bigntk import stax
        from bigntk.build._identity import program_fingerprint
        def host(scale, x):
            return x * scale
        init_fn, g, _ = stax.serial(stax.Dense(8), stax.Gelu(), stax.Dense(2))
        _, params = init_fn(jax.random.PRNGKey(0), (-1, 4))
        def f(p, x):
            cb = functools.partial(host, 2.0)
            x = jax.pure_callback(cb, jax.ShapeDtypeStruct(x.shape, x.dtype), x,
                                  vmap_method="broadcast_all")
            return g(p, x)
        params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
        print(program_fingerprint(f, params, {}, (4,), np.float32))
        """
    )
    run = lambda: subprocess.run(  # noqa: E731
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"JAX_PLATFORMS": "cpu", "PATH": ""},
    ).stdout.strip()  # fmt: skip
    first, second = run(), run()
    assert len(first) == 16 and first == second


def test_every_data_row_is_in_the_fingerprint(tmp_path):
    x = np.random.default_rng(0).standard_normal((1000, 3)).astype(np.float32)
    edited = x.copy()
    edited[517, 1] += 1e-3  # a row the old 64-row sample did not read
    assert MemorySource(x).fingerprint() != MemorySource(edited).fingerprint()
    assert MemorySource(x).fingerprint("sample") == MemorySource(edited).fingerprint("sample")
    np.save(tmp_path / "x.npy", x)
    assert NpySource(str(tmp_path / "x.npy")).fingerprint() == MemorySource(x).fingerprint()
    with pytest.raises(BuildInputError, match="data_fingerprint must be one of"):
        MemorySource(x).fingerprint("some")


def test_scan_checks_finiteness_in_the_same_pass():
    x = np.zeros((10, 2), np.float32)
    x[7, 1] = np.inf
    with pytest.raises(BuildInputError, match=r"non-finite value \(inf\) at index \(7, 1\)"):
        MemorySource(x).scan("x1")


def test_scan_fast_path_keeps_the_hash_and_every_refusal():
    """The full scan hashes the rows' bytes as they were always hashed (stores made before
    keep their identity), and its finite-sum shortcut neither refuses finite data whose sum
    overflows nor lets a NaN, +inf or -inf through."""
    import hashlib

    big = np.full((9, 3), 3e38, np.float32)  # finite, but its float32 sum is inf
    big[4, 0] = -3e38
    half = np.full((4, 2), 6e4, np.float16)  # float16's largest is 65504
    for x in (big, half, np.arange(12.0).reshape(4, 3).astype(">f8")):
        src = MemorySource(x)
        want = hashlib.sha256(f"full{src.shape}{src.dtype}".encode())
        want.update(np.ascontiguousarray(src.read(0, len(src))).tobytes())
        assert src.scan("x1") == want.hexdigest()[:16]
    for bad in (np.nan, np.inf, -np.inf):
        x = np.ones((5, 2), np.float32)
        x[3, 1] = bad
        with pytest.raises(BuildInputError, match=r"at index \(3, 1\)"):
            MemorySource(x).scan("x1")


def test_equal_settings_spelled_differently_are_one_spec():
    spell = lambda t, d=(): tuple(output_axes(2, t, d)[1:])  # noqa: E731
    assert spell(-1) == spell([-1]) == spell((-1,)) == spell((1,)) == spell([1, -1])
    assert spell((), 0) == spell((), [-2]) == spell((), (0,))
    assert canonical_kinds(["ntk", "nngp"]) == canonical_kinds(("nngp", "ntk"))
    assert canonical_kinds("ntk") == canonical_kinds(["ntk"])
    assert (
        canonical_vmap_axes(0)
        == canonical_vmap_axes((0, 0, None))
        == canonical_vmap_axes((0, 0, {}))
    )
    assert canonical_vmap_axes(np.int64(0)) == canonical_vmap_axes(0)
    assert canonical_vmap_axes(0) != canonical_vmap_axes(1)


def test_probe_difference():
    a = {"ntk": [1.0, 2.0, -4.0]}
    assert probe_difference(a, {"ntk": [1.0, 2.0, -4.0]}) == 0.0
    assert probe_difference(a, {"ntk": [1.0, 2.004, -4.0]}) == pytest.approx(1e-3)
    assert probe_difference(a, {"ntk": [1.0, 2.0]}) == float("inf")
    assert probe_difference(a, {"nngp": [1.0, 2.0, -4.0]}) == float("inf")
    assert probe_difference(a, {"ntk": [1.0, float("nan"), -4.0]}) == float("inf")


def test_probe_falls_back_only_when_its_compiler_options_are_refused(monkeypatch):
    """The probe compiles without XLA's backend optimisations; a backend that refuses an
    option gets its defaults (same values), any other compile error is raised."""
    from bigntk.build import _compute

    init_fn, f, _ = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(2))
    _, params = init_fn(jax.random.PRNGKey(0), (-1, 3))
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)

    def probe():
        return _compute.kernel_probe(
            f, params, {}, ("ntk",), (-1,), (), 0, "jacobian_contraction", x, None
        )

    expected = probe()["ntk"]
    monkeypatch.setattr(process_cache(), "refused_options", set())
    monkeypatch.setattr(_compute, "_PROBE_COMPILE", {"xla_no_such_option_here": 0})
    np.testing.assert_allclose(probe()["ntk"], expected, rtol=1e-6)
    assert process_cache().refused_options == {"xla_no_such_option_here"}  # not passed again

    opts = {"xla_backend_optimization_level": 0}
    assert not note_refusal(ValueError("shapes (3,) and (4,) differ"), opts)
    assert not note_refusal(ValueError("xla_backend_optimization_level"), {})
    assert process_cache().refused_options == {"xla_no_such_option_here"}
