"""``bigntk plan``: cost estimates of a build (bigntk/config/_estimate.py); no Ray needed."""

import math
import os

import numpy as np
import pytest

from bigntk.cli import main
from bigntk.config import estimate, load_config
from bigntk.errors import BuildInputError
from bigntk.store import Plan
from tests.test_cli import TINY, with_changes, write_config


def tiny(tmp_path, **changes):
    return load_config(write_config(tmp_path, with_changes(TINY, **changes)))


@pytest.mark.parametrize("n, block", [(24, 8), (24, 7), (23, 8)])
def test_symmetric_counts_and_bytes(tmp_path, n, block):
    config = tiny(tmp_path, data__x1__n=n, tiling__block_size=block)
    e = estimate(config, measure=False)
    g = math.ceil(n / block)
    assert e.plan == Plan(n, n, block, symmetric=True)
    assert e.plan.num_blocks == g * (g + 1) // 2
    assert e.kind_shapes == {"ntk": (n, n), "nngp": (n, n)}
    assert e.dtype == "float32"  # digits and stax params are float32, as in a real build
    # format 3 on disk: the upper chunks whole (Zarr pads edge chunks), the diagonal packed
    stored = (g * (g - 1) // 2 * block * block + g * block * (block + 1) // 2) * 4
    assert e.bytes_per_kind == {"ntk": stored, "nngp": stored}
    assert e.block_s is None and e.device_hours is None
    assert e.block_flops is not None and e.block_flops > 0


def test_rectangular_untraced_outputs_and_device_throughput(tmp_path):
    config = tiny(
        tmp_path,
        data__x2={"builtin": "digits", "split": "test", "n": 10},
        kernel__trace_axes=[],
        kernel__kinds=["ntk"],
    )
    e = estimate(config, workers=4, flops_per_s=1e9, measure=False)
    assert e.plan.grid == (3, 2) and e.plan.num_blocks == 6
    assert e.kind_shapes == {"ntk": (24, 10, 10, 10)}
    chunks = 3 * 2 * 8 * 8  # every chunk of the grid, whole (Zarr pads edge chunks)
    assert e.bytes_per_kind["ntk"] == chunks * 10 * 10 * np.dtype(e.dtype).itemsize
    assert e.per_block_s == pytest.approx(e.block_flops / 1e9)
    assert e.device_hours == pytest.approx(6 * e.block_flops / 1e9 / 3600)
    assert e.wall_hours == pytest.approx(e.device_hours / 4)


def test_diagonal_build_is_row_blocked(tmp_path):
    config = tiny(tmp_path, kernel__diagonal_axes=[0], kernel__kinds=["ntk"])
    e = estimate(config, measure=False)
    assert e.plan.diagonal and e.plan.num_blocks == 3
    assert e.kind_shapes == {"ntk": (24,)}


def test_measured_block_time_gives_the_totals(tmp_path):
    e = estimate(tiny(tmp_path), workers=2)
    assert e.block_s is not None and e.block_s > 0
    assert e.device_hours == pytest.approx(e.plan.num_blocks * e.block_s / 3600)
    assert e.wall_hours == pytest.approx(e.device_hours / 2)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"workers": 0}, "workers must be a positive int"), ({"flops_per_s": -1.0}, "positive")],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(BuildInputError, match=message):
        estimate(tiny(tmp_path), measure=False, **kwargs)


def test_cli_plan_prints_the_estimate_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path, TINY)
    assert main(["plan", path, "--set", "tiling.block_size=12", "--workers", "3"]) == 0
    out = capsys.readouterr().out
    assert "24 x 24, symmetric; block size 12, grid 2 x 2, 3 blocks to compute" in out
    assert "FLOPs (XLA cost analysis)" in out and "s per block" in out
    assert "on 3 worker(s)" in out
    assert not os.path.exists(tmp_path / "k.zarr")
    assert main(["plan", path, "--workers", "-1", "--no-measure"]) == 2
    assert "workers must be a positive int" in capsys.readouterr().err
