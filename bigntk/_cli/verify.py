"""``bigntk verify``: recompute sampled blocks of a store and check them, or reread every block.

The recomputation needs the config (the store keeps fingerprints of the model
and data, not the model and data); ``--checksums`` needs only the store.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from bigntk._cli import add_overrides
from bigntk.errors import ConfigError

_PSD_ROWS = 32  # rows drawn from each block of a sampled principal submatrix


def add_verify(commands: Any) -> None:
    """``bigntk verify CONFIG``: recompute sampled blocks and check them."""
    verify = commands.add_parser(
        "verify", help="recompute sampled blocks of a config's store and check them"
    )
    verify.add_argument("config", help="the YAML build config the store was built from")
    verify.add_argument("--blocks", type=int, default=3, help="blocks to recompute (default 3)")
    verify.add_argument("--seed", type=int, default=0, help="seed of the block sample")
    verify.add_argument(
        "--checksums",
        action="store_true",
        help="reread every committed block of the store (CONFIG may be the store's path) and "
        "report those missing, unreadable, differing from their checksum or holding NaN/inf",
    )
    add_overrides(verify)
    verify.set_defaults(run=_verify)


def _verify(args: argparse.Namespace) -> int:
    from bigntk.build import KernelStore, load_config

    if args.checksums:  # a store path, or the config of one
        from bigntk.build._checksum import report, scan

        path = args.config
        if path.endswith((".yaml", ".yml")):
            path = load_config(path, args.set).path
        store = KernelStore.open(path)
        result = scan(store)
        print("\n".join(report(store, result)))
        return 1 if result.problems else 0
    if args.blocks < 1:
        raise ConfigError(f"--blocks must be a positive int, got {args.blocks}.")
    config = load_config(args.config, args.set)
    store = KernelStore.open(config.path)
    x1, x2 = config.load_data()
    f, params = config.load_model(x1.shape[1:])
    done = store.plan.mask() & store.committed()
    print(
        f"bigntk verify: {store.path} ({int(done.sum())}/{store.plan.num_blocks} blocks "
        f"committed; checking {min(args.blocks, int(done.sum()))})"
    )
    checks = verify_store(store, f, params, x1, x2, config.kernel, args.blocks, args.seed)
    for name, ok, detail in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: {detail}")
    failed = sum(not ok for _, ok, _ in checks)
    print(f"{'FAIL' if failed else 'PASS'}: {len(checks) - failed} of {len(checks)} checks passed")
    return 1 if failed else 0


# --- verification --------------------------------------------------------------------------


def verify_store(
    store: Any, f: Any, params: Any, x1: Any, x2: Any, kernel: dict, blocks: int, seed: int
) -> list[tuple[str, bool, str]]:
    """Checks of a store against its model and data: ``[(name, passed, detail)]``.

    1. the store's spec holds this config's settings and fingerprints;
    2. ``blocks`` random committed blocks, recomputed here, match the stored
       ones (``allclose``, rtol 1e-5 for float32, 1e-9 for float64);
    3. symmetric builds: each sampled block equals its stored mirror;
    4. square kernels: a principal submatrix (rows of the sampled block's row
       and column blocks; output axes traced) is positive semi-definite
       (eigenvalues ``>= -1e-4 * max |eigenvalue|``).
    """
    from bigntk.build._spec import fingerprint_model
    from bigntk.empirical._implementation import as_implementation

    spec, plan = store.spec, store.plan
    expected = {
        "kinds": list(kernel["kinds"]),
        "trace_axes": repr(kernel["trace_axes"]),
        "diagonal_axes": repr(kernel["diagonal_axes"]),
        "vmap_axes": repr(kernel["vmap_axes"]),
        "implementation": int(as_implementation(kernel["implementation"])),
        "model": fingerprint_model(f, params, {}),
        "x1": x1.fingerprint(),
        "x2": None if x2 is None else x2.fingerprint(),
    }
    differ = [k for k, v in expected.items() if spec.get(k) != v]
    if differ:
        detail = f"the store was built from another config; differs in: {', '.join(differ)}"
        return [("config matches the store", False, detail)]
    checks = [("config matches the store", True, "settings, model and data fingerprints")]
    done = plan.mask() & store.committed()
    committed = np.argwhere(done)
    if not len(committed):
        return [*checks, ("committed blocks", False, "none to check; run the build first")]
    rng = np.random.default_rng(seed)
    sample = committed[np.sort(rng.choice(len(committed), min(blocks, len(committed)), False))]
    chosen = store.meta.get("auto_implementation")  # AUTO as the build decided it
    if chosen is not None:
        kernel = {**kernel, "implementation": chosen}
    compute = _block_kernel(f, params, kernel, plan)
    square = not plan.diagonal and (plan.symmetric or spec["x1"] == spec["x2"])
    for bi, bj in map(tuple, sample.tolist()):
        checks += _check_values(store, compute, x1, x2, bi, bj)
        if plan.symmetric:
            checks.append(_check_mirror(store, bi, bj))
        if square:
            checks += _check_psd(store, done, bi, bj, rng)
    return checks


def _tolerance(dtype: Any) -> float:
    return {8: 1e-9, 4: 1e-5}.get(np.dtype(dtype).itemsize, 1e-2)


def _block_kernel(f, params, kernel: dict, plan) -> Any:
    """The build's block program on one local device: an independent recomputation."""
    import jax

    from bigntk.build._compute import BlockKernel

    return BlockKernel(f, params, block=plan.block, diagonal=plan.diagonal,
                       devices=jax.local_devices()[:1], **kernel)  # fmt: skip


