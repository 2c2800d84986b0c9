"""Test settings: float64 available, strict rank promotion, 4 CPU devices, XLA's LLVM at -O0."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests check numbers, not speed (benchmarks/ do that), and most of their time is XLA
# compiling small programs: LLVM at -O0 halves it (the NT golden tests: 37 -> 17 s).
# The same programs run, only less optimised machine code; XLA keeps IEEE semantics
# at every level. Set in os.environ before JAX's backend starts, so the processes the
# tests start (Ray workers, notebooks, CLI runs) inherit it. BIGNTK_TEST_XLA_DEFAULTS=1
# runs everything at XLA's defaults (the flag is also left out if XLA_FLAGS names a
# level); test_empirical's test_every_implementation_at_xla_default_optimisation
# checks every implementation against the oracle at the defaults, in a subprocess.
XLA_O0 = "--xla_backend_optimization_level=0"
if os.environ.get("BIGNTK_TEST_XLA_DEFAULTS") != "1" and (
    "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "")
):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_O0}".strip()

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
