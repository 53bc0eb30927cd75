"""Loss-weighting methods for `MultiTaskModel.compile(weighting=...)`.

`get("dwa")` returns a method from its name or alias (case-insensitive, `_`
and `-` ignored); `names()` lists the names, `methods()` the classes. Every
method is one module here, citing its paper; the tables of docs/weighting.md are
built from the registry (`keras_mtl.weighting.registry`), which also takes
methods defined elsewhere (`@keras_mtl.weighting.register`).

Two families behind one base class:
- loss-level (`Weighting`): map the per-task losses of a step to one scalar;
- gradient-level (`GradientWeighting`, `mode="params"` or `"representation"`,
  see `keras_mtl.weighting.gradient_base`): combine per-task gradients.

Every method reports the weight it gives each task as the `weight_<task>`
metric of training (not of `evaluate`): for a loss-level method, the weight of
the task's loss in the total; for a gradient-level method, the coefficient
`w_t` of the task's gradient in the shared update `Σ_t w_t g_t` (GradDrop,
which masks signs rather than weighting, reports 1 per labelled task). A
task with no label in a batch (its labelled count, which the model passes
with the losses, is 0) is left out of the step: methods whose weights are
state (`Static`, `InverseSize`, `Uncertainty`, `DynamicWeightAverage`,
`IMTLL`) report that state, the others (whose weights depend on the step's
losses or draws) report 0 for it.
"""

from keras_mtl.weighting.base import Weighting
from keras_mtl.weighting.gradient_base import GradientWeighting
from keras_mtl.weighting.registry import get
from keras_mtl.weighting.registry import get_class
from keras_mtl.weighting.registry import markdown_table
from keras_mtl.weighting.registry import methods
from keras_mtl.weighting.registry import names
from keras_mtl.weighting.registry import register
from keras_mtl.weighting.registry import unregister

# The methods, in the order of docs/weighting.md's tables (registration order).
from keras_mtl.weighting.equal import Equal  # noqa: E402  (registers)
from keras_mtl.weighting.static import Static
from keras_mtl.weighting.inverse_size import InverseSize
from keras_mtl.weighting.inverse_size import count_labels
from keras_mtl.weighting.uncertainty import Uncertainty
from keras_mtl.weighting.dynamic_weight_average import DynamicWeightAverage
from keras_mtl.weighting.random_loss_weighting import RandomLossWeighting
from keras_mtl.weighting.geometric_loss import GeometricLoss
from keras_mtl.weighting.scale_invariant import ScaleInvariant
from keras_mtl.weighting.famo import FAMO
from keras_mtl.weighting.smooth_tchebycheff import SmoothTchebycheff
from keras_mtl.weighting.imtl_l import IMTLL
from keras_mtl.weighting.mgda import MGDA
from keras_mtl.weighting.pcgrad import PCGrad
from keras_mtl.weighting.cagrad import CAGrad
from keras_mtl.weighting.imtl import IMTL
from keras_mtl.weighting.aligned_mtl import AlignedMTL
from keras_mtl.weighting.grad_norm import GradNorm
from keras_mtl.weighting.nash_mtl import NashMTL
from keras_mtl.weighting.fair_grad import FairGrad
from keras_mtl.weighting.grad_vac import GradVac
from keras_mtl.weighting.grad_drop import GradDrop
from keras_mtl.weighting.upgrad import UPGrad
from keras_mtl.weighting.dual_proj import DualProj
from keras_mtl.weighting.conflict_free import ConFIG
from keras_mtl.weighting.db_mtl import DBMTL
from keras_mtl.weighting.excess_mtl import ExcessMTL
from keras_mtl.weighting.moco import MoCo
from keras_mtl.weighting.sdmgrad import SDMGrad
from keras_mtl.weighting.modo import MoDo

#: Short aliases from the literature.
DWA = DynamicWeightAverage
RLW = RandomLossWeighting
GLS = GeometricLoss
STCH = SmoothTchebycheff

__all__ = [
    "AlignedMTL",
    "CAGrad",
    "ConFIG",
    "DBMTL",
    "DWA",
    "DualProj",
    "DynamicWeightAverage",
    "Equal",
    "ExcessMTL",
    "FAMO",
    "FairGrad",
    "GLS",
    "GeometricLoss",
    "GradDrop",
    "GradNorm",
    "GradVac",
    "GradientWeighting",
    "IMTL",
    "IMTLL",
    "InverseSize",
    "MGDA",
    "MoCo",
    "MoDo",
    "NashMTL",
    "PCGrad",
    "SDMGrad",
    "RLW",
    "RandomLossWeighting",
    "STCH",
    "ScaleInvariant",
    "SmoothTchebycheff",
    "Static",
    "UPGrad",
    "Uncertainty",
    "Weighting",
    "count_labels",
    "get",
    "get_class",
    "markdown_table",
    "methods",
    "names",
    "register",
    "unregister",
]
