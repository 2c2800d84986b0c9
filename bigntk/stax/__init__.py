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

from bigntk.stax._attention import AttentionMechanism as AttentionMechanism
from bigntk.stax._attention import GlobalSelfAttention as GlobalSelfAttention
from bigntk.stax._attention import PositionalEmbedding as PositionalEmbedding
from bigntk.stax._combinators import FanInConcat as FanInConcat
from bigntk.stax._combinators import FanInProd as FanInProd
from bigntk.stax._combinators import FanInSum as FanInSum
from bigntk.stax._combinators import FanOut as FanOut
from bigntk.stax._combinators import parallel as parallel
from bigntk.stax._combinators import repeat as repeat
from bigntk.stax._combinators import serial as serial
from bigntk.stax._conv import Conv as Conv
from bigntk.stax._conv import ConvLocal as ConvLocal
from bigntk.stax._conv import ConvTranspose as ConvTranspose
from bigntk.stax._conv import Padding as Padding
from bigntk.stax._dropout import Dropout as Dropout
from bigntk.stax._elementwise import Erf as Erf
from bigntk.stax._elementwise import Gelu as Gelu
from bigntk.stax._elementwise import Relu as Relu
from bigntk.stax._elementwise import Tanh as Tanh
from bigntk.stax._fixed_linear import DotGeneral as DotGeneral
from bigntk.stax._fixed_linear import ImageResize as ImageResize
from bigntk.stax._fixed_linear import Index as Index
from bigntk.stax._fixed_linear import Slice as Slice
from bigntk.stax._graph import Aggregate as Aggregate
from bigntk.stax._graph import AggregateImplementation as AggregateImplementation
from bigntk.stax._layer import Kernel as Kernel
from bigntk.stax._linear import Dense as Dense
from bigntk.stax._masking import MaskedArray as MaskedArray
from bigntk.stax._masking import supports_masking as supports_masking
from bigntk.stax._masking import unmask_fn as unmask_fn
from bigntk.stax._normalization import LayerNorm as LayerNorm
from bigntk.stax._pooling import AvgPool as AvgPool
from bigntk.stax._pooling import GlobalAvgPool as GlobalAvgPool
from bigntk.stax._requirements import Bool as Bool
from bigntk.stax._requirements import Diagonal as Diagonal
from bigntk.stax._requirements import layer as layer
from bigntk.stax._requirements import requires as requires
from bigntk.stax._reshape import Flatten as Flatten
from bigntk.stax._reshape import Identity as Identity

__all__ = [
    "Aggregate",
    "AggregateImplementation",
    "AttentionMechanism",
    "AvgPool",
    "Bool",
    "Conv",
    "ConvLocal",
    "ConvTranspose",
    "Dense",
    "Diagonal",
    "DotGeneral",
    "Dropout",
    "Erf",
    "FanInConcat",
    "FanInProd",
    "FanInSum",
    "FanOut",
    "Flatten",
    "Gelu",
    "GlobalAvgPool",
    "GlobalSelfAttention",
    "Identity",
    "ImageResize",
    "Index",
    "Kernel",
    "LayerNorm",
    "MaskedArray",
    "Padding",
    "PositionalEmbedding",
    "Relu",
    "Slice",
    "Tanh",
    "layer",
    "parallel",
    "repeat",
    "requires",
    "serial",
    "supports_masking",
    "unmask_fn",
]
