"""The default block size (``block_size=None``): the rule, its FLOP counts, a build using it."""

import math

import jax
import numpy as np
import pytest

import bigntk as nt
from bigntk import stax
from bigntk.build._spec import (
    BLOCK_SECONDS,
    DEVICE_FLOPS,
    MAX_CHUNK_BYTES,
    MIN_CHUNK_BYTES,
    default_block_size,
    kernel_flops,
    worker_platform,
)
from tests import builder_models as bm

F32 = 4
# XLA's counts for the 784-512-512-10 ReLU FCN, trace over 10 outputs (measured by kernel_flops)
SD = (2.43e4, 1.32e7)  # STRUCTURED_DERIVATIVES: (FLOPs per entry, per row)
JC = (1.34e7, 4.0e7)  # JACOBIAN_CONTRACTION


def seconds(block, platform, devices, cost):
    return (cost[0] * block * block + cost[1] * block) / (DEVICE_FLOPS[platform] * devices)


def test_cpu_fcn_blocks_are_the_smallest_readable_chunk():
    # a 2048^2 float32 chunk is 16 MiB; SD takes ~1.5-1.9 s per block on 2 cores here
    assert default_block_size(65_536, F32, 1, "cpu", *SD) == 2048
    # JC holds no Jacobian of the whole block (its calls are chunked), so no 42-row blocks
    assert default_block_size(16_384, F32, 1, "cpu", *JC) == 2048


def test_a_fast_device_gets_blocks_up_to_the_largest_chunk():
    block = default_block_size(10**6, F32, 1, "gpu", *SD)
    assert block == 8192 and block * block * F32 == MAX_CHUNK_BYTES
    assert seconds(block, "gpu", 1, SD) < BLOCK_SECONDS  # stopped by the chunk cap


@pytest.mark.parametrize("per_entry", [1e3, 2e3, 4e3, 1e4])
def test_a_block_takes_a_second_unless_a_chunk_bound_stops_it(per_entry):
    cost = (per_entry, 0.0)
    block = default_block_size(10**6, F32, 1, "cpu", *cost)
    chunk = block * block * F32
    assert MIN_CHUNK_BYTES <= chunk <= MAX_CHUNK_BYTES
    at_cap = (block + 256) ** 2 * F32 > MAX_CHUNK_BYTES
    assert seconds(block, "cpu", 1, cost) >= BLOCK_SECONDS or at_cap
    smaller = block - 256
    at_floor = smaller**2 * F32 < MIN_CHUNK_BYTES
    assert seconds(smaller, "cpu", 1, cost) < BLOCK_SECONDS or at_floor  # the smallest such


def test_time_decides_between_the_chunk_bounds():
    # 2,000 FLOPs per entry at 5e10 FLOP/s: 1 s is 5,000 rows, rounded up to 5,120
    assert default_block_size(10**6, F32, 1, "cpu", 2e3, 0.0) == 5120
    # the per-row work (derivatives of each example) counts too: fewer rows for a second
    assert default_block_size(10**6, F32, 1, "cpu", 2e3, 5e6) == 4096  # 3,904


@pytest.mark.parametrize("n", [1, 100, 1000, 2047, 2048, 2049, 65_536, 10**6])
def test_never_more_rows_than_the_data(n):
    block = default_block_size(n, F32, 1, "cpu", *SD)
    assert 1 <= block <= max(n, 1) and block == min(2048, n)


@pytest.mark.parametrize(
    "entries, bounds",
    [
        (1, (2048, 8192)),  # traced outputs: one number per pair
        (100, (256, 768)),  # 10 outputs untraced: a (10, 10) matrix per pair
        (2 * 100, (256, 512)),  # the same in float64
    ],
)
def test_output_shape_sets_the_chunk_bounds(entries, bounds):
    cheap, dear = (1.0, 0.0), (1e9, 0.0)
    low = default_block_size(10**6, F32 * entries, 1, "gpu", *dear)
    high = default_block_size(10**6, F32 * entries, 1, "gpu", *cheap)
    assert (low, high) == bounds
    assert low * low * F32 * entries >= MIN_CHUNK_BYTES * 0.8  # rounded to 256 rows
    assert high * high * F32 * entries <= MAX_CHUNK_BYTES


def test_devices_multiply_the_rate_and_divide_the_block():
    for devices in (2, 3, 8):
        block = default_block_size(10**6, F32, devices, "gpu", 1e5, 0.0)
        assert block % devices == 0 and block % 256 == 0
    # more devices per worker: more work per second, so a larger block for the same second
    one, eight = (default_block_size(10**6, F32, d, "cpu", 1e4, 0.0) for d in (1, 8))
    assert eight > one


def test_diagonal_builds_size_rows_not_pairs():
    dear = default_block_size(10**8, F32, 1, "cpu", 0.0, 1e9, diagonal=True)
    assert dear == MIN_CHUNK_BYTES // F32  # 50 rows take a second; a chunk wants 4M rows
    cheap = default_block_size(10**8, F32, 1, "cpu", 0.0, 10.0, diagonal=True)
    assert cheap == MAX_CHUNK_BYTES // F32  # 5e9 rows for a second: capped by the chunk
    mid = default_block_size(10**8, F32, 1, "cpu", 0.0, 5e3, diagonal=True)
    assert mid == math.ceil(5e10 / 5e3 / 256) * 256  # 1 s of per-row work


def test_worker_platform_from_ray_options():
    assert worker_platform({"num_cpus": 1, "num_gpus": 0}) == "cpu"
    assert worker_platform({"num_cpus": 1, "num_gpus": 0.5}) == "gpu"
    assert worker_platform({"num_gpus": 0, "resources": {"TPU": 4}}) == "tpu"


def test_flops_follow_the_implementation_that_will_run():
    init, apply, _ = stax.serial(stax.Dense(64), stax.Relu(), stax.Dense(10))
    _, params = init(jax.random.PRNGKey(0), (1, 32))
    args = (apply, params, {}, ("ntk",), (1,), (), 0)
    jc, vp, sd = (kernel_flops(*args, impl, (32,), np.float32) for impl in (1, 2, 3))
    auto = kernel_flops(*args, 0, (32,), np.float32)
    assert sd[0] < jc[0] and sd[0] < vp[0]  # per entry: SD contracts the structure
    assert all(c[1] > 0 for c in (jc, vp, sd))
    at = lambda c: c[0] * 2048**2 + c[1] * 2048  # noqa: E731
    assert auto == min((jc, vp, sd), key=at)  # AUTO: the cheapest candidate


@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.xdist_group("ray")
def test_a_build_with_block_size_none_works(tmp_path):
    f, params = bm.mlp()
    x = bm.data(37, seed=1)
    path = str(tmp_path / "k.zarr")
    result = nt.build_kernel(f, params, x, path=path, block_size=None, progress=False)
    assert result.computed == result.total == 1  # 37 rows: one block holds them all
    store = nt.open_kernel(path, "ntk")
    assert store.shape == (37, 37) and store.chunks == ((37,), (37,))
    k = np.asarray(store.compute())
    want = nt.empirical_kernel_fn(f, vmap_axes=0)(x, None, "ntk", params)
    np.testing.assert_allclose(k, np.asarray(want), rtol=2e-5, atol=2e-5 * np.abs(want).max())
