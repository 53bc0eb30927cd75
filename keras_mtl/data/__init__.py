"""Multi-dataset training inside `model.fit`.

Several `tf.data` sources, each labelled for its own subset of tasks, are
mixed into one dataset that plain `model.fit` consumes (`interleave`), and
validated source by source (`SourceValidation`):

- `schedules`: which source each batch comes from, how long an epoch is;
- `sources`: the sources' specs checked, each padded to every task;
- `interleaving`: `interleave`, the mixed, prefetched `tf.data` pipeline.

`SourceValidation` lives beside the training step
(`keras_mtl.training.source_validation`), which the model imports without
importing this package (TensorFlow); it is re-exported here.
"""

from keras_mtl.data.interleaving import interleave
from keras_mtl.data.schedules import ANNEALED_DECAY
from keras_mtl.data.schedules import EPOCHS
from keras_mtl.data.schedules import SCHEDULES
from keras_mtl.data.schedules import epoch_length
from keras_mtl.data.schedules import sampling_probabilities
from keras_mtl.training.source_validation import SourceValidation

__all__ = [
    "ANNEALED_DECAY",
    "EPOCHS",
    "SCHEDULES",
    "SourceValidation",
    "epoch_length",
    "interleave",
    "sampling_probabilities",
]
