"""Kernel regression and spectra with built kernels: in memory (Cholesky), out of core
(PCG over Dask), or held by Ray actors (:class:`DistributedKernel`: the store read once).

Usage::

    fitted = bigntk.solve.fit(k_train_train, y_train, diag_reg=1e-4)
    prediction = fitted.predict(k_test_train, k_test_test)  # .mean, .variance, .info
    fitted = bigntk.solve.fit("train.zarr", y_train, distributed=True)  # Ray actors
    top = bigntk.solve.eigh_topk("train.zarr", 10, distributed=True)  # .eigenvalues

``k_*`` are NumPy arrays, the lazy Dask arrays of :func:`bigntk.open_kernel`, or
store paths.
"""

from bigntk.solve._cg import CGResult as CGResult
from bigntk.solve._cg import CGState as CGState
from bigntk.solve._cg import pcg as pcg
from bigntk.solve._distributed import DistributedKernel as DistributedKernel
from bigntk.solve._precondition import BlockJacobi as BlockJacobi
from bigntk.solve._precondition import Nystrom as Nystrom
from bigntk.solve._regression import KernelRegression as KernelRegression
from bigntk.solve._regression import Prediction as Prediction
from bigntk.solve._regression import SolveInfo as SolveInfo
from bigntk.solve._regression import fit as fit
from bigntk.solve._regression import kernel_regression as kernel_regression
from bigntk.solve._spectrum import Spectrum as Spectrum
from bigntk.solve._spectrum import eigh_topk as eigh_topk

__all__ = [
    "BlockJacobi",
    "CGResult",
    "CGState",
    "DistributedKernel",
    "KernelRegression",
    "Nystrom",
    "Prediction",
    "SolveInfo",
    "Spectrum",
    "eigh_topk",
    "fit",
    "kernel_regression",
    "pcg",
]
