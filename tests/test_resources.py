"""Worker placement: resources asked of Ray, devices per worker, JAX memory settings."""

import pytest

from bigntk.build._resources import WorkerResources
from bigntk.errors import BuildInputError

CPU_ONLY = {"CPU": 16.0}
FOUR_GPUS = {"CPU": 32.0, "GPU": 4.0}


def test_defaults_one_worker_per_gpu_else_one():
    cpu = WorkerResources().placement(CPU_ONLY, None)
    assert (cpu.workers, cpu.devices) == (1, 1)
    assert cpu.options == {"num_cpus": 1.0, "num_gpus": 0}
    assert cpu.env == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    gpu = WorkerResources().placement(FOUR_GPUS, None)
    assert (gpu.workers, gpu.devices, gpu.options["num_gpus"]) == (4, 1, 1)
    two = WorkerResources().placement(FOUR_GPUS, 2)  # two workers, two GPUs each
    assert (two.workers, two.devices, two.options["num_gpus"]) == (2, 2, 2)


def test_shared_gpus_cap_each_workers_memory():
    half = WorkerResources(num_gpus=0.5).placement(FOUR_GPUS, None)
    assert (half.workers, half.devices, half.options["num_gpus"]) == (8, 1, 0.5)
    assert half.env == {
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
        "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.45",
    }
    given = WorkerResources(num_gpus=0.25, memory_fraction=0.2).placement(FOUR_GPUS, 3)
    assert given.workers == 3 and given.env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.2"


def test_tpu_hosts_and_custom_resources():
    tpu = WorkerResources(resources={"TPU": 4}).placement({"CPU": 240.0, "TPU": 16.0}, None)
    assert (tpu.workers, tpu.devices) == (4, 4)  # one worker per v4-8 host, 4 chips each
    assert tpu.options == {"num_cpus": 1.0, "num_gpus": 0, "resources": {"TPU": 4}}
    custom = WorkerResources(num_cpus=2, resources={"kernel_node": 1}).placement(CPU_ONLY, 3)
    assert custom.workers == 3 and custom.options["resources"] == {"kernel_node": 1}
    assert custom.summary()["devices_per_worker"] == 1


@pytest.mark.parametrize(
    "value, message",
    [
        ({"num_gpus": 1.5}, "num_gpus must be a fraction below 1 or a whole number"),
        ({"num_cpus": -1}, "num_cpus must be a number >= 0"),
        ({"resources": {"GPU": 1}}, "give CPUs and GPUs as num_cpus and num_gpus"),
        ({"resources": {"TPU": 0}}, r"resources\['TPU'\] must be a number > 0"),
        ({"memory_fraction": 1.5}, r"memory_fraction must be in \(0, 1\]"),
        ({"gpus": 1}, "unknown keys"),
        ("1 gpu", "must be None, a mapping"),
    ],
)
def test_bad_resources_name_the_field(value, message):
    with pytest.raises(BuildInputError, match=message):
        WorkerResources.coerce(value)


def test_bad_worker_count():
    with pytest.raises(BuildInputError, match="workers must be a positive int"):
        WorkerResources().placement(CPU_ONLY, 0)


def test_resources_no_node_has_yet_are_logged(caplog):
    placement = WorkerResources(num_gpus=1, resources={"TPU": 4}).placement(CPU_ONLY, 2)
    assert placement.workers == 2  # what was asked: an autoscaler may add the nodes
    assert "Workers ask for GPU, TPU, which no node of the cluster has now" in caplog.text
