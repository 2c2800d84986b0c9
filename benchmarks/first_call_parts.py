"""Where a first call's time goes: tracing and lowering, XLA's compile, the cold run.

The docs CNN's NTK (5 x 20 inputs, ``trace_axes=(1,)``, ``vmap_axes=0``) by
JACOBIAN_CONTRACTION inside ``jax.jit``, three ways, each in a fresh process:

* ``nt``: Neural Tangents 0.6.5 (run it with NT's venv, jax 0.4.23);
* ``bigntk``: bigntk's kernel function (current JAX), compiled for XLA's
  defaults and for XLA's own kernels (``'xla'``, bigntk's path for convolutions);
* ``plain``: the same NTK written in a few lines of JAX (``vmap`` of
  ``jacrev``, then a contraction), under whichever JAX runs it: the floor any
  library on that JAX pays.

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/first_call_parts.py bigntk
    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/first_call_parts.py plain
    JAX_PLATFORMS=cpu /work/nt-venv/bin/python benchmarks/first_call_parts.py nt
    JAX_PLATFORMS=cpu /work/nt-venv/bin/python benchmarks/first_call_parts.py plain
"""

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_vs_nt  # noqa: E402

NO_YNN = {"xla_cpu_experimental_ynn_fusion_type": ""}


def plain_ntk(f, n_out):
    def jacobians(p, x):
        return jax.vmap(jax.jacrev(lambda p, xi: f(p, xi[None])[0]), (None, 0))(p, x)

    def ntk(x1, x2, p):
        j1 = jax.tree_util.tree_leaves(jacobians(p, x1))
        j2 = jax.tree_util.tree_leaves(jacobians(p, x2))
        flat = [(a.reshape(a.shape[:2] + (-1,)), b.reshape(b.shape[:2] + (-1,)))
                for a, b in zip(j1, j2, strict=True)]  # fmt: skip
        return sum(jnp.einsum("ikp,jkp->ij", a, b) for a, b in flat) / n_out

    return ntk


def main() -> None:
    which = sys.argv[1]
    rng = np.random.default_rng(0)
    x1 = bench_vs_nt.normal(rng, (5, 32, 32, 3))
    x2 = bench_vs_nt.normal(rng, (20, 32, 32, 3))
    f, params = bench_vs_nt.model("cnn", rng, (32, 32, 3))
    if which == "plain":
        fn = plain_ntk(f, 10)
    else:
        lib = __import__("neural_tangents" if which == "nt" else "bigntk")
        fn = lib.empirical_ntk_fn(f, trace_axes=(1,), vmap_axes=0, implementation=1)
    start = time.perf_counter()
    lowered = jax.jit(lambda a, b, p: fn(a, b, p)).lower(x1, x2, params)
    trace = time.perf_counter() - start
    old_jax = tuple(int(v) for v in jax.__version__.split(".")[:2]) < (0, 8)  # no YNNPACK
    paths = {"default": None} if old_jax else {"default": None, "xla": NO_YNN}
    print(f"{which} on jax {jax.__version__}, load {os.getloadavg()[0]:.1f}")
    print(f"  trace + lower {trace:.2f} s")
    for name, options in paths.items():
        start = time.perf_counter()
        exe = lowered.compile(options) if options else lowered.compile()
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        jax.block_until_ready(exe(x1, x2, params))
        cold = time.perf_counter() - start
        start = time.perf_counter()
        jax.block_until_ready(exe(x1, x2, params))
        warm = time.perf_counter() - start
        print(
            f"  {name:7s} compile {compile_s:.2f} s, cold run {cold:.2f} s, warm run {warm:.2f} s"
        )


if __name__ == "__main__":
    main()
