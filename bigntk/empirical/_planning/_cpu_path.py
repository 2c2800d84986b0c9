"""Which XLA:CPU kernels bigntk compiles its own programs for (the *CPU path*).

Since jax 0.8, XLA:CPU hands dots, convolutions and reductions to YNNPACK
(``__ynn_fusion``). Whether that is faster depends on the program: measured
here (``benchmarks/ynn_on_off.py``, ``benchmarks/RESULTS.md``), YNNPACK makes the
dense structured-derivatives programs up to 4x faster, but the convolution
programs of the Jacobian and vector-product implementations 1.3-3.6x slower.
So on CPU bigntk chooses, for each program it compiles itself, between two paths:

* ``'default'``: XLA's defaults (YNNPACK where XLA puts it);
* ``'xla'``: XLA's own kernels only (``xla_cpu_experimental_ynn_fusion_type=``).

The first choice is a rule: ``'xla'`` for a program with a convolution, else
``'default'``. The rule is not always right: YNNPACK also costs some 35
microseconds per fused operation, which small matrix products (a
transformer's) feel. So a program can be *timed* on both paths, once per call
signature, when its first run took between 2 ms and 1 s (:data:`TRIAL_S`);
the other path is kept if it is at least 10% faster. That trial compiles and
runs the program a second time, which costs more than the first compile, so
it runs only

* for AUTO's winner (AUTO times its candidates anyway), and
* for an explicit implementation when asked, with ``BIGNTK_CPU_PATH_TRIAL=1``.

A trial's outcome is recorded on disk (``_records``) and every later process
on the same machine, JAX and program compiles the recorded path alone,
without timing. The builder uses the rule alone, so that every worker
compiles the same program (and resumed builds stay bit-identical).

* A program traced inside a user's ``jax.jit`` is compiled by that jit with its
  options; ``jax.jit(fn, compiler_options=bigntk.cpu_compiler_options())``
  selects the ``'xla'`` path there.
* ``xla_cpu_experimental_ynn_fusion_type`` in ``XLA_FLAGS`` is the user's choice
  and is left alone, as is everything with ``BIGNTK_XLA_CPU_PATH=default``;
  ``BIGNTK_XLA_CPU_PATH=xla`` forces the other path.
* If the installed XLA does not know the option, it is dropped for the rest of
  the process (:func:`compile_with_options`, which any caller passing compiler
  options uses: ``process_cache().refused_options``, one debug log line) and
  XLA's defaults apply.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax

from bigntk.empirical._planning._cache import process_cache
from bigntk.empirical._trees import has_tracer

logger = logging.getLogger(__name__)

YNN_FUSION_TYPE = "xla_cpu_experimental_ynn_fusion_type"
PATHS = ("default", "xla")
ENV = "BIGNTK_XLA_CPU_PATH"
TRIAL_ENV = "BIGNTK_CPU_PATH_TRIAL"
#: a program is timed on the other path only if its first run took this long (seconds):
#: shorter ones gain little in absolute terms, longer ones cost too much to run twice
TRIAL_S = (0.002, 1.0)

_OPTIONS = {"default": None, "xla": {YNN_FUSION_TYPE: ""}}


def cpu_compiler_options() -> dict[str, str]:
    """Options for ``jax.jit(..., compiler_options=)`` that select XLA:CPU's own kernels.

    For a kernel function traced inside your own ``jax.jit`` on CPU: convolutional
    models' kernels are usually faster this way (see ``bigntk.empirical._planning._cpu_path``).
    """
    return dict(_OPTIONS["xla"])


def trial_wanted() -> bool:
    """Whether explicit implementations time their program on the other path too."""
    value = os.environ.get(TRIAL_ENV, "").strip().lower()
    if value in ("", "0", "off", "false", "no"):
        return False
    if value in ("1", "on", "true", "yes"):
        return True
    raise ValueError(
        f"{TRIAL_ENV}={os.environ[TRIAL_ENV]!r} is not understood: expected 1 (time an "
        "explicit implementation's program on both XLA:CPU paths once and record the "
        "faster) or 0 (the default: the recorded path, else the rule). Unset it or use one "
        "of those."
    )


def options(path: str | None) -> dict[str, str] | None:
    """The compiler options of ``path`` (None: XLA's defaults)."""
    opts = None if path is None else _OPTIONS[path]
    return None if opts is None or refused(opts) else opts


def paths(platform: str) -> tuple[str, ...]:
    """The paths to choose from on ``platform``, the rule's first; () where there is no choice."""
    if (
        platform != "cpu"
        or refused(_OPTIONS["xla"])
        or YNN_FUSION_TYPE in os.environ.get("XLA_FLAGS", "")
    ):
        return ()
    setting = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if setting in PATHS:
        return (setting,)
    if setting != "auto":
        raise ValueError(
            f"{ENV}={os.environ[ENV]!r} is not understood: expected 'auto' (the default: "
            "choose per program), 'default' (XLA's defaults) or 'xla' (XLA:CPU's own "
            "kernels, no YNNPACK). Unset it or use one of those."
        )
    return PATHS


def rule(lowered: Any) -> str:
    """The path the rule gives a lowered program: ``'xla'`` if it has a convolution."""
    try:
        text = lowered.as_text()
    except Exception:  # noqa: BLE001 - no text: XLA's defaults
        return "default"
    return "xla" if "convolution" in text else "default"


def first_path(platform: str, lowered: Any) -> str | None:
    """The path to compile ``lowered`` for first on ``platform`` (None: no choice)."""
    choices = paths(platform)
    if not choices:
        return None
    return choices[0] if len(choices) == 1 else rule(lowered)


def compile_by_rule(lowered: Any, platform: str) -> tuple[Any, str | None]:
    """``(executable, path)``: ``lowered`` compiled for :func:`first_path` (no timing)."""
    path = first_path(platform, lowered)
    return compile_lowered(lowered, path), path


def other_paths(platform: str, path: str | None) -> tuple[str, ...]:
    """The paths still worth timing after ``path``."""
    return tuple(p for p in paths(platform) if path is not None and p != path)


def compile_lowered(lowered: Any, path: str | None) -> Any:
    """``lowered.compile()`` for ``path`` (None or ``'default'``: XLA's defaults)."""
    return compile_with_options(lowered, options(path))


def compile_with_options(lowered: Any, opts: Mapping[str, Any] | None) -> Any:
    """``lowered.compile(compiler_options=opts)``, or with the backend's defaults where it
    refuses one of ``opts``.

    A refusal (an error that names one of the options) is remembered for the process
    (``process_cache().refused_options``): those options are not passed again. Any other
    compile error is raised.
    """
    if opts and not refused(opts):
        try:
            return lowered.compile(compiler_options=dict(opts))
        except Exception as e:
            if not note_refusal(e, opts):
                raise
    return lowered.compile()


def refused(opts: Mapping[str, Any]) -> bool:
    """Whether the backend refused one of ``opts`` earlier in this process."""
    return not process_cache().refused_options.isdisjoint(opts)


def note_refusal(error: BaseException, opts: Mapping[str, Any]) -> bool:
    """Whether ``error`` is the backend refusing one of ``opts`` (the error names it and
    speaks of an option); if so, remember it so that it is not passed again."""
    text = str(error)
    named = [name for name in opts if name in text]
    if not named or "option" not in text.lower():
        return False
    logger.debug("This XLA refuses %s (%s); using its defaults.", ", ".join(named), error)
    process_cache().refused_options.update(named)
    return True


class PathJit:
    """``jax.jit(fn, **jit_kwargs)`` that compiles top-level calls for a CPU path.

    Inside another trace (a user's ``jax.jit`` or ``jax.vmap``) the plain jit
    runs: jax takes compiler options only at the top level.
    """

    def __init__(self, fn: Callable, **jit_kwargs: Any):
        self._fn, self._kwargs = fn, jit_kwargs
        self.plain = jax.jit(fn, **jit_kwargs)
        self._tuned: dict[str, Any] = {}

    def lower(self, *args: Any, **kwargs: Any) -> Any:
        return self.plain.lower(*args, **kwargs)

    def call(self, path: str | None, *args: Any, **kwargs: Any) -> Any:
        opts = options(path)
        if opts is None or has_tracer((args, kwargs)):
            return self.plain(*args, **kwargs)
        if path not in self._tuned:
            self._tuned[path] = jax.jit(self._fn, compiler_options=opts, **self._kwargs)
        try:
            return self._tuned[path](*args, **kwargs)
        except ValueError as e:  # inside a trace that passed no tracer to this call
            if "compiler_options" not in str(e):
                raise
        except Exception as e:
            if not note_refusal(e, opts):
                raise
        return self.plain(*args, **kwargs)
