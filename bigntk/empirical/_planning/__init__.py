"""Planning how each kernel call is computed: implementation (AUTO), chunks, CPU path.

The door of the planning machinery for the rest of ``bigntk.empirical``:

* :class:`Planner` (``_planner``): one per kernel function; decides, caches and
  runs each call signature's :class:`KernelPlan` (``_kernel_plan``);
* :class:`ProblemInfo` and :func:`problem_info` (``_sizes``): a call's sizes;
* :class:`Compiled` and :func:`shapes_only` (``_compiled``): kernel programs
  behind ``jax.jit``;
* ``_memory`` (the budget, :func:`check_budget`, chunks that fit it),
  ``_timing`` (trials and predictions), ``_cpu_path`` (the XLA:CPU path,
  :func:`compile_by_rule`, :func:`compile_with_options`,
  :func:`cpu_compiler_options`), ``_records`` (measured
  decisions on disk, ``BIGNTK_CACHE_DIR``);
* :func:`process_cache` (``_cache``): the one object holding what planning
  remembers for the whole process.
"""

from bigntk.empirical._planning._cache import PlanningCache as PlanningCache
from bigntk.empirical._planning._cache import process_cache as process_cache
from bigntk.empirical._planning._compiled import Compiled as Compiled
from bigntk.empirical._planning._compiled import shapes_only as shapes_only
from bigntk.empirical._planning._cpu_path import compile_by_rule as compile_by_rule
from bigntk.empirical._planning._cpu_path import compile_with_options as compile_with_options
from bigntk.empirical._planning._cpu_path import cpu_compiler_options as cpu_compiler_options
from bigntk.empirical._planning._kernel_plan import KernelPlan as KernelPlan
from bigntk.empirical._planning._memory import check_budget as check_budget
from bigntk.empirical._planning._planner import Planner as Planner
from bigntk.empirical._planning._sizes import ProblemInfo as ProblemInfo
from bigntk.empirical._planning._sizes import problem_info as problem_info

__all__ = [
    "Compiled",
    "KernelPlan",
    "Planner",
    "PlanningCache",
    "ProblemInfo",
    "check_budget",
    "compile_by_rule",
    "cpu_compiler_options",
    "problem_info",
    "process_cache",
    "shapes_only",
]
