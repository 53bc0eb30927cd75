"""Multi-dataset training inside `model.fit`.

Several `tf.data` sources, each labelled for its own subset of tasks, are
mixed into one dataset that plain `model.fit` consumes (`interleave`), and
validated source by source (`SourceValidation`):

- `schedules`: which source each batch comes from, how long an epoch is;
- `sources`: the sources' specs checked, each padded to every task;
- `interleaving`: `interleave`, the mixed, prefetched `tf.data` pipeline.

`SourceValidation` and `ScheduleEpochs` (the epoch a sampling schedule
draws for) live beside the training step (`keras_mtl.training`), which the
model imports without importing this package (TensorFlow); they are
re-exported here.
"""

from keras_mtl.data.interleaving import interleave
from keras_mtl.data.schedules import ANNEALED_DECAY
from keras_mtl.data.schedules import EPOCHS
from keras_mtl.data.schedules import SCHEDULES
from keras_mtl.data.schedules import epoch_length
from keras_mtl.data.schedules import sampling_probabilities
from keras_mtl.training.callbacks import ScheduleEpochs
from keras_mtl.training.source_validation import SourceValidation

__all__ = [
    "ANNEALED_DECAY",
    "EPOCHS",
    "SCHEDULES",
    "ScheduleEpochs",
    "SourceValidation",
    "epoch_length",
    "interleave",
    "sampling_probabilities",
]
