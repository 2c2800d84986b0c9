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

The other elementwise nonlinearities of Neural Tangents (``ABRelu``,
``LeakyRelu``, ``Abs``, ``Sign``, ``Sin``, ``Cos``, ``Rbf``, ``Exp``,
``Gaussian``, ``Gabor``, ``ExpNormalized``, ``Sigmoid_like``, ``Polynomial``,
``Monomial``, ``Hermite``, ``RectifiedMonomial``, ``Elementwise`` with an
``nngp_fn``, ``ElementwiseNumerical``) have closed forms too, after a
``Dense`` layer; so do ``SumPool``, ``GlobalSumPool``, ``AvgPool`` and
``GlobalAvgPool`` with the default axes (a nonlinearity after pooling
*activations* raises, see ``bigntk.stax._pool_kernels``).
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
from bigntk.stax._nonlinear import ABRelu as ABRelu
from bigntk.stax._nonlinear import Abs as Abs
from bigntk.stax._nonlinear import Cos as Cos
from bigntk.stax._nonlinear import Exp as Exp
from bigntk.stax._nonlinear import ExpNormalized as ExpNormalized
from bigntk.stax._nonlinear import Gabor as Gabor
from bigntk.stax._nonlinear import Gaussian as Gaussian
from bigntk.stax._nonlinear import LeakyRelu as LeakyRelu
from bigntk.stax._nonlinear import Rbf as Rbf
from bigntk.stax._nonlinear import Sigmoid_like as Sigmoid_like
from bigntk.stax._nonlinear import Sign as Sign
from bigntk.stax._nonlinear import Sin as Sin
from bigntk.stax._normalization import LayerNorm as LayerNorm
from bigntk.stax._polynomial import Elementwise as Elementwise
from bigntk.stax._polynomial import ElementwiseNumerical as ElementwiseNumerical
from bigntk.stax._polynomial import Hermite as Hermite
from bigntk.stax._polynomial import Monomial as Monomial
from bigntk.stax._polynomial import Polynomial as Polynomial
from bigntk.stax._polynomial import RectifiedMonomial as RectifiedMonomial
from bigntk.stax._pooling import AvgPool as AvgPool
from bigntk.stax._pooling import GlobalAvgPool as GlobalAvgPool
from bigntk.stax._requirements import Bool as Bool
from bigntk.stax._requirements import Diagonal as Diagonal
from bigntk.stax._requirements import layer as layer
from bigntk.stax._requirements import requires as requires
from bigntk.stax._reshape import Flatten as Flatten
from bigntk.stax._reshape import Identity as Identity
from bigntk.stax._sum_pooling import GlobalSumPool as GlobalSumPool
from bigntk.stax._sum_pooling import SumPool as SumPool

__all__ = [
    "ABRelu",
    "Abs",
    "Aggregate",
    "AggregateImplementation",
    "AttentionMechanism",
    "AvgPool",
    "Bool",
    "Conv",
    "ConvLocal",
    "ConvTranspose",
    "Cos",
    "Dense",
    "Diagonal",
    "DotGeneral",
    "Dropout",
    "Elementwise",
    "ElementwiseNumerical",
    "Erf",
    "Exp",
    "ExpNormalized",
    "FanInConcat",
    "FanInProd",
    "FanInSum",
    "FanOut",
    "Flatten",
    "Gabor",
    "Gaussian",
    "Gelu",
    "GlobalAvgPool",
    "GlobalSelfAttention",
    "GlobalSumPool",
    "Hermite",
    "Identity",
    "ImageResize",
    "Index",
    "Kernel",
    "LayerNorm",
    "LeakyRelu",
    "MaskedArray",
    "Monomial",
    "Padding",
    "Polynomial",
    "PositionalEmbedding",
    "Rbf",
    "RectifiedMonomial",
    "Relu",
    "Sigmoid_like",
    "Sign",
    "Sin",
    "Slice",
    "SumPool",
    "Tanh",
    "layer",
    "parallel",
    "repeat",
    "requires",
    "serial",
    "supports_masking",
    "unmask_fn",
]