def _check_values(store, compute, x1, x2, bi: int, bj: int) -> list[tuple[str, bool, str]]:
    plan = store.plan
    (r0, r1), (c0, c1) = plan.rows(bi), plan.cols(bj)
    if x2 is None and bi == bj:  # a diagonal block of K(x, x), computed as the workers do
        values = compute(x1.read(r0, r1))
    else:
        values = compute(x1.read(r0, r1), (x1 if x2 is None else x2).read(c0, c1))
    out = []
    for kind, want in values.items():
        if plan.symmetric and bi == bj:
            want = store.symmetrize(want)
        arr = store.array(kind)
        got = arr[r0:r1] if plan.diagonal else arr[r0:r1, c0:c1]
        scale = float(np.abs(want).max()) or 1.0
        diff = float(np.abs(got.astype(np.float64) - want).max())
        rtol = _tolerance(arr.dtype)
        ok = bool(np.allclose(got, want, rtol=rtol, atol=rtol * scale))
        detail = f"max abs diff {diff:.2e}, max rel diff {diff / scale:.2e} (rtol {rtol:g})"
        out.append((f"block ({bi}, {bj}) {kind} recomputed", ok, detail))
    return out


def _check_mirror(store, bi: int, bj: int) -> tuple[str, bool, str]:
    from bigntk.build._store import mirror_permutation

    (r0, r1), (c0, c1) = store.plan.rows(bi), store.plan.cols(bj)
    perm = mirror_permutation(store.dims)
    worst, ok = 0.0, True
    for kind in store.kinds:
        arr = store.array(kind)
        block = arr[r0:r1, c0:c1]
        mirror = np.transpose(arr[c0:c1, r0:r1], perm)
        scale = float(np.nanmax(np.abs(block), initial=0.0)) or 1.0
        rtol = _tolerance(arr.dtype)
        worst = max(worst, float(np.abs(block.astype(np.float64) - mirror).max()))
        ok &= bool(np.allclose(block, mirror, rtol=rtol, atol=rtol * scale))
    return f"block ({bi}, {bj}) equals its mirror ({bj}, {bi})", ok, f"max diff {worst:.2e}"


def _check_psd(store, done, bi: int, bj: int, rng) -> list[tuple[str, bool, str]]:
    plan = store.plan

    def committed(i: int, j: int) -> bool:
        return bool(done[min(i, j), max(i, j)] if plan.symmetric else done[i, j])

    if not all(committed(i, j) for i in (bi, bj) for j in (bi, bj)):
        return []
    rows = set()
    for b in {bi, bj}:
        r0, r1 = plan.rows(b)
        size = min(r1 - r0, _PSD_ROWS * (2 if bi == bj else 1))
        rows.update(rng.choice(np.arange(r0, r1), size, replace=False).tolist())
    idx = np.array(sorted(rows))
    out = []
    for kind in store.kinds:
        sub = _traced(np.asarray(store.array(kind).oindex[idx, idx], np.float64), store.dims)
        eig = np.linalg.eigvalsh((sub + sub.T) / 2)
        top = float(np.abs(eig).max())
        ok = bool(np.isfinite(eig).all() and eig.min() >= -1e-4 * top)
        detail = f"{len(idx)} rows: min eigenvalue {eig.min():.3e}, max {eig.max():.3e}"
        out.append((f"blocks ({bi}, {bj}) {kind} principal submatrix is PSD", ok, detail))
    return out


def _traced(sub: np.ndarray, dims: list[str]) -> np.ndarray:
    """``(m, m, *out) -> (m, m)``: trace paired output axes, sum the others."""
    letters, names = "ab", {}
    for dim in dims[2:]:
        base = dim.removesuffix("_1").removesuffix("_2")
        names.setdefault(base, "cdefghijklmnopqrstuvwxyz"[len(names)])
        letters += names[base]
    return np.einsum(f"{letters}->ab", sub)
