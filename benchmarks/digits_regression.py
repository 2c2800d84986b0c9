"""Digits end to end: build NTK and NNGP kernels, solve kernel regression, report test accuracy.

    .venv/bin/python benchmarks/digits_regression.py [--n-train N] [--diag-reg R] [--out DIR]

For each model config (``configs/digits_regression_cnn.yaml``,
``configs/digits_regression_fcn.yaml``: a small CNN and a fully connected
network, both with 10 logits) it builds, exactly as ``bigntk build`` would:

* ``K(train, train)``, the config as it is (symmetric, 1,500 x 1,500);
* ``K(test, train)``, the same config with ``data.x1`` the test split (297
  images) and ``data.x2`` the training split;

both kinds (``ntk``, ``nngp``) in each store. Stores go to ``--out``
(default ``kernels/``) and a finished build is reused (``bigntk build``
resumes; a complete store costs nothing). Then, for each kernel, it fits
kernel ridge regression to one-hot labels with :func:`bigntk.solve.fit`,
three ways, and reports the test accuracy of the argmax:

* ``cholesky``: the kernel read into memory, SciPy's Cholesky;
* ``cg+nystrom`` and ``cg+jacobi``: conjugate gradients on the lazy Dask
  kernel from :func:`bigntk.open_kernel` (products chunk by chunk).

Prints a Markdown table (accuracy, CG iterations, seconds).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import warnings

import numpy as np

import bigntk as nt
from bigntk.config import load_builtin, load_config

CONFIGS = {
    "CNN": "configs/digits_regression_cnn.yaml",
    "FCN": "configs/digits_regression_fcn.yaml",
}
SOLVERS = [("cholesky", None), ("cg", "nystrom"), ("cg", "jacobi")]


def build(config_path: str, out: str, tag: str, n_train: int | None) -> tuple[str, str]:
    """Build (or reuse) the train-train and test-train stores of a config; their paths."""
    train = {"builtin": "digits", "split": "train", **({"n": n_train} if n_train else {})}
    test = {"builtin": "digits", "split": "test"}
    suffix = f"_n{n_train}" if n_train else ""
    paths = {}
    for name, x1, x2 in (("train", train, None), ("test", test, train)):
        path = os.path.join(out, f"digits_{tag.lower()}_{name}{suffix}.zarr")
        overrides = [f"data.x1={x1}", f"data.x2={x2 if x2 else 'null'}", f"output.path={path}"]
        config = load_config(config_path, overrides)
        s1, s2 = config.load_data()
        f, params = config.load_model(s1.shape[1:])
        result = nt.build_kernel(f, params, s1, s2, progress=False, **config.build_kwargs())
        print(result.summary(), flush=True)
        paths[name] = path
    return paths["train"], paths["test"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-train", type=int, default=None, help="first N training images")
    parser.add_argument("--diag-reg", type=float, default=1e-3, help="relative ridge")
    parser.add_argument("--out", default="kernels", help="folder of the kernel stores")
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import ray

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    try:
        stores = {tag: build(CONFIGS[tag], args.out, tag, args.n_train) for tag in args.models}
    finally:
        ray.shutdown()

    _, y_train = load_builtin("digits", "train", n=args.n_train)
    _, y_test = load_builtin("digits", "test")
    targets = np.eye(10)[y_train]
    rows = []
    for tag, (train_path, test_path) in stores.items():
        for kind in ("ntk", "nngp"):
            k_train = nt.open_kernel(train_path, kind)
            k_test = nt.open_kernel(test_path, kind)
            for method, precond in SOLVERS:
                start = time.perf_counter()
                kernel = k_train.compute() if method == "cholesky" else k_train
                fitted = nt.solve.fit(kernel, targets, diag_reg=args.diag_reg, method=method,
                                      preconditioner=precond, progress=True)  # fmt: skip
                mean = fitted.predict(k_test).mean
                seconds = time.perf_counter() - start
                accuracy = float(np.mean(mean.argmax(axis=1) == y_test))
                solver = method if precond is None else f"{method}+{precond}"
                rows.append((tag, kind, solver, accuracy, fitted.info, seconds))
                print(f"{tag} {kind} {solver}: test accuracy {accuracy:.4f}", flush=True)

    n = len(y_train)
    print(f"\nDigits, {n} train / {len(y_test)} test, diag_reg={args.diag_reg:g} (relative)\n")
    print("| model | kernel | solver | test accuracy | CG iterations | residual | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for tag, kind, solver, accuracy, info, seconds in rows:
        print(f"| {tag} | {kind} | {solver} | {accuracy:.2%} | {info.iterations} "
              f"| {info.residual:.1e} | {seconds:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
