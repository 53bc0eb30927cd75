"""Architectures beyond hard parameter sharing.

Each architecture is plain configuration passed to
`keras_mtl.build_model(..., architecture=...)`: its `build_trunk(backbone,
task_names)` returns a Functional trunk whose output is a dict
`{task: representation}`, one per head. The layers inside are serialisable
Keras layers, so the model round-trips through `.keras` files.

- `MMoE` (Ma et al. 2018): experts shared by all tasks, one gate per task.
- `PLE` (Tang et al. 2020): shared and task-specific experts, stacked in
  extraction levels; one level is CGC.
- `DSelectK` (Hazimeh et al. 2021): experts shared by all tasks, one DSelect-k
  gate per task that selects at most `k` of them (differentiable, binary codes).
- `CrossStitchNetwork` (Misra et al. 2016): one tower per task, mixed by
  `CrossStitch` units between blocks.
- `MTAN` (Liu, Johns & Davison 2019): task attention modules
  (`MTANAttention`) on a shared backbone.
- `TaskSpecificBatchNorm`: shared weights, batch normalisation per task.
- `SoftSharing`: per-task towers tied by an L2 penalty
  (`SoftSharingPenalty`) between corresponding weights.
"""

from keras_mtl.architectures.base import Architecture
from keras_mtl.architectures.cross_stitch import CrossStitch
from keras_mtl.architectures.cross_stitch import CrossStitchNetwork
from keras_mtl.architectures.dselect_k import DSelectK
from keras_mtl.architectures.dselect_k import DSelectKGate
from keras_mtl.architectures.dselect_k import DSelectKLayer
from keras_mtl.architectures.mmoe import MMoE
from keras_mtl.architectures.mmoe import Experts
from keras_mtl.architectures.mmoe import MMoELayer
from keras_mtl.architectures.ple import PLE
from keras_mtl.architectures.ple import ExtractionNetwork
from keras_mtl.architectures.mtan import MTAN
from keras_mtl.architectures.mtan import MTANAttention
from keras_mtl.architectures.task_norm import TaskSpecificBatchNorm
from keras_mtl.architectures.soft_sharing import SoftSharing
from keras_mtl.architectures.soft_sharing import SoftSharingPenalty

__all__ = [
    "CrossStitch",
    "CrossStitchNetwork",
    "DSelectK",
    "DSelectKGate",
    "DSelectKLayer",
    "Experts",
    "ExtractionNetwork",
    "MMoE",
    "MMoELayer",
    "MTAN",
    "MTANAttention",
    "PLE",
    "SoftSharing",
    "SoftSharingPenalty",
    "TaskSpecificBatchNorm",
]
