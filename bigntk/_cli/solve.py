"""``bigntk solve`` and ``bigntk spectrum``: kernel regression and top eigenpairs of a built kernel.

Both read the kernel store once into Ray actors' memory by default
(:class:`bigntk.solve.DistributedKernel`, the way past one machine); ``--dask``
uses the single-process Dask path instead, which rereads the store at every
product. What they compute is written next to the kernel, in ``<store>/solve/``:

- ``solve``: ``alpha.npy`` (the dual coefficients ``(K + λ I)⁻¹ y``),
  ``fitted.npy`` (``K α`` on the training examples), ``predictions.npy`` when a
  test kernel ``K(x_test, x_train)`` is given, and ``fit.json`` (the solve record:
  method, regulariser, iterations, residual, passes, bytes read, seconds, and the
  arguments). A killed solve resumes from its checkpoint when run again.
- ``spectrum``: ``spectrum.npz`` (eigenvalues, eigenvectors, residuals) and
  ``spectrum.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from typing import Any

import numpy as np

from bigntk._cli import add_overrides
from bigntk.errors import ConfigError


def add_solve(commands: Any) -> None:
    """``bigntk solve CONFIG``: kernel regression on the kernel a config built."""
    solve = commands.add_parser(
        "solve", help="kernel regression on a built kernel (the store read once, on Ray)"
    )
    solve.add_argument("config", help="the YAML build config of the train-train kernel")
    add_overrides(solve)
    solve.add_argument(
        "--targets",
        help="training targets: a .npy file or a Zarr array (path or path::array), (n,) or "
        "(n, r); default: the labels of a built-in dataset, one-hot",
    )
    solve.add_argument("--test-kernel", help="store of K(x_test, x_train), for predictions")
    solve.add_argument("--kind", default=None, help="ntk or nngp (default: ntk if built)")
    solve.add_argument("--diag-reg", type=float, default=1e-4, help="ridge, relative (1e-4)")
    solve.add_argument("--preconditioner", choices=["nystrom", "jacobi", "none"], default="nystrom")
    solve.add_argument("--tol", type=float, default=1e-6, help="relative residual (1e-6)")
    solve.add_argument("--maxiter", type=int, default=1000)
    _add_ray_options(solve)
    solve.set_defaults(run=_solve)


def add_spectrum(commands: Any) -> None:
    """``bigntk spectrum STORE -k K``: the top eigenpairs of a symmetric kernel."""
    spectrum = commands.add_parser("spectrum", help="top-k eigenpairs of a symmetric kernel")
    spectrum.add_argument("path", help="kernel store (symmetric)")
    spectrum.add_argument("-k", type=int, default=10, help="eigenpairs (10)")
    spectrum.add_argument("--kind", default=None, help="ntk or nngp (default: ntk if built)")
    spectrum.add_argument("--tol", type=float, default=1e-8)
    _add_ray_options(spectrum)
    spectrum.set_defaults(run=_spectrum)


def _add_ray_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None, help="Ray cluster (default: a new local one)")
    parser.add_argument("--workers", type=int, default=None, help="actors holding the kernel")
    parser.add_argument(
        "--dask", action="store_true", help="one process over Dask (rereads the store per product)"
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false")


def _kind(store: Any, kind: str | None) -> str:
    """The kind to solve with: ``kind`` if ``store`` (a ``KernelStore``) holds it, else ntk."""
    kinds = store.kinds
    if kind is None:
        return "ntk" if "ntk" in kinds else kinds[0]
    if kind not in kinds:
        raise ConfigError(f"--kind {kind}: {store.path} holds {list(kinds)}; pass one of them.")
    return kind


def _targets(config: Any, path: str | None, n: int) -> np.ndarray:
    """The training targets: a file, or a built-in dataset's labels one-hot."""
    if path is not None:
        from bigntk.build import as_source

        source = as_source(path, "--targets")
        y = np.asarray(source.read(0, source.shape[0]), np.float64)
    elif isinstance(config.x1, dict) and config.x1.get("name") == "digits":
        from bigntk.config import load_builtin

        spec = {k: v for k, v in config.x1.items() if k != "name"}
        _, labels = load_builtin("digits", **spec)
        y = np.eye(int(labels.max()) + 1)[labels]
    else:
        raise ConfigError(
            "bigntk solve needs targets: pass --targets y.npy (or a Zarr array); only a built-in "
            "dataset with labels (digits) provides them."
        )
    if y.shape[0] != n:
        raise ConfigError(f"--targets: {y.shape[0]} rows for a kernel of {n} examples.")
    return y


