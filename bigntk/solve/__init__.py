"""Kernel regression with built kernels: in memory (Cholesky) or out of core (PCG over Dask).

Usage::

    fitted = bigntk.solve.fit(k_train_train, y_train, diag_reg=1e-4)
    prediction = fitted.predict(k_test_train, k_test_test)  # .mean, .variance, .info

``k_*`` are NumPy arrays or the lazy Dask arrays of :func:`bigntk.open_kernel`.
"""

from bigntk.solve._cg import CGResult as CGResult
from bigntk.solve._cg import pcg as pcg
from bigntk.solve._precondition import BlockJacobi as BlockJacobi
from bigntk.solve._precondition import Nystrom as Nystrom
from bigntk.solve._regression import KernelRegression as KernelRegression
from bigntk.solve._regression import Prediction as Prediction
from bigntk.solve._regression import SolveInfo as SolveInfo
from bigntk.solve._regression import fit as fit
from bigntk.solve._regression import kernel_regression as kernel_regression

__all__ = [
    "BlockJacobi",
    "CGResult",
    "KernelRegression",
    "Nystrom",
    "Prediction",
    "SolveInfo",
    "fit",
    "kernel_regression",
    "pcg",
]
