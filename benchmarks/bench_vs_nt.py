"""Empirical NTK time: bigntk vs Neural Tangents 0.6.5, side by side on this machine.

    # one cell (runs under either library's venv):
    python benchmarks/bench_vs_nt.py cell --lib bigntk|nt --case NAME --impl 1
    # the comparison, alternating libraries case by case:
    .venv/bin/python benchmarks/bench_vs_nt.py compare --nt-python /work/nt-venv/bin/python

The models are plain JAX (jax.numpy / jax.lax only) so that the same code runs
under jax 0.4.23 (Neural Tangents) and current JAX (bigntk), with NTK
parameterisation (weights N(0, 1), scaled by 1/sqrt(fan_in)), float32, fixed
seeds. Each cell runs in its own subprocess with an address-space limit and a
timeout, so an out-of-memory case fails alone ("OOM"). Times are the median of
repeated calls of the jitted kernel function after one compile call; the
checksum (sum of the kernel) lets the comparison check both libraries agree.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

CASES = {
    # name: (model, n1, n2 (None: x2=None), input shape, trace_axes, diagonal_axes)
    "cnn_docs_tr1": ("cnn", 5, 20, (32, 32, 3), (1,), ()),
    "cnn_docs_diag": ("cnn", 20, None, (32, 32, 3), (), (0,)),
    "fcn1024_tr1": ("fcn1024", 5, 20, (32, 32, 3), (1,), ()),
    "fcn1024_untraced": ("fcn1024", 5, 20, (32, 32, 3), (), ()),
    "mnist2048_16": ("mnist2048", 16, None, (784,), (-1,), ()),
    "mnist2048_128": ("mnist2048", 128, None, (784,), (-1,), ()),
}
IMPLS = (1, 2, 3)
MEMORY_CAP = 12 * 2**30
TIMEOUT_S = 150


def normal(rng, shape):
    """float32 N(0, 1) from NumPy: jax.random's bits differ between jax 0.4.23 and today's."""
    import jax.numpy as jnp

    return jnp.asarray(rng.standard_normal(shape, dtype="float32"))


def model(name: str, rng, in_shape):
    import jax
    import jax.numpy as jnp
    from jax import lax

    def dense_init(_, fan_in, out):
        return (normal(rng, (fan_in, out)), 0.05 * normal(rng, (out,)))

    def dense(p, x):
        w, b = p
        return x @ w / jnp.sqrt(w.shape[0]) + b

    if name in ("fcn1024", "mnist2048"):
        width = 1024 if name == "fcn1024" else 2048
        fan_in = 1
        for d in in_shape:
            fan_in *= d
        params = [dense_init(0, fan_in, width), dense_init(1, width, width),
                  dense_init(2, width, 10)]  # fmt: skip

        def f(params, x):
            h = x.reshape((x.shape[0], -1))
            for p in params[:-1]:
                h = jax.nn.relu(dense(p, h))
            return dense(params[-1], h)

        return f, params

    assert name == "cnn"  # NT docs: Conv(32,3x3)-Relu-Conv-Relu-Conv-Flatten-Dense(10)
    chans = [in_shape[-1], 32, 32, 32]
    convs = [normal(rng, (3, 3, chans[i], chans[i + 1])) for i in range(3)]
    side = in_shape[0] - 6
    params = (convs, dense_init(3, side * side * 32, 10))

    def f(params, x):
        convs, head = params
        h = x
        for i, w in enumerate(convs):
            fan_in = w.shape[0] * w.shape[1] * w.shape[2]
            h = lax.conv_general_dilated(h, w, (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
            h = h / jnp.sqrt(fan_in)
            if i < 2:
                h = jax.nn.relu(h)
        return dense(head, h.reshape((h.shape[0], -1)))

    return f, params


def cell(lib: str, case: str, impl: int, repeats: int) -> dict:
    import jax
    import numpy as np

    if lib == "nt":
        import neural_tangents as nt
    else:
        import bigntk as nt
    name, n1, n2, in_shape, trace_axes, diagonal_axes = CASES[case]
    rng = np.random.default_rng(0)
    x1 = normal(rng, (n1, *in_shape))
    x2 = None if n2 is None else normal(rng, (n2, *in_shape))
    f, params = model(name, rng, in_shape)
    fn = nt.empirical_ntk_fn(f, trace_axes=trace_axes, diagonal_axes=diagonal_axes,
                             vmap_axes=0, implementation=impl)  # fmt: skip
    kernel = (
        jax.jit(lambda a, b, p: fn(a, b, p))
        if x2 is not None
        else jax.jit(lambda a, p: fn(a, None, p))
    )
    args = (x1, x2, params) if x2 is not None else (x1, params)
    start = time.perf_counter()
    out = jax.block_until_ready(kernel(*args))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(kernel(*args))
        times.append(time.perf_counter() - start)
        if sum(times) > 60:
            break
    median = float(np.median(times))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "lib": lib, "case": case, "impl": impl, "status": "ok", "first_s": first,
        "median_s": median, "repeats": len(times), "peak_rss_mib": peak,
        "shape": list(out.shape), "checksum": float(np.asarray(out, np.float64).sum()),
        "jax": jax.__version__,
    }  # fmt: skip


def run_cell(python: str, lib: str, case: str, impl: int, repeats: int) -> dict:
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    cmd = [python, os.path.abspath(__file__), "cell", "--lib", lib, "--case", case,
           "--impl", str(impl), "--repeats", str(repeats)]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    base = {"lib": lib, "case": case, "impl": impl}
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S,
                           preexec_fn=cap, env=env)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {**base, "status": "timeout"}
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["?"]
        oom = any(s in p.stderr for s in ("RESOURCE_EXHAUSTED", "MemoryError", "bad_alloc",
                                          "Out of memory", "Cannot allocate"))  # fmt: skip
        return {**base, "status": "OOM" if oom else "error", "error": tail[0][:200]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def compare(nt_python: str, repeats: int, cases: list[str], out: str) -> None:
    rows = []
    load0 = os.getloadavg()
    for case in cases:
        for impl in IMPLS:
            for lib, python in (("nt", nt_python), ("bigntk", sys.executable)):
                r = run_cell(python, lib, case, impl, repeats)
                rows.append(r)
                print(json.dumps(r), flush=True)
    info = {
        "machine": f"{platform.node()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs",
        "loadavg_start": load0, "loadavg_end": os.getloadavg(),
        "memory_cap_gib": MEMORY_CAP / 2**30, "rows": rows,
    }  # fmt: skip
    with open(out, "w") as fh:
        json.dump(info, fh, indent=1)
    print(f"\n{info['machine']}; load {load0} -> {info['loadavg_end']}\n")
    print("| case | impl | NT median (s) | bigntk median (s) | bigntk / NT | agree (rel) |")
    print("|---|---|---|---|---|---|")
    for case in cases:
        for impl in IMPLS:
            a, b = (next(r for r in rows if (r["case"], r["impl"], r["lib"]) == (case, impl, lib))
                    for lib in ("nt", "bigntk"))  # fmt: skip

            def t(r):
                return f"{r['median_s']:.4f}" if r["status"] == "ok" else r["status"]

            ratio = agree = "-"
            if a["status"] == b["status"] == "ok":
                ratio = f"{b['median_s'] / a['median_s']:.2f}"
                agree = f"{abs(a['checksum'] - b['checksum']) / max(abs(a['checksum']), 1e-30):.1e}"
            print(f"| {case} | {impl} | {t(a)} | {t(b)} | {ratio} | {agree} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cell")
    c.add_argument("--lib", choices=("bigntk", "nt"), required=True)
    c.add_argument("--case", choices=sorted(CASES), required=True)
    c.add_argument("--impl", type=int, choices=IMPLS, required=True)
    c.add_argument("--repeats", type=int, default=5)
    m = sub.add_parser("compare")
    m.add_argument("--nt-python", default="/work/nt-venv/bin/python")
    m.add_argument("--repeats", type=int, default=5)
    m.add_argument("--cases", nargs="*", default=sorted(CASES))
    m.add_argument("--out", default="benchmarks/results-vs-nt.json")
    args = parser.parse_args()
    if args.command == "cell":
        print(json.dumps(cell(args.lib, args.case, args.impl, args.repeats)))
    else:
        compare(args.nt_python, args.repeats, args.cases, args.out)


if __name__ == "__main__":
    main()
