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
repeated calls after one compile call: Neural Tangents' kernel function inside
``jax.jit`` (as its docs call it), bigntk's called directly (it compiles its own
programs, for the XLA:CPU path it chooses), or inside ``jax.jit`` too with
``--bigntk-call jit`` (``jit-xla``: that jit given ``bigntk.cpu_compiler_options()``).
The checksum (sum of the kernel) lets the comparison check both libraries agree.

First calls (``compare --fresh``): each cell is a fresh process whose first call is
timed before anything else is compiled (without ``--fresh`` the FLOP count is
taken first, which compiles NT's and jitted bigntk's program ahead of the timed
first call). bigntk's decision records (``bigntk/empirical/_planning/_records.py``)
go to a new empty folder per cell (a first call on a machine that never ran the
program), or to ``--cache-dir`` shared by every cell of the run (later
processes). ``--rounds`` repeats every cell, libraries alternating; the tables
give medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

CASES = {
    # name: (model, n1, n2 (None: x2=None), input shape, trace_axes, diagonal_axes[, vmap_axes])
    "cnn_docs_tr1": ("cnn", 5, 20, (32, 32, 3), (1,), ()),
    "cnn_docs_diag": ("cnn", 20, None, (32, 32, 3), (), (0,)),
    # the docs' 20-number diagonal as NT's docs call it: default trace_axes, no vmap_axes
    "cnn_docs_diag20": ("cnn", 20, None, (32, 32, 3), (-1,), (0,), None),
    "cnn_docs_diag20_vmap": ("cnn", 20, None, (32, 32, 3), (-1,), (0,), 0),
    "fcn1024_tr1": ("fcn1024", 5, 20, (32, 32, 3), (1,), ()),
    "fcn1024_untraced": ("fcn1024", 5, 20, (32, 32, 3), (), ()),
    "mnist2048_16": ("mnist2048", 16, None, (784,), (-1,), ()),
    "mnist2048_128": ("mnist2048", 128, None, (784,), (-1,), ()),
    "resnet_ln": ("resnet_ln", 8, 16, (16, 16, 3), (-1,), ()),
    "transformer_emb": ("transformer", 8, 16, (16,), (-1,), ()),
}
IMPLS = (1, 2, 3)
#: bigntk only: AUTO called as users call kernel functions (timed trial), and under a
#: user's jax.jit (predicted from XLA's cost analysis); Neural Tangents' AUTO is
#: documented as unreliable on CPU/GPU and is not run.
AUTO_CELLS = (0, -1)
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

    if name == "resnet_ln":  # conv stem, two residual blocks (LayerNorm-Relu-Conv), pool, dense
        c = 16
        stem = normal(rng, (3, 3, in_shape[-1], c))
        blocks = [(normal(rng, (c,)) * 0.1 + 1, normal(rng, (c,)) * 0.1,
                   normal(rng, (3, 3, c, c))) for _ in range(2)]  # fmt: skip
        params = (stem, blocks, dense_init(0, c, 10))

        def conv(h, w):
            y = lax.conv_general_dilated(h, w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
            return y / jnp.sqrt(w.shape[0] * w.shape[1] * w.shape[2])

        def f(params, x):
            stem, blocks, head = params
            h = conv(x, stem)
            for gamma, beta, w in blocks:
                mu = h.mean(-1, keepdims=True)
                z = (h - mu) / jnp.sqrt(((h - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
                h = h + conv(jax.nn.relu(z * gamma + beta), w)
            return dense(head, h.mean((1, 2)))

        return f, params

    if name == "transformer":  # token + position embedding, one attention block, MLP, pool
        vocab, d, hidden, length = 64, 32, 64, in_shape[0]
        params = {
            "embed": normal(rng, (vocab, d)), "pos": 0.1 * normal(rng, (length, d)),
            "qkvo": [normal(rng, (d, d)) for _ in range(4)],
            "mlp": [dense_init(0, d, hidden), dense_init(1, hidden, d)],
            "head": dense_init(2, d, 10),
        }  # fmt: skip

        def layer_norm(h):
            mu = h.mean(-1, keepdims=True)
            return (h - mu) / jnp.sqrt(((h - mu) ** 2).mean(-1, keepdims=True) + 1e-5)

        def f(params, tokens):
            h = params["embed"][tokens] + params["pos"]
            wq, wk, wv, wo = (w / jnp.sqrt(d) for w in params["qkvo"])
            q, k, v = layer_norm(h) @ wq, layer_norm(h) @ wk, layer_norm(h) @ wv
            att = jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2) / jnp.sqrt(d), axis=-1)
            h = h + (att @ v) @ wo
            h = h + dense(params["mlp"][1], jax.nn.gelu(dense(params["mlp"][0], layer_norm(h))))
            return dense(params["head"], h.mean(-2))

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


def cell(
    lib: str, case: str, impl: int, repeats: int, call_mode: str = "direct", fresh: bool = False
) -> dict:
    """One timed cell. ``call_mode`` (bigntk's explicit implementations): ``'direct'``
    calls the kernel function as bigntk documents (it compiles its programs itself,
    for the CPU path it chooses), ``'jit'`` inside the caller's ``jax.jit`` (XLA's
    options), as Neural Tangents' cells always are, ``'jit-xla'`` inside a
    ``jax.jit`` given ``bigntk.cpu_compiler_options()``. ``fresh``: nothing is
    compiled before the timed first call (no FLOP count)."""
    import jax
    import numpy as np

    if lib == "nt":
        import neural_tangents as nt
    else:
        import bigntk as nt
    name, n1, n2, in_shape, trace_axes, diagonal_axes, *vmap = CASES[case]
    vmap_axes = vmap[0] if vmap else 0
    rng = np.random.default_rng(0)
    if name == "transformer":
        import jax.numpy as jnp

        x1 = jnp.asarray(rng.integers(0, 64, (n1, *in_shape)), jnp.int32)
        x2 = None if n2 is None else jnp.asarray(rng.integers(0, 64, (n2, *in_shape)), jnp.int32)
    else:
        x1 = normal(rng, (n1, *in_shape))
        x2 = None if n2 is None else normal(rng, (n2, *in_shape))
    f, params = model(name, rng, in_shape)
    fn = nt.empirical_ntk_fn(f, trace_axes=trace_axes, diagonal_axes=diagonal_axes,
                             vmap_axes=vmap_axes, implementation=max(impl, 0))  # fmt: skip
    traced_plans = []  # AUTO under jit: the decision made while tracing

    def call(a, b, p):
        if impl < 0:
            traced_plans.append(fn.plan(a, b, p))
        return fn(a, b, p)

    jit_options = {}
    if lib == "bigntk" and call_mode == "jit-xla":
        jit_options = {"compiler_options": nt.cpu_compiler_options()}
    kernel = (
        jax.jit(lambda a, b, p: call(a, b, p), **jit_options)
        if x2 is not None
        else jax.jit(lambda a, p: call(a, None, p), **jit_options)
    )
    args = (x1, x2, params) if x2 is not None else (x1, params)
    flops = None
    try:  # XLA's FLOP count of the compiled program
        if impl == 0:  # lowering under jit here would make AUTO decide by estimate
            raise RuntimeError("not for the AUTO trial cell")
        if fresh:  # it would compile the timed program before its first call
            raise RuntimeError("not for first calls")
        cost = kernel.lower(*args).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list | tuple) else cost
        flops = float(cost.get("flops", 0.0)) or None
    except Exception:  # noqa: BLE001 - cost analysis is best effort
        pass
    chosen = None
    direct = impl == 0 or (lib == "bigntk" and impl > 0 and call_mode == "direct")
    if direct:  # as bigntk's users call it: kernel functions are compiled inside
        kernel = (lambda a, b, p: fn(a, b, p)) if x2 is not None else (lambda a, p: fn(a, None, p))
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
    cpu_path = None
    if lib == "bigntk" and impl >= 0 and direct:
        a2 = (x1, x2, params) if x2 is not None else (x1, None, params)
        cpu_path = fn.plan(*a2).cpu_path
    if impl <= 0:
        decision = (
            traced_plans[0]
            if impl < 0
            else fn.plan(*((x1, x2, params) if x2 is not None else (x1, None, params)))
        )
        chosen = f"{decision.implementation.name} ({decision.how})"
        if impl == 0 and decision.how == "trial":
            flops = None  # the outer program was not the one run
    return {
        "lib": lib, "case": case, "impl": impl, "status": "ok", "first_s": first,
        "median_s": median, "repeats": len(times), "peak_rss_mib": peak,
        "shape": list(out.shape), "checksum": float(np.asarray(out, np.float64).sum()),
        "jax": jax.__version__, "flops": flops, "chosen": chosen,
        "call": "direct" if direct else call_mode if lib == "bigntk" else "jit",
        "cpu_path": cpu_path, "fresh": fresh,
    }  # fmt: skip


def run_cell(
    python: str, lib: str, case: str, impl: int, repeats: int, xla_flags="", call_mode="direct",
    fresh: bool = False, cache_dir: str | None = None,
) -> dict:  # fmt: skip
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    cmd = [python, os.path.abspath(__file__), "cell", "--lib", lib, "--case", case,
           "--impl", str(impl), "--repeats", str(repeats), "--call", call_mode]  # fmt: skip
    if fresh:
        cmd.append("--fresh")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    with tempfile.TemporaryDirectory() as empty:
        # bigntk's decision records: a new empty folder, or the run's shared one
        env["BIGNTK_CACHE_DIR"] = cache_dir or empty
        return _run(cmd, env, lib, case, impl, xla_flags, cap)


def _run(cmd, env, lib, case, impl, xla_flags, cap) -> dict:
    if xla_flags and lib == "bigntk":  # jax 0.4.23's XLA rejects flags it does not know
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {xla_flags}".strip()
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


def compare(
    nt_python: str | None,
    repeats: int,
    cases: list[str],
    out: str,
    impls: tuple = IMPLS + AUTO_CELLS,
    xla_flags: str = "",
    call_mode: str = "direct",
    fresh: bool = False,
    rounds: int = 1,
    cache_dir: str | None = None,
) -> None:
    rows = []
    load0 = os.getloadavg()
    for case in cases:
        for impl in impls:
            libs = (("nt", nt_python),) if impl > 0 and nt_python else ()
            libs += (("bigntk", sys.executable),) if impl > 0 else ()
            for _ in range(rounds):
                for lib, python in libs + (() if impl > 0 else (("bigntk", sys.executable),)):
                    r = run_cell(python, lib, case, impl, repeats, xla_flags, call_mode,
                                 fresh, cache_dir)  # fmt: skip
                    r["loadavg"] = os.getloadavg()[0]
                    rows.append(r)
                    print(json.dumps(r), flush=True)
    info = {
        "machine": f"{platform.node()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs",
        "loadavg_start": load0, "loadavg_end": os.getloadavg(),
        "memory_cap_gib": MEMORY_CAP / 2**30, "bigntk_xla_flags": xla_flags,
        "bigntk_call": call_mode, "fresh": fresh, "rounds": rounds,
        "records": "shared" if cache_dir else "empty per cell", "rows": rows,
    }  # fmt: skip
    with open(out, "w") as fh:
        json.dump(info, fh, indent=1)
    print(f"\n{info['machine']}; load {load0} -> {info['loadavg_end']}\n")
    print(first_table(rows, cases) if fresh else table(rows, cases))


def first_table(rows: list[dict], cases: list[str]) -> str:
    """Markdown: first calls and later calls, medians over rounds, bigntk / NT."""

    def med(case, impl, lib, field):
        want = (case, impl, lib, "ok")
        got = [r[field] for r in rows if (r["case"], r["impl"], r["lib"], r["status"]) == want]
        return statistics.median(got) if got else None

    def cell(v):
        return "-" if v is None else f"{v:.3f}"

    def ratio(b, a):
        return "-" if a is None or b is None else f"{b / a:.2f}"

    lines = [
        "| case | impl | NT first (s) | bigntk first (s) | first: bigntk / NT "
        "| NT later (s) | bigntk later (s) | later: bigntk / NT | rounds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        for impl in sorted({r["impl"] for r in rows if r["case"] == case}, key=abs):
            nf, bf = med(case, impl, "nt", "first_s"), med(case, impl, "bigntk", "first_s")
            nl, bl = med(case, impl, "nt", "median_s"), med(case, impl, "bigntk", "median_s")
            n = sum(1 for r in rows if (r["case"], r["impl"], r["lib"]) == (case, impl, "bigntk"))
            lines.append(f"| {case} | {impl} | {cell(nf)} | {cell(bf)} | {ratio(bf, nf)} "
                         f"| {cell(nl)} | {cell(bl)} | {ratio(bl, nl)} | {n} |")  # fmt: skip
    return "\n".join(lines)


def table(rows: list[dict], cases: list[str]) -> str:
    """Markdown: every implementation side by side, then AUTO against bigntk's fastest."""

    def get(case, impl, lib):
        return next((r for r in rows if (r["case"], r["impl"], r["lib"]) == (case, impl, lib)),
                    {"status": "-"})  # fmt: skip

    def t(r):
        return f"{r['median_s']:.4f}" if r["status"] == "ok" else r["status"]

    def gflops(r):
        if r["status"] != "ok" or not r.get("flops"):
            return "-"
        return f"{r['flops'] / 1e9:.2f} / {r['flops'] / r['median_s'] / 1e9:.1f}"

    lines = [
        "| case | impl | NT median (s) | bigntk median (s) | bigntk / NT | agree (rel) "
        "| NT / bigntk peak RSS (MiB) | bigntk GFLOP / GFLOP/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        for impl in IMPLS:
            a, b = get(case, impl, "nt"), get(case, impl, "bigntk")
            ratio = agree = "-"
            if a["status"] == b["status"] == "ok":
                ratio = f"{b['median_s'] / a['median_s']:.2f}"
                agree = f"{abs(a['checksum'] - b['checksum']) / max(abs(a['checksum']), 1e-30):.1e}"
            rss = "/".join(
                f"{r['peak_rss_mib']:.0f}" if r["status"] == "ok" else "-" for r in (a, b)
            )
            lines.append(f"| {case} | {impl} | {t(a)} | {t(b)} | {ratio} | {agree} | {rss} "
                         f"| {gflops(b)} |")  # fmt: skip
    lines += ["", "| case | fastest bigntk (s) | AUTO (s), chosen | AUTO / fastest "
              "| AUTO under jit (s), chosen | ratio |", "|---|---|---|---|---|---|"]  # fmt: skip
    for case in cases:
        ok = [get(case, i, "bigntk") for i in IMPLS if get(case, i, "bigntk")["status"] == "ok"]
        best = min(ok, key=lambda r: r["median_s"]) if ok else None
        cells = []
        for impl in AUTO_CELLS:
            r = get(case, impl, "bigntk")
            ratio = "-"
            if best and r["status"] == "ok":
                ratio = f"{r['median_s'] / best['median_s']:.2f}"
            cells.append(f"{t(r)}, {r.get('chosen')} | {ratio}")
        fastest = f"{best['median_s']:.4f} ({best['impl']})" if best else "-"
        lines.append(f"| {case} | {fastest} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cell")
    c.add_argument("--lib", choices=("bigntk", "nt"), required=True)
    c.add_argument("--case", choices=sorted(CASES), required=True)
    c.add_argument("--impl", type=int, choices=IMPLS + AUTO_CELLS, required=True)
    c.add_argument("--repeats", type=int, default=5)
    c.add_argument("--call", choices=("direct", "jit", "jit-xla"), default="direct")
    c.add_argument("--fresh", action="store_true", help="compile nothing before the first call")
    m = sub.add_parser("compare")
    m.add_argument("--nt-python", default="/work/nt-venv/bin/python")
    m.add_argument("--bigntk-only", action="store_true", help="skip Neural Tangents' cells")
    m.add_argument("--repeats", type=int, default=5)
    m.add_argument("--cases", nargs="*", default=sorted(CASES))
    m.add_argument("--out", default="benchmarks/results-vs-nt.json")
    m.add_argument("--impls", nargs="*", type=int, default=list(IMPLS + AUTO_CELLS))
    m.add_argument("--bigntk-xla-flags", default="",
                   help="XLA_FLAGS for bigntk's cells only, e.g. "
                        "--bigntk-xla-flags=--xla_cpu_experimental_ynn_fusion_type=")  # fmt: skip
    m.add_argument("--bigntk-call", choices=("direct", "jit", "jit-xla"), default="direct",
                   help="bigntk's explicit implementations: called directly (default; they "
                        "compile themselves) or inside the caller's jax.jit (jit-xla: given "
                        "compiler_options=bigntk.cpu_compiler_options())")  # fmt: skip
    m.add_argument(
        "--fresh",
        action="store_true",
        help="first calls: compile nothing before the timed first call",
    )
    m.add_argument("--rounds", type=int, default=1, help="run every cell this many times")
    m.add_argument("--cache-dir", default=None,
                   help="bigntk's decision records, shared by every cell (default: a new "
                        "empty folder per cell)")  # fmt: skip
    args = parser.parse_args()
    if args.command == "cell":
        print(json.dumps(cell(args.lib, args.case, args.impl, args.repeats, args.call,
                              args.fresh)))  # fmt: skip
    else:
        compare(None if args.bigntk_only else args.nt_python, args.repeats, args.cases,
                args.out, tuple(args.impls), args.bigntk_xla_flags, args.bigntk_call,
                args.fresh, args.rounds, args.cache_dir)  # fmt: skip


if __name__ == "__main__":
    main()
