"""Checks of a built store: those the store alone allows, and an independent recomputation.

:func:`bigntk.build.verify_store` runs them (see :mod:`bigntk.build._verify_store`).

:func:`check_store` needs only the store: every committed block is reread
(chunks present and readable, values equal to their recorded checksum, no
NaN/inf, symmetric builds exactly symmetric) and principal submatrices of
sampled blocks are checked positive semi-definite.

:func:`check_config` and :func:`recompute` need the model and data (the
store keeps only their fingerprints): sampled entries of sampled committed
blocks are recomputed by a different method than the one that built the
store, by default the float64 reference (:func:`bigntk.empirical.reference_kernels`,
naive Jacobians), and compared within a tolerance relative to the largest
entry of the sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bigntk.empirical import (
    NtkImplementation,
    as_implementation,
    empirical_kernel_fn,
    reference_kernels,
)
from bigntk.errors import BuildInputError
from bigntk.store import differences, probe_difference, probe_tolerance, scan

#: the recomputation method ``'reference'``: the float64 reference kernels
REFERENCE = "reference"
_PSD_ROWS = 32  # rows drawn from each block of a sampled principal submatrix
_REFERENCE_BYTES = 2 * 2**30  # Jacobians the reference may hold; above, an implementation


class Check(NamedTuple):
    """One check's outcome: ``name`` (what was checked), ``ok``, ``detail`` (one line)."""

    name: str
    ok: bool
    detail: str


def default_tolerance(dtype: Any) -> float:
    """Largest error, relative to the sample's largest entry, accepted for a store of ``dtype``."""
    return {8: 1e-10, 4: 1e-4}.get(np.dtype(dtype).itemsize, 1e-2)


def committed_blocks(store: Any) -> np.ndarray:
    """``(rows, cols)`` bool: blocks of the plan that the manifest records as committed."""
    return store.plan.mask() & store.committed()


