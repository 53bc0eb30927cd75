"""Loss-weighting methods for `MultiTaskModel.compile(weighting=...)`.

`get("equal")` returns a method from its name or alias (case-insensitive);
`names()` lists them.

Loss-level methods, one per file, each citing its paper:

| name (aliases)                    | class                  | weights                          |
| --------------------------------- | ---------------------- | -------------------------------- |
| equal                             | `Equal`                | 1 each                           |
| static                            | `Static`               | given; `LossWeightScheduler`     |
| inverse_size                      | `InverseSize`          | ∝ 1 / labelled examples, sum T   |
| uncertainty (uw)                  | `Uncertainty`          | learned log-variances            |
| dynamic_weight_average (dwa)      | `DynamicWeightAverage` | ratio of last two epoch losses   |
| random_loss_weighting (rlw)       | `RandomLossWeighting`  | softmax of N(0, 1) draws, sum 1  |
| geometric_loss (gls)              | `GeometricLoss`        | geometric mean of the losses     |
| famo                              | `FAMO`                 | adaptive logits, sum 1           |

Gradient-level methods (`GradientWeighting`, `mode="params"` or
`"representation"`; see `keras_mtl.weighting.gradient_base`): `mgda`,
`pcgrad`, `cagrad`, `imtl`, `aligned_mtl`, `grad_norm`, `nash_mtl`,
`grad_vac`, `grad_drop` (representation only), `upgrad`.

Every method reports the weight it gives each task as the `weight_<task>`
metric. A task with no label in a batch has loss 0 and is left out of the
step: methods whose weights are state (`Static`, `InverseSize`,
`Uncertainty`, `DynamicWeightAverage`) report that state, the others (whose
weights depend on the step's losses or draws) report 0 for it.
"""

import keras

from keras_mtl.weighting.aligned_mtl import AlignedMTL
from keras_mtl.weighting.base import Weighting
from keras_mtl.weighting.cagrad import CAGrad
from keras_mtl.weighting.dynamic_weight_average import DynamicWeightAverage
from keras_mtl.weighting.equal import Equal
from keras_mtl.weighting.famo import FAMO
from keras_mtl.weighting.geometric_loss import GeometricLoss
from keras_mtl.weighting.grad_drop import GradDrop
from keras_mtl.weighting.grad_norm import GradNorm
from keras_mtl.weighting.grad_vac import GradVac
from keras_mtl.weighting.gradient_base import GradientWeighting
from keras_mtl.weighting.inverse_size import InverseSize
from keras_mtl.weighting.imtl import IMTL
from keras_mtl.weighting.inverse_size import count_labels
from keras_mtl.weighting.mgda import MGDA
from keras_mtl.weighting.nash_mtl import NashMTL
from keras_mtl.weighting.pcgrad import PCGrad
from keras_mtl.weighting.random_loss_weighting import RandomLossWeighting
from keras_mtl.weighting.static import Static
from keras_mtl.weighting.uncertainty import Uncertainty
from keras_mtl.weighting.upgrad import UPGrad

#: Short aliases from the literature (also in REGISTRY, lower case).
DWA = DynamicWeightAverage
RLW = RandomLossWeighting
GLS = GeometricLoss

#: name (lower case) -> class. Aliases point at the same class.
REGISTRY = {
    "equal": Equal,
    "static": Static,
    "inverse_size": InverseSize,
    "inversesize": InverseSize,
    "uncertainty": Uncertainty,
    "uw": Uncertainty,
    "dynamic_weight_average": DynamicWeightAverage,
    "dynamicweightaverage": DynamicWeightAverage,
    "dwa": DynamicWeightAverage,
    "random_loss_weighting": RandomLossWeighting,
    "randomlossweighting": RandomLossWeighting,
    "rlw": RandomLossWeighting,
    "geometric_loss": GeometricLoss,
    "geometricloss": GeometricLoss,
    "gls": GeometricLoss,
    "famo": FAMO,
    # Gradient-level methods.
    "mgda": MGDA,
    "pcgrad": PCGrad,
    "cagrad": CAGrad,
    "imtl": IMTL,
    "imtl_g": IMTL,
    "aligned_mtl": AlignedMTL,
    "alignedmtl": AlignedMTL,
    "amtl": AlignedMTL,
    "grad_norm": GradNorm,
    "gradnorm": GradNorm,
    "nash_mtl": NashMTL,
    "nashmtl": NashMTL,
    "nash": NashMTL,
    "grad_vac": GradVac,
    "gradvac": GradVac,
    "gradient_vaccine": GradVac,
    "grad_drop": GradDrop,
    "graddrop": GradDrop,
    "gradient_sign_dropout": GradDrop,
    "upgrad": UPGrad,
}

__all__ = [
    "AlignedMTL",
    "CAGrad",
    "IMTL",
    "MGDA",
    "PCGrad",
    "DWA",
    "DynamicWeightAverage",
    "Equal",
    "FAMO",
    "GLS",
    "GeometricLoss",
    "GradDrop",
    "GradNorm",
    "GradVac",
    "GradientWeighting",
    "NashMTL",
    "UPGrad",
    "InverseSize",
    "RLW",
    "RandomLossWeighting",
    "REGISTRY",
    "Static",
    "Uncertainty",
    "Weighting",
    "count_labels",
    "get",
    "names",
]


def names():
    """Registered method names and aliases."""
    return sorted(REGISTRY)


def get(identifier):
    """Returns a `Weighting` from an instance, a registered name or a config.

    Example:

    >>> get("equal")
    <Equal name=equal..., built=False>
    >>> type(get("DWA")).__name__
    'DynamicWeightAverage'
    """
    if isinstance(identifier, Weighting):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in REGISTRY:
        return REGISTRY[identifier.lower()]()
    if isinstance(identifier, dict):
        weighting = keras.saving.deserialize_keras_object(identifier)
        if isinstance(weighting, Weighting):
            return weighting
    raise ValueError(
        "Invalid value received for argument `weighting`. Expected a "
        f"`keras_mtl.weighting.Weighting` or one of the names {names()}. "
        f"Received: weighting={identifier!r}"
    )
