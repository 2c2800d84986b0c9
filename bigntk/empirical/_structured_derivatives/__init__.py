"""STRUCTURED_DERIVATIVES (implementation 3): the NTK from the structure of each primitive."""

from bigntk.empirical._structured_derivatives._ntk import (
    ntk_structured_derivatives as ntk_structured_derivatives,
)

__all__ = ["ntk_structured_derivatives"]