def _solve(args: argparse.Namespace) -> int:
    from bigntk import solve
    from bigntk.config import load_config
    from bigntk.store import KernelStore, open_kernel

    config = load_config(args.config, args.set)
    store = KernelStore.open(config.path)
    kind = _kind(store, args.kind)
    y = _targets(config, args.targets, store.plan.n1)
    fitted = solve.fit(
        config.path, y, kind=kind, diag_reg=args.diag_reg, method="cg",
        preconditioner=None if args.preconditioner == "none" else args.preconditioner,
        tol=args.tol, maxiter=args.maxiter, progress=args.progress, distributed=not args.dask,
        address=args.address or config.address, workers=args.workers,
    )  # fmt: skip
    out = _out_dir(config.path)
    alpha = np.asarray(fitted.alpha)
    np.save(out / "alpha.npy", alpha)
    np.save(out / "fitted.npy", y - fitted.info.diag_reg * alpha)  # K α = y − λ α
    record = {"targets": args.targets or "built-in labels", "kind": kind,
              **dataclasses.asdict(fitted.info)}  # fmt: skip
    if args.test_kernel:
        start = time.perf_counter()
        prediction = fitted.predict(open_kernel(args.test_kernel, kind))
        np.save(out / "predictions.npy", np.asarray(prediction.mean))
        record["predict_seconds"] = time.perf_counter() - start
    (out / "fit.json").write_text(json.dumps(_jsonable(record), indent=1))
    info = fitted.info
    print(
        f"bigntk solve: {config.path} ({kind}): {info.method} with {info.preconditioner}, "
        f"{info.iterations} iterations, residual {info.residual:.2e}, {info.passes} passes, "
        f"{info.seconds:.1f} s; wrote {out}/"
    )
    return 0


def _spectrum(args: argparse.Namespace) -> int:
    from bigntk import solve
    from bigntk.store import KernelStore

    kind = _kind(KernelStore.open(args.path), args.kind)
    result = solve.eigh_topk(args.path, args.k, kind=kind, tol=args.tol,
                             distributed=not args.dask, address=args.address,
                             workers=args.workers)  # fmt: skip
    out = _out_dir(args.path)
    np.savez(out / "spectrum.npz", eigenvalues=result.eigenvalues,
             eigenvectors=result.eigenvectors, residuals=result.residuals)  # fmt: skip
    values = np.asarray(result.eigenvalues)
    record = {"kind": kind, "k": args.k, "iterations": result.iterations,
              "seconds": result.seconds, "eigenvalues": values.tolist()}  # fmt: skip
    (out / "spectrum.json").write_text(json.dumps(record, indent=1))
    print(f"bigntk spectrum: {args.path} ({kind}): top {args.k} eigenvalues "
          f"({result.iterations} products, {result.seconds:.1f} s); wrote {out}/")  # fmt: skip
    for i, value in enumerate(values):
        print(f"  {i + 1:4d}  {value:.6e}")
    return 0


def _out_dir(store: str) -> Any:
    """``<store>/solve/``: where solves and spectra of a store are kept."""
    import pathlib

    from bigntk.store import is_url

    if is_url(store):
        raise ConfigError(
            f"{store}: bigntk solve/spectrum write their results next to a local store; copy "
            "the store to a local or shared path first."
        )
    out = pathlib.Path(store) / "solve"
    os.makedirs(out, exist_ok=True)
    return out


def _jsonable(record: dict) -> dict:
    return {k: v for k, v in record.items() if isinstance(v, str | int | float | bool | None)}
