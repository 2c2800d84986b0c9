"""XLA:CPU with YNNPACK: a 3x3 convolution is several times slower than XLA's own kernel.

Standalone (JAX only), for reporting to XLA. Since jax 0.8, XLA:CPU hands
convolutions to YNNPACK (``__ynn_fusion`` in the compiled HLO). On the
convolutions of a small CNN (the second layer of Neural Tangents' docs CNN:
25 images of 30x30x32, a 3x3x32x32 kernel, NHWC/HWIO, VALID, float32), the
forward convolution and its gradient with respect to the kernel (the operation
every NTK of a CNN is made of) are several times slower than with XLA's own
kernels (``xla_cpu_experimental_ynn_fusion_type=``, empty). The gradient with
respect to the input is not given to YNNPACK and takes the same time on both.

    JAX_PLATFORMS=cpu python docs/xla_cpu_ynn_conv.py

Measured on the project's machine (2 x86_64 cores, jax/jaxlib 0.10.2; shared
with other work, so the times vary, the ratios much less): see "Expected" in
``docs/xla_cpu_ynn_conv.md``.
"""

import os
import time

import jax
import jax.numpy as jnp
from jax import lax

NO_YNN = {"xla_cpu_experimental_ynn_fusion_type": ""}


def conv(x, w):
    return lax.conv_general_dilated(
        x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def best_ms(fn, args, options, runs=9):
    """(minimum milliseconds of ``runs`` calls, YNNPACK fusions in the compiled program)."""
    compiled = jax.jit(fn).lower(*args).compile(compiler_options=options)
    jax.block_until_ready(compiled(*args))
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - start)
    return best * 1e3, compiled.as_text().count("__ynn")


def main() -> None:
    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (25, 30, 30, 32), jnp.float32)
    w = jax.random.normal(kw, (3, 3, 32, 32), jnp.float32)
    g = conv(x, w)  # a cotangent of the output's shape
    cases = {
        "forward": (conv, (x, w)),
        "gradient wrt kernel": (lambda x, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0], (x, g)),
        "gradient wrt input": (lambda w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0], (w, g)),
    }
    print(f"jax {jax.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'operation':22s} {'default (ms)':>12s} {'ynn':>4s} {'ynn off (ms)':>12s} default/off")
    for name, (fn, args) in cases.items():
        on, fusions = best_ms(fn, args, {})
        off, _ = best_ms(fn, args, NO_YNN)
        print(f"{name:22s} {on:12.2f} {fusions:4d} {off:12.2f} {on / off:8.1f}")


if __name__ == "__main__":
    main()
