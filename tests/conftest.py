"""Test settings: float64 available, strict rank promotion, 4 CPU devices."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_num_cpu_devices", 4)

import warnings  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the test session (5-9 s to start)."""
    import cloudpickle
    import ray

    from tests import builder_models

    # workers import bigntk (installed) but not the tests package: ship test models by value
    cloudpickle.register_pickle_by_value(builder_models)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _xdist_group_kept(request):
    """Under ``--dist loadgroup``, a test marked ``xdist_group`` runs with its group.

    pytest-xdist groups by a suffix it appends to each test's id; pytest 9.2 moved the
    attribute it writes (nothing groups then, silently: each worker starts its own Ray
    cluster on CI's 2 cores, and tests that count calls in one process can miscount).
    """
    marked = request.node.get_closest_marker("xdist_group")
    grouping = getattr(request.config.option, "loadgroup", False)
    if marked and grouping and "@" not in request.node.nodeid:
        pytest.fail(
            f"pytest-xdist did not group {request.node.nodeid} with its xdist_group "
            f"{marked.args or marked.kwargs}: this pytest ({pytest.__version__}) and "
            "pytest-xdist do not work together for --dist loadgroup. Install the "
            "versions pyproject.toml's dev extra allows (pip install -e '.[dev]').",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _decision_records(tmp_path_factory, monkeypatch):
    """Each test starts with no decision records (``empirical/_planning/_records``) of its own."""
    monkeypatch.setenv("BIGNTK_CACHE_DIR", str(tmp_path_factory.mktemp("bigntk-cache")))
