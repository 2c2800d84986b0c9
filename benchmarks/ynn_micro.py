"""XLA:CPU with and without YNNPACK on single operations (small and large products,
a row sum, batched products): the minimum of 20 calls each, per-compile option.

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/ynn_micro.py
"""

import time

import jax
import jax.numpy as jnp

NO_YNN = {"xla_cpu_experimental_ynn_fusion_type": ""}


def best_ms(fn, args, options) -> tuple[float, int]:
    """(minimum milliseconds of 20 calls, number of YNNPACK fusions in the program)."""
    compiled = jax.jit(fn).lower(*args).compile(compiler_options=options)
    jax.block_until_ready(compiled(*args))
    best = float("inf")
    for _ in range(20):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - start)
    return best * 1e3, compiled.as_text().count("__ynn")


def main() -> None:
    key = jax.random.key(0)

    def normal(*shape):
        return jax.random.normal(key, shape)

    cases = {
        "bmm 64x(16x32 @ 32x16)": (
            lambda a, b: jnp.einsum("bij,bjk->bik", a, b),
            (normal(64, 16, 32), normal(64, 32, 16)),
        ),
        "mm 128x32 @ 32x32": (lambda a, b: a @ b, (normal(128, 32), normal(32, 32))),
        "mm 512x2048 @ 2048x2048": (lambda a, b: a @ b, (normal(512, 2048), normal(2048, 2048))),
        "mm 16x2048 @ 2048x2048": (lambda a, b: a @ b, (normal(16, 2048), normal(2048, 2048))),
        "row sum 512x2048": (lambda a: jnp.sum(a, (1,)), (normal(512, 2048),)),
        "bmm 8x4x(16x16 @ 16x8)": (
            lambda a, b: jnp.einsum("bhij,bhjd->bhid", a, b),
            (normal(8, 4, 16, 16), normal(8, 4, 16, 8)),
        ),
        "mm 16x10^T @ 16x2048": (lambda a, b: a.T @ b, (normal(16, 10), normal(16, 2048))),
    }
    print(f"{'operation':26s} {'default (ms)':>12s} {'ynn ops':>7s} {'no ynn (ms)':>11s} ratio")
    for name, (fn, args) in cases.items():
        on, fusions = best_ms(fn, args, {})
        off, _ = best_ms(fn, args, NO_YNN)
        print(f"{name:26s} {on:12.3f} {fusions:7d} {off:11.3f} {off / on:5.2f}")


if __name__ == "__main__":
    main()
