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
def _decision_records(tmp_path_factory, monkeypatch):
    """Each test starts with no decision records (``empirical/_planning/_records``) of its own."""
    monkeypatch.setenv("BIGNTK_CACHE_DIR", str(tmp_path_factory.mktemp("bigntk-cache")))
