"""Datasets bundled with bigntk's dependencies (nothing is downloaded)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bigntk.errors import BuildInputError

BUILTIN_KEYS = {"digits": ("builtin", "split", "n"), "synthetic": ("builtin", "shape", "seed")}
DIGITS_SPLITS = {"train": slice(0, 1500), "test": slice(1500, 1797), "all": slice(0, 1797)}


def load_builtin(
    name: str,
    split: str = "all",
    *,
    n: int | None = None,
    shape: Sequence[int] | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """A bundled dataset (nothing is downloaded).

    * ``'digits'``: scikit-learn's 8x8 handwritten digits. ``split``:
      ``'train'`` (the first 1,500), ``'test'`` (the other 297) or ``'all'``;
      ``n`` keeps the first ``n`` of the split. Returns ``x`` float32
      ``(N, 8, 8, 1)`` in ``[0, 1]`` and labels ``y`` int64 ``(N,)``.
    * ``'synthetic'``: standard normal float32 of ``shape`` (``shape[0]``
      examples) drawn from ``seed``. Returns ``(x, None)``.
    """
    if name == "digits":
        if split not in DIGITS_SPLITS:
            raise BuildInputError(f"split must be one of {list(DIGITS_SPLITS)}, got {split!r}.")
        from sklearn.datasets import load_digits

        digits = load_digits()
        part = DIGITS_SPLITS[split]
        x = (digits.images[part] / 16.0).astype(np.float32)[..., None]
        y = digits.target[part].astype(np.int64)
        return (x, y) if n is None else (x[:n], y[:n])
    if name == "synthetic":
        if shape is None or len(shape) < 1:
            raise BuildInputError(f"synthetic data needs a shape (N, *features), got {shape!r}.")
        rng = np.random.default_rng(seed)
        return rng.standard_normal(tuple(shape), dtype=np.float32), None
    raise BuildInputError(f"no built-in dataset {name!r}; choose one of {list(BUILTIN_KEYS)}.")
