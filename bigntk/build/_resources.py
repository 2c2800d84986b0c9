"""What each worker actor asks Ray for, and how its JAX uses the device.

A worker is one Ray actor holding one compiled block program over its local
devices. It asks for ``num_cpus`` CPUs, ``num_gpus`` GPUs (Ray then sets
``CUDA_VISIBLE_DEVICES`` so that JAX sees only those) and any custom
resources, e.g. ``{"TPU": 4}`` on a TPU VM host (Ray sets
``TPU_VISIBLE_CHIPS``). By default a cluster with GPUs gets one worker per
GPU, otherwise one worker.

JAX preallocates 75% of a GPU's memory when it starts: two workers on one GPU
(``num_gpus: 0.5``) would fight over it. Workers therefore run with
``XLA_PYTHON_CLIENT_PREALLOCATE=false`` and, when they share a GPU, with
``XLA_PYTHON_CLIENT_MEM_FRACTION`` set to 90% of their share (or to
``memory_fraction`` when given).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any

from bigntk.errors import BuildInputError

logger = logging.getLogger(__name__)

_SHARED_GPU_HEADROOM = 0.9


@dataclasses.dataclass(frozen=True)
class WorkerResources:
    """Ray resources and JAX memory settings of each worker actor.

    Attributes:
        num_cpus: CPUs per worker (Ray's logical CPUs).
        num_gpus: GPUs per worker; None: ``cluster GPUs // workers`` (0 without
            GPUs). A fraction below 1 shares a GPU between workers.
        resources: other Ray resources per worker, e.g. ``{"TPU": 4}`` or a
            custom node label such as ``{"kernel_node": 1}``.
        memory_fraction: ``XLA_PYTHON_CLIENT_MEM_FRACTION`` of each worker; None:
            90% of its GPU share when below one GPU, else JAX's default.
    """

    num_cpus: float = 1.0
    num_gpus: float | None = None
    resources: Mapping[str, float] = dataclasses.field(default_factory=dict)
    memory_fraction: float | None = None

    def __post_init__(self):
        _check_number("num_cpus", self.num_cpus, allow_zero=True)
        if self.num_gpus is not None:
            _check_number("num_gpus", self.num_gpus, allow_zero=True)
            if self.num_gpus > 1 and self.num_gpus != int(self.num_gpus):
                raise BuildInputError(
                    f"num_gpus must be a fraction below 1 or a whole number, got {self.num_gpus}."
                )
        if not isinstance(self.resources, Mapping):
            raise BuildInputError(
                f"resources must be a mapping such as {{'TPU': 4}}, got {self.resources!r}."
            )
        for name, amount in self.resources.items():
            if not isinstance(name, str) or name in ("CPU", "GPU"):
                raise BuildInputError(
                    f"resources: {name!r} is not a custom resource name; give CPUs and GPUs "
                    "as num_cpus and num_gpus."
                )
            _check_number(f"resources[{name!r}]", amount)
        if self.memory_fraction is not None and not (
            isinstance(self.memory_fraction, int | float) and 0 < self.memory_fraction <= 1
        ):
            raise BuildInputError(
                f"memory_fraction must be in (0, 1], e.g. 0.45, got {self.memory_fraction!r}."
            )

    @classmethod
    def coerce(cls, value: Any) -> WorkerResources:
        """``None``, a mapping of the attributes, or a :class:`WorkerResources`."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise BuildInputError(
                    f"worker_resources: unknown keys {sorted(unknown)}; valid keys are "
                    "num_cpus, num_gpus, resources, memory_fraction."
                )
            return cls(**{k: v for k, v in value.items() if v is not None})
        raise BuildInputError(
            "worker_resources must be None, a mapping such as {'num_gpus': 1} or a "
            f"WorkerResources, got {type(value).__name__}."
        )

    def placement(self, cluster: Mapping[str, float], workers: int | None) -> Placement:
        """How many workers, how many devices each, and their Ray actor options.

        Args:
            cluster: ``ray.cluster_resources()``.
            workers: requested worker count, or None for the default.
        """
        gpus = int(cluster.get("GPU", 0))
        tpus = float(self.resources.get("TPU", 0))
        if workers is not None and (
            not isinstance(workers, int) or isinstance(workers, bool) or workers < 1
        ):
            raise BuildInputError(f"workers must be a positive int, got {workers!r}.")
        if self.num_gpus is not None:
            per_gpu = self.num_gpus
            default = max(1, math.floor(gpus / per_gpu)) if per_gpu else 1
        else:
            default = max(1, gpus)
            per_gpu = None
        if tpus:
            default = max(1, math.floor(float(cluster.get("TPU", 0)) / tpus))
        workers = workers or default
        if per_gpu is None:
            per_gpu = max(1, gpus // workers) if gpus else 0
        devices = max(1, int(tpus)) if tpus else max(1, math.floor(per_gpu))
        env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
        fraction = self.memory_fraction
        if fraction is None and 0 < per_gpu < 1:
            fraction = round(_SHARED_GPU_HEADROOM * per_gpu, 3)
        if fraction is not None:
            env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{fraction:g}"
        missing = [name for name, amount in (("GPU", per_gpu), *self.resources.items())
                   if amount and not cluster.get(name)]  # fmt: skip
        if missing:
            logger.warning(
                "Workers ask for %s, which no node of the cluster has now; they start once the "
                "autoscaler adds such nodes (or never, on a fixed cluster).",
                ", ".join(missing),
            )
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": per_gpu}
        if self.resources:
            options["resources"] = dict(self.resources)
        return Placement(workers=workers, devices=devices, options=options, env=env)


@dataclasses.dataclass(frozen=True)
class Placement:
    """``workers`` actors with ``devices`` devices each, started with ``options``.

    ``env`` holds the JAX memory variables of each worker's ``runtime_env``.
    """

    workers: int
    devices: int
    options: dict[str, Any]
    env: dict[str, str]

    def summary(self) -> dict[str, Any]:
        """JSON-able record for the store's timings."""
        return {"workers": self.workers, "devices_per_worker": self.devices, **self.options,
                "env": dict(self.env)}  # fmt: skip


def _check_number(name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise BuildInputError(f"{name} must be a number {bound}, got {value!r}.")