def _sample(mask: np.ndarray, count: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    blocks = np.argwhere(mask)
    if not len(blocks):
        return []
    chosen = np.sort(rng.choice(len(blocks), min(count, len(blocks)), replace=False))
    return [tuple(b) for b in blocks[chosen].tolist()]


# --- the store alone --------------------------------------------------------------------------


def check_store(store: Any, blocks: int, seed: int) -> tuple[list[Check], np.ndarray]:
    """Every committed block reread, and PSD of ``blocks`` sampled blocks' submatrices.

    Returns:
        ``(checks, good)``: ``good`` is the committed blocks without a problem
        (``(rows, cols)`` bool), from which later checks sample.
    """
    result = scan(store, symmetry=True)
    checks = [Check(f"block {p.block} {p.kind} {p.what}", False, p.detail) for p in result.problems]
    symmetric = store.plan.symmetric and not store.plan.diagonal
    detail = (
        f"{result.checked} blocks x {len(store.kinds)} kinds: chunks present and readable, "
        f"checksums match, no NaN/inf{_symmetry_note(store) if symmetric else ''}"
    )
    if result.without_checksum:
        detail += f" ({result.without_checksum} block-kinds have no recorded checksum)"
    bad = len(result.bad_blocks)
    if bad:
        detail = (
            f"{bad} of {result.checked} committed blocks are damaged; run the build again with "
            "--repair (build_kernel(..., repair=True)) to recompute exactly those"
        )
    checks.append(Check("committed blocks reread", not bad, detail))
    if not result.checked:
        checks.append(Check("committed blocks", False, "none to check; run the build first"))
    good = committed_blocks(store)
    good[tuple(result.bad_blocks.T)] = False
    if _is_square(store):
        rng = np.random.default_rng(seed)
        for bi, bj in _sample(good, blocks, rng):
            checks += _check_psd(store, good, bi, bj, rng)
    return checks, good


def _symmetry_note(store: Any) -> str:
    if store.mirrored:  # format 1: the mirrors are on disk
        return ", mirrors exactly transposed"
    if store.packed:  # format 3: nothing stored twice, symmetric by construction
        return ", each pair of examples stored once (exactly symmetric by construction)"
    return ", diagonal blocks exactly symmetric (each block stored once)"


def _is_square(store: Any) -> bool:
    """A kernel ``K(x, x)`` with the batch axis kept twice: it has principal submatrices."""
    plan, spec = store.plan, store.spec
    return not plan.diagonal and (plan.symmetric or spec.get("x1") == spec.get("x2"))


def _check_psd(store: Any, good: np.ndarray, bi: int, bj: int, rng: np.random.Generator) -> list:
    plan = store.plan

    def usable(i: int, j: int) -> bool:
        return bool(good[min(i, j), max(i, j)] if plan.symmetric else good[i, j])

    if not all(usable(i, j) for i in (bi, bj) for j in (bi, bj)):
        return []
    rows = set()
    for b in {bi, bj}:
        r0, r1 = plan.rows(b)
        size = min(r1 - r0, _PSD_ROWS * (2 if bi == bj else 1))
        rows.update(rng.choice(np.arange(r0, r1), size, replace=False).tolist())
    idx = np.array(sorted(rows))
    out = []
    for kind in store.kinds:
        sub = traced(np.asarray(store.values(kind).oindex[idx, idx], np.float64), store.dims)
        eig = np.linalg.eigvalsh((sub + sub.T) / 2)
        top = float(np.abs(eig).max())
        ok = bool(np.isfinite(eig).all() and eig.min() >= -1e-4 * top)
        detail = f"{len(idx)} rows: min eigenvalue {eig.min():.3e}, max {eig.max():.3e}"
        out.append(Check(f"blocks ({bi}, {bj}) {kind} principal submatrix is PSD", ok, detail))
    return out


def traced(sub: np.ndarray, dims: list[str]) -> np.ndarray:
    """``(m, m, *out) -> (m, m)``: trace paired output axes, sum the others."""
    letters, names = "ab", {}
    for dim in dims[2:]:
        base = dim.removesuffix("_1").removesuffix("_2")
        names.setdefault(base, "cdefghijklmnopqrstuvwxyz"[len(names)])
        letters += names[base]
    return np.einsum(f"{letters}->ab", sub)


# --- with the config ---------------------------------------------------------------------------


def check_config(
    store: Any, f: Any, params: Any, x1: Any, x2: Any, kernel: dict, data_fingerprint: str = "full"
) -> Check:
    """Whether the store holds the computation this config describes.

    The spec and the probe are made here exactly as the build makes them
    (:func:`bigntk.build._describe.describe_build`, with the store's block size);
    ``data_fingerprint`` is how the build hashed the inputs.
    """
    from bigntk.build._describe import describe_build

    data = (
        x1.scan(None, data_fingerprint),
        None if x2 is None else x2.scan(None, data_fingerprint),
    )
    spec, _, probe = describe_build(
        (f, params, {}), x1, x2, data, kinds=kernel["kinds"], trace_axes=kernel["trace_axes"],
        diagonal_axes=kernel["diagonal_axes"], vmap_axes=kernel["vmap_axes"],
        implementation=kernel["implementation"], block_size=store.spec["layout"]["block"],
        devices=1,
    )  # fmt: skip
    differ = differences(store.spec, spec)
    if differ:
        detail = f"the store was built from another config; differs in: {', '.join(differ)}"
        return Check("config matches the store", False, detail)
    stored = store.meta.get("probe")
    if stored is not None:
        gap, tolerance = (
            probe_difference(stored["values"], probe["values"]),
            probe_tolerance(stored["dtype"]),
        )
        if not gap <= tolerance:
            detail = f"the probe's entries differ by {gap:.3g} (tolerance {tolerance:g})"
            return Check("config matches the store", False, detail)
    return Check("config matches the store", True, "settings, model, data and probe")


def recorded_implementation(store: Any) -> NtkImplementation | None:
    """The implementation that computed the store's NTK (AUTO as decided; None if undecided)."""
    impl = as_implementation(store.spec["implementation"])
    if impl == NtkImplementation.AUTO:
        chosen = store.meta.get("auto_implementation")
        return None if chosen is None else as_implementation(chosen)
    return impl


def describe(method: str | NtkImplementation) -> str:
    """How a recomputation method reads in a report."""
    if method == REFERENCE:
        return "the float64 reference (jax.jacobian + tensordot)"
    return f"{NtkImplementation(method).name} in float64"


def choose_method(
    store: Any, requested: str | None, f: Any, params: Any, x: np.ndarray, rows: int
) -> str | NtkImplementation:
    """The recomputation method: ``requested``, or the reference unless its Jacobians are big.

    Raises:
        BuildInputError: ``requested`` is the implementation that built the store, or unknown.
    """
    recorded = recorded_implementation(store)
    if requested is None:
        n_params = sum(math.prod(np.shape(p)) for p in jax.tree.leaves(params))
        out = jax.eval_shape(lambda: f(params, x[:1]))
        out_size = sum(math.prod(o.shape) for o in jax.tree.leaves(out))
        if 2 * 8 * rows * out_size * n_params <= _REFERENCE_BYTES:
            return REFERENCE
        fallback = NtkImplementation.NTK_VECTOR_PRODUCTS  # never forms a Jacobian
        if recorded == fallback:
            fallback = NtkImplementation.STRUCTURED_DERIVATIVES
        return fallback
    if requested == REFERENCE:
        return REFERENCE
    try:
        method = as_implementation(requested)
    except ValueError as e:
        raise BuildInputError(str(e)) from None
    if method == NtkImplementation.AUTO or method == recorded:
        raise BuildInputError(
            f"--implementation {requested}: verify recomputes with another method than the "
            f"one that built the store ({recorded.name if recorded else 'AUTO, undecided'}); "
            f"pass {REFERENCE} or another of JACOBIAN_CONTRACTION, NTK_VECTOR_PRODUCTS, "
            "STRUCTURED_DERIVATIVES."
        )
    return method


def _to64(tree: Any) -> Any:
    def cast(v: Any) -> Any:
        floating = hasattr(v, "dtype") and jnp.issubdtype(v.dtype, jnp.floating)
        return jnp.asarray(v, jnp.float64) if floating else v

    return jax.tree.map(cast, tree)


def _compute(method: str | NtkImplementation, f: Any, params: Any, kinds, kernel: dict) -> Callable:
    """``(x1 rows, x2 rows) -> {kind: float64 array}`` by ``method``."""
    trace_axes, diagonal_axes = kernel["trace_axes"], kernel["diagonal_axes"]
    if method == REFERENCE:

        def by_reference(a, b):
            out = reference_kernels(f, params, a, b, kinds, trace_axes, diagonal_axes)
            return {kind: jax.tree.leaves(out[kind])[0] for kind in kinds}

        return by_reference
    kernel_fn = empirical_kernel_fn(f, trace_axes, diagonal_axes, None, method)

    def by_implementation(a, b):
        with jax.enable_x64(True):
            out = kernel_fn(_to64(a), _to64(b), tuple(kinds), _to64(params))
            return {kind: np.asarray(getattr(out, kind), np.float64) for kind in kinds}

    return by_implementation


def recompute(
    store: Any,
    f: Any,
    params: Any,
    x1: Any,
    x2: Any,
    kernel: dict,
    good: np.ndarray,
    *,
    method: str | NtkImplementation,
    blocks: int,
    rows: int,
    seed: int,
    tolerance: float | None = None,
) -> list[Check]:
    """Sampled entries of ``blocks`` sampled ``good`` blocks, recomputed by ``method``.

    From each block, ``rows`` of its rows and ``rows`` of its columns (all pairs);
    the check passes when ``max |stored - recomputed| / max |entry|`` over the
    sample (both stored and recomputed entries) is at most ``tolerance``
    (default: :func:`default_tolerance` of the store's dtype).
    """
    compute = _compute(method, f, params, store.kinds, kernel)
    rng = np.random.default_rng(seed)
    plan = store.plan
    by = describe(method)
    checks = []
    for bi, bj in _sample(good, blocks, rng):
        (r0, r1), (c0, c1) = plan.rows(bi), plan.cols(bj)
        ri = np.sort(rng.choice(r1 - r0, min(rows, r1 - r0), replace=False))
        ci = ri if plan.diagonal else np.sort(rng.choice(c1 - c0, min(rows, c1 - c0), False))
        xa = x1.read(r0, r1)[ri]
        xb = (x1 if x2 is None else x2).read(c0, c1)[ci]
        values = compute(xa, xb)
        for kind in store.kinds:
            arr = store.values(kind)  # format 3: a diagonal block unpacked
            got = np.asarray(arr.oindex[r0 + ri] if plan.diagonal else arr.oindex[r0 + ri, c0 + ci])
            want = values[kind]
            tol = default_tolerance(arr.dtype) if tolerance is None else tolerance
            scale = max(float(np.abs(want).max(initial=0.0)), float(np.abs(got).max(initial=0.0)))
            error = float(np.abs(got.astype(np.float64) - want).max(initial=0.0)) / (scale or 1.0)
            ok = bool(error <= tol)  # NaN: not ok
            pairs = f"{len(ri)} entries" if plan.diagonal else f"{len(ri)}x{len(ci)} entries"
            detail = (
                f"{pairs} by {by}: max error {error:.2e} of the largest entry {scale:.3e} "
                f"(tolerance {tol:g})"
            )
            checks.append(Check(f"block ({bi}, {bj}) {kind} recomputed", ok, detail))
    return checks
