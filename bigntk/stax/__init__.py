"""A small layer library compatible with Neural Tangents' ``stax``.

Neural Tangents 0.6.x ``stax`` code runs with only the import changed::

    from bigntk import stax

    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(512, W_std=1.5, b_std=0.05), stax.Relu(), stax.Dense(1))
    output_shape, params = init_fn(jax.random.key(0), (-1, 10))
    y = apply_fn(params, x)                        # (n, 1)
    k = kernel_fn(x1, x2, get=("nngp", "ntk"))     # each (n1, n2)

Parameter trees, layouts, defaults and random initialisation match Neural
Tangents. ``kernel_fn`` is closed form for networks of ``Dense``, ``Relu``,
``Erf``, ``Identity``, ``Flatten`` (and ``Dropout(mode='test')``) under
``serial``; other layers' ``kernel_fn`` raise
:class:`~bigntk.errors.UnsupportedLayerError`.
"""

from bigntk.stax._combinators import FanInConcat as FanInConcat
from bigntk.stax._combinators import FanInSum as FanInSum
from bigntk.stax._combinators import FanOut as FanOut
from bigntk.stax._combinators import parallel as parallel
from bigntk.stax._combinators import serial as serial
from bigntk.stax._dropout import Dropout as Dropout
from bigntk.stax._elementwise import Erf as Erf
from bigntk.stax._elementwise import Gelu as Gelu
from bigntk.stax._elementwise import Relu as Relu
from bigntk.stax._elementwise import Tanh as Tanh
from bigntk.stax._layer import Kernel as Kernel
from bigntk.stax._linear import Conv as Conv
from bigntk.stax._linear import Dense as Dense
from bigntk.stax._normalization import LayerNorm as LayerNorm
from bigntk.stax._pooling import AvgPool as AvgPool
from bigntk.stax._pooling import GlobalAvgPool as GlobalAvgPool
from bigntk.stax._reshape import Flatten as Flatten
from bigntk.stax._reshape import Identity as Identity

__all__ = [
    "AvgPool",
    "Conv",
    "Dense",
    "Dropout",
    "Erf",
    "FanInConcat",
    "FanInSum",
    "FanOut",
    "Flatten",
    "Gelu",
    "GlobalAvgPool",
    "Identity",
    "Kernel",
    "LayerNorm",
    "Relu",
    "Tanh",
    "parallel",
    "serial",
]
