"""Multi-dataset training inside `model.fit`."""

from keras_mtl.data.interleaving import ANNEALED_DECAY
from keras_mtl.data.interleaving import EPOCHS
from keras_mtl.data.interleaving import SCHEDULES
from keras_mtl.data.interleaving import SourceValidation
from keras_mtl.data.interleaving import _Mixer  # noqa: F401  (SourceValidation's padding)
from keras_mtl.data.interleaving import _check_datasets  # noqa: F401
from keras_mtl.data.interleaving import _task_label_specs  # noqa: F401
from keras_mtl.data.interleaving import epoch_length
from keras_mtl.data.interleaving import interleave
from keras_mtl.data.interleaving import sampling_probabilities
