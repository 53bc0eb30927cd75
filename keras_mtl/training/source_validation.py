"""Per-source validation: the model evaluated on each `tf.data` source at
epoch end, with `val_<source>_<task>_<metric>` added to the logs.

`MultiTaskModel.fit(validation_data={source: dataset})` builds this callback,
so it lives beside the training step rather than with the data pipelines
(`keras_mtl.data`, which imports TensorFlow): the sources are padded to the
model's tasks by `keras_mtl.data.sources` when the callback is built, that is only
when there are `tf.data` sources to validate.
"""

import keras

from keras_mtl._validation import check_positive_int


class SourceValidation(keras.callbacks.Callback):
    """Evaluates the model on each source at epoch end, source by source.

    For each `{source: dataset}` it runs `model.evaluate` and adds
    `val_<source>_loss` and `val_<source>_<task>_<metric>` (for the tasks
    that source labels) to the epoch's logs, which History records, e.g.
    `val_movie_sentiment_accuracy`. Sources are padded to the model's tasks
    as in `interleave` (missing markers, sample weight 0).

    Keras adds its History and progress bar after the callbacks passed to
    `fit`, so they see these keys; pass this callback before callbacks that
    monitor them (`EarlyStopping(monitor="val_movie_sentiment_auc")`).

    Args:
        datasets: Dict `{source_name: tf.data.Dataset}` of finite sources,
            batched as for `interleave`.
        batch_size: If given, each source (of single examples) is batched with it.
        map_fn: As in `interleave`.
        frequency: Evaluate every `frequency` epochs (Keras'
            `validation_freq`).
        verbose: Verbosity of each `evaluate`.

    Example:

    >>> import keras, tensorflow as tf, keras_mtl
    >>> from keras_mtl.data import interleave
    >>> trunk = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4)])
    >>> model = keras_mtl.MultiTaskModel(
    ...     trunk, [keras_mtl.tasks.Regression("a"),
    ...             keras_mtl.tasks.Regression("b")], head_units=(4,))
    >>> model.compile()
    >>> src = lambda t: tf.data.Dataset.from_tensor_slices(
    ...     (tf.zeros((4, 2)), {t: tf.ones((4, 1))})).batch(2)
    >>> history = model.fit(
    ...     interleave({"s1": src("a"), "s2": src("b")}), epochs=1, verbose=0,
    ...     callbacks=[SourceValidation({"s1": src("a"), "s2": src("b")})])
    >>> sorted(k for k in history.history if k.startswith("val_s1"))
    ['val_s1_a_loss', 'val_s1_a_mae', 'val_s1_a_rmse', 'val_s1_loss']
    """

    def __init__(self, datasets, batch_size=None, map_fn=None, frequency=1, verbose=0):
        # The sources are tf.data datasets, padded as `interleave` pads them:
        # the data pipeline is imported here, when there are sources to pad,
        # so that the model (which builds this callback for a dict of
        # `validation_data`) does not import TensorFlow.
        import tensorflow as tf

        from keras_mtl.data import sources

        super().__init__()
        self.datasets = sources.check_datasets("datasets", datasets)
        for name, ds in self.datasets.items():
            if int(ds.cardinality()) == tf.data.INFINITE_CARDINALITY:
                raise ValueError(
                    "Invalid value received for argument `datasets`. Validation "
                    f"sources must be finite; source {name!r} is infinite (use "
                    "`.take(n)`)."
                )
        if batch_size is not None:
            self.datasets = sources.batch_sources(self.datasets, batch_size)
        sources.Mixer(self.datasets, map_fn)  # Spec errors now rather than at train begin.
        self.batch_size = batch_size
        self.map_fn = map_fn
        self.frequency = check_positive_int("frequency", frequency)
        self.verbose = verbose
        self._padded = None

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        from keras_mtl.data import sources

        mixer = sources.Mixer(self.datasets, self.map_fn, sources.task_label_specs(self.model))
        self._padded = {
            name: (ds.prefetch(tf.data.AUTOTUNE), mixer.own_tasks[name])
            for name, ds in mixer.padded().items()
        }

    def on_epoch_end(self, epoch, logs=None):
        # The very dict Keras passes on to History: add to it, do not replace.
        logs = logs if logs is not None else {}
        if (epoch + 1) % self.frequency:
            return
        if self._padded is None:
            self.on_train_begin()
        task_names = [t.name for t in getattr(self.model, "tasks", [])]
        for name, (ds, own) in self._padded.items():
            results = self.model.evaluate(ds, verbose=self.verbose, return_dict=True)
            for key, value in results.items():
                if key == "loss" or _task_of(key, task_names or own) in own:
                    logs[f"val_{name}_{key}"] = value


def _task_of(key, task_names):
    """The task a metric name `<task>_<metric>` belongs to (longest match)."""
    matches = [t for t in task_names if key.startswith(f"{t}_")]
    return max(matches, key=len) if matches else None


