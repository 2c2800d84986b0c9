"""What a rebuild into an existing store does, for each kind of change a user can make,
and what fingerprinting a build costs.

Part 1 builds a small symmetric NTK (a stax MLP on 40 x 5 inputs, blocks of 8,
JACOBIAN_CONTRACTION) into a store, then runs ``build_kernel`` again on the
same path with one thing changed, on a real local Ray, and records the outcome:
*refused* (``SpecMismatchError``), *resumed* (blocks computed 0) or an error.
A JAX upgrade cannot be installed mid-run: it is simulated by rewriting the
store's recorded JAX version and model program hash as another JAX would
have written them (once with the probe agreeing, once not).

Part 2 times the pieces of a build's identity at scale: the data hash of a
1 GiB float32 ``.npy`` (every row, and the 64-row opt-out), the model program
hash and the probe for a 784-1024-1024-10 ReLU network (1.86M parameters).

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/bench_identity.py [--gib 1.0] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _mlp(activation="Relu", W_std=1.0, features=5):
    from bigntk import stax

    init_fn, f, _ = stax.serial(
        stax.Dense(16, W_std=W_std), getattr(stax, activation)(), stax.Dense(2)
    )
    _, params = init_fn(jax.random.PRNGKey(0), (-1, features))
    return f, jax.tree.map(lambda p: np.asarray(p, np.float32), params)


def _pretend_other_jax(path: str, probe_scale: float) -> None:
    import zarr

    from bigntk.store import spec_hash

    group = zarr.open_group(path, mode="r+")
    meta = dict(group.attrs)["bigntk"]
    meta["versions"]["jax"] = "0.4.23"
    meta["spec"]["model"]["program"] = hashlib.sha256(b"jax 0.4.23").hexdigest()[:16]
    meta["spec_hash"] = spec_hash(meta["spec"])
    meta["probe"]["values"] = {
        k: [v * probe_scale for v in vals] for k, vals in meta["probe"]["values"].items()
    }
    group.attrs["bigntk"] = meta


def changes(workdir: pathlib.Path) -> list[dict]:
    import bigntk as nt
    from bigntk.errors import BigNTKError

    x = np.random.default_rng(0).standard_normal((40, 5)).astype(np.float32)
    f, params = _mlp()
    base = dict(block_size=8, progress=False, implementation=1)
    two = lambda p, x: 2.0 * f(p, x)  # noqa: E731
    three = lambda p, x: 3.0 * f(p, x)  # noqa: E731
    edited = x.copy()
    edited[23, 1] += 1e-3
    cases = [
        ("nothing (the same build again)", f, params, x, {}),
        ("activation Relu -> Erf (same parameters)", _mlp("Erf")[0], params, x, {}),
        ("W_std 1.0 -> 1.5 (same parameters)", _mlp(W_std=1.5)[0], params, x, {}),
        ("closure constant 2.0 -> 3.0", three, params, x, {"model": two}),
        ("one data row (x[23, 1] += 1e-3)", f, params, edited, {}),
        ("dtype float32 -> float64 (inputs)", f, params, x.astype(np.float64), {}),
        ("trace_axes (-1,) -> [1] (same axes)", f, params, x, {"trace_axes": [1]}),
        ("trace_axes (-1,) -> () (other axes)", f, params, x, {"trace_axes": ()}),
        ("kinds ('ntk', 'nngp') -> ['nngp', 'ntk']", f, params, x, {"kinds": ["nngp", "ntk"]}),
        ("implementation 1 -> 3", f, params, x, {"implementation": 3}),
        ("vmap_axes None (proved) -> 0", f, params, x, {"vmap_axes": 0}),
        ("JAX upgrade, probe agrees (simulated)", f, params, x, {"upgrade": 1.0}),
        ("JAX upgrade, probe differs (simulated)", f, params, x, {"upgrade": 1.5}),
    ]
    rows = []
    for i, (what, g, p, data, change) in enumerate(cases):
        path = str(workdir / f"case{i}.zarr")
        first_model = change.pop("model", f)
        upgrade = change.pop("upgrade", None)
        nt.build_kernel(first_model, params, x, path=path, kinds=("ntk", "nngp"), **base)
        if upgrade is not None:
            _pretend_other_jax(path, upgrade)
        kwargs = {**base, "kinds": ("ntk", "nngp"), **change}
        start = time.perf_counter()
        try:
            r = nt.build_kernel(g, p, data, path=path, **kwargs)
            outcome = "resumed" if r.computed == 0 else f"computed {r.computed} blocks"
        except BigNTKError as e:
            outcome = f"refused ({type(e).__name__})"
        rows.append({"change": what, "outcome": outcome, "s": time.perf_counter() - start})
        print(f"{what:45s} {outcome}", flush=True)
    return rows


def costs(workdir: pathlib.Path, gib: float) -> dict:
    from bigntk import stax
    from bigntk.build._compute import kernel_probe
    from bigntk.build._data import NpySource
    from bigntk.build._identity import params_fingerprint, program_fingerprint

    rows = int(gib * 2**30 // (784 * 4))
    path = workdir / "x.npy"
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, 784))
    for start in range(0, rows, 65536):
        stop = min(rows, start + 65536)
        x[start:stop] = np.random.default_rng(start).standard_normal((stop - start, 784))
    x.flush()
    del x
    os.sync()
    source = NpySource(str(path))
    out = {"rows": rows, "bytes": os.path.getsize(path)}
    for mode in ("full", "sample"):
        start = time.perf_counter()
        source.scan("x1", mode)
        out[f"data_{mode}_s"] = time.perf_counter() - start
    init_fn, f, _ = stax.serial(stax.Dense(1024), stax.Relu(), stax.Dense(1024), stax.Relu(),
                                stax.Dense(10))  # fmt: skip
    _, params = init_fn(jax.random.PRNGKey(0), (-1, 784))
    params = jax.tree.map(lambda p: np.asarray(p, np.float32), params)
    start = time.perf_counter()
    program_fingerprint(f, params, {}, (784,), np.float32)
    out["program_s"] = time.perf_counter() - start
    start = time.perf_counter()
    params_fingerprint(params)
    out["params_s"] = time.perf_counter() - start
    rows4 = source.read(0, 4)
    start = time.perf_counter()
    kernel_probe(f, params, {}, ("ntk",), (-1,), (), 0, 1, rows4, None)
    out["probe_s"] = time.perf_counter() - start
    print(json.dumps(out, indent=1), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="size of the data file to hash")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    with tempfile.TemporaryDirectory() as tmp:
        result = {
            "machine": f"{platform.node()} {os.cpu_count()} cores",
            "versions": {
                "jax": jax.__version__,
                "ray": ray.__version__,
                "numpy": np.__version__,
            },  # fmt: skip
            "changes": changes(pathlib.Path(tmp)),
            "costs": costs(pathlib.Path(tmp), args.gib),
        }
    ray.shutdown()
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
