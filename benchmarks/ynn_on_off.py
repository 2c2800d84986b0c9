"""One kernel program compiled with and without XLA CPU's YNNPACK path (jax 0.10), called directly.

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/ynn_on_off.py

The same bigntk program (benchmarks/bench_vs_nt.py's cases) is compiled twice,
once with the default CPU options and once with
``xla_cpu_experimental_ynn_fusion_type=""`` passed as a per-compile option, and
each is timed (median of 7 calls after a warm-up call).
"""

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_vs_nt as B  # noqa: E402

from bigntk.empirical._api import _program  # noqa: E402
from bigntk.empirical._chunking import Chunks  # noqa: E402

CELLS = [("fcn1024_tr1", 3), ("fcn1024_tr1", 2), ("mnist2048_16", 3), ("mnist2048_16", 2),
         ("mnist2048_128", 3), ("transformer_emb", 3), ("transformer_emb", 1),
         ("cnn_docs_tr1", 3), ("cnn_docs_tr1", 1), ("cnn_docs_tr1", 2), ("resnet_ln", 3),
         ("cnn_docs_diag", 3), ("cnn_docs_diag", 1), ("fcn1024_tr1", 1)]  # fmt: skip


def run(case, impl):
    name, n1, n2, shp, tr, dg, *vm = B.CASES[case]
    rng = np.random.default_rng(0)
    f, params = B.model(name, rng, shp)
    if name == "transformer":
        x1 = jnp.asarray(rng.integers(0, 64, (n1, *shp)), jnp.int32)
        x2 = jnp.asarray(rng.integers(0, 64, (n2, *shp)), jnp.int32)
    else:
        x1 = B.normal(rng, (n1, *shp))
        x2 = x1 if n2 is None else B.normal(rng, (n2, *shp))
    out = []
    for opts in (None, {"xla_cpu_experimental_ynn_fusion_type": ""}):
        prog = _program(f, tr, dg, vm[0] if vm else 0, impl, Chunks())
        dyn, static, _ = prog.split(("ntk",), x1, x2, params, {})
        lo = prog._jit.lower(dyn, static)
        c = lo.compile(compiler_options=opts) if opts else lo.compile()
        c(dyn)
        ts = []
        for _ in range(7):
            t = time.perf_counter()
            jax.block_until_ready(c(dyn))
            ts.append(time.perf_counter() - t)
        out.append(np.median(ts))
    print(
        f"{case:18s} {impl} on {out[0]:.4f} off {out[1]:.4f} off/on {out[1] / out[0]:.2f}",
        flush=True,
    )


if __name__ == "__main__":
    for case, impl in CELLS:
        run(case, impl)
