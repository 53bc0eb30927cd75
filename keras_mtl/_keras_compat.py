"""The only module that touches Keras internals.

Keras marks what is private (`keras.src.*`, names with a leading underscore)
and may change it in any release. keras_mtl uses public APIs everywhere
else; each use left here says why there is no public way, which Keras
versions it was checked against, and has a test in
`tests/test_keras_compat.py` that fails loudly when Keras changes it (run the
suite against a new Keras before widening the supported range).

Checked against: Keras 3.15.
"""

import keras


def loss_tracker(model):
    """The `Mean` metric behind the `loss` log of a compiled Keras model.

    Why: a model that writes its own `train_step` updates it (as Keras' own
    steps do) so that `loss` keeps its place and meaning in the logs; Keras
    creates it in `compile()` and exposes it only through `model.metrics`,
    where it is the metric named "loss" (`Trainer._loss_tracker`).
    """
    tracker = getattr(model, "_loss_tracker", None)
    if not isinstance(tracker, keras.metrics.Mean):
        raise RuntimeError(
            "keras_mtl needs Keras' loss tracker (`Trainer._loss_tracker`, a "
            f"`keras.metrics.Mean` created by `compile()`); Keras {keras.__version__} "
            f"has {tracker!r}. This Keras version is not supported yet."
        )
    return tracker


def metric_direction(metric):
    """`"up"`, `"down"` or None: whether larger values of `metric` are better.

    Why: Keras' `EarlyStopping` / `ModelCheckpoint` with `mode="auto"` find a
    monitored metric's direction only among the metrics `compile` wrapped in
    its own (private) containers, so they refuse a task metric such as
    `val_age_mae`; the direction is the metric's `_direction`, set by its
    class and with no public accessor. `MultiTaskModel.fit` sets those
    callbacks' `mode` from it.
    """
    direction = getattr(metric, "_direction", None)
    return direction if direction in ("up", "down") else None


def flatten_layers(layer):
    """Every layer inside `layer` (recursively, `layer` excluded), each once.

    Why: `keras.Model.layers` lists only the top-level layers of a graph;
    layers nested in custom layers (experts, attention modules) are reached
    through Keras' own tracking (`Layer._flatten_layers`).
    """
    return list(layer._flatten_layers(include_self=False, recursive=True))


def call_count(layer):
    """How many times `layer` was called on symbolic inputs (graph nodes).

    Why: `layer.output` silently returns the first call's output when a
    layer is shared; a branch point must refuse shared layers, and only the
    layer's inbound nodes (`Operation._inbound_nodes`) tell.
    """
    return len(layer._inbound_nodes)


# --- MultiWorkerMirroredStrategy (keras-team/keras#20585) ---------------------
def _is_multi_worker(strategy):
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def multi_worker_logs(logs):
    """`logs` ready for Keras' TF trainer under `MultiWorkerMirroredStrategy`.

    Why: that trainer averages each log over replicas *and its axis 0*, which
    fails on scalars (keras-team/keras#20585, open in Keras 3.15). Each log
    gets a leading axis of 1, which that reduction removes again. Under any
    other strategy (or none) the logs are returned as they are.
    """
    if not _is_multi_worker(_current_strategy()):
        return logs
    return keras.tree.map_structure(lambda v: keras.ops.expand_dims(v, 0), logs)


def _current_strategy():
    import tensorflow as tf

    return tf.distribute.get_strategy()


class MultiWorkerBuild:
    """Mixin for a `keras.Model`: its symbolic build under
    `MultiWorkerMirroredStrategy`.

    Why: Keras' TF trainer (`_maybe_symbolic_build`, a private method, 3.15)
    reduces the whole first batch with one `strategy.reduce` to build the
    metrics symbolically, which `MultiWorkerMirroredStrategy` refuses
    (keras-team/keras#20585). The build needs shapes and dtypes only: it
    gets this worker's first replica batch instead. Other strategies are
    untouched.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self.distribute_strategy if keras.backend.backend() == "tensorflow" else None
        if iterator is not None and data_batch is None and _is_multi_worker(strategy):
            for _, _, it in iterator:
                batch = next(it)
                data_batch = keras.tree.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0], batch
                )
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


# --- optimizers ---------------------------------------------------------------
def variable_index(optimizer, variable):
    """The position of `variable` in the list `optimizer` was built with.

    Why: an optimizer's `update_step(gradient, variable, learning_rate)` gets
    the variable as Keras hands it, which under `tf.distribute` is a
    per-replica `tf.Variable`, not the `keras.Variable` the optimizer was
    built with; only Keras' own key (`BaseOptimizer._get_variable_index`,
    with the TF backend's `_var_key`) maps it back. Keras' guide to custom
    optimizers uses that private method; there is no public one (3.15).
    """
    index = optimizer._get_variable_index(variable)
    if not isinstance(index, int):
        raise RuntimeError(
            "keras_mtl needs the index of a variable in an optimizer's build "
            f"list (`BaseOptimizer._get_variable_index`); Keras {keras.__version__} "
            f"returned {index!r}. This Keras version is not supported yet."
        )
    return index


def iterations_variable(optimizer):
    """The variable counting `optimizer`'s `apply` calls (its step count).

    Why: a wrapper that runs a wrapped optimizer's update rule itself must
    advance that optimizer's count (Adam's bias correction reads it).
    `optimizer.iterations` is that variable only without gradient
    accumulation; with `gradient_accumulation_steps` it is the tensor
    `_iterations // steps`, which cannot be assigned. The counter itself is
    `BaseOptimizer._iterations` (3.15).
    """
    iterations = getattr(optimizer, "_iterations", None)
    if not isinstance(iterations, keras.Variable):
        raise RuntimeError(
            "keras_mtl needs an optimizer's step counter (`BaseOptimizer._iterations`, "
            f"a `keras.Variable`); Keras {keras.__version__} has {iterations!r}. "
            "This Keras version is not supported yet."
        )
    return iterations


def uses_weight_decay(optimizer, variable):
    """Whether `optimizer`'s decoupled weight decay applies to `variable`.

    Why: the settings of `optimizer.exclude_from_weight_decay(var_list=...,
    var_names=...)` can be set but not read: Keras keeps them in private
    attributes and asks `BaseOptimizer._use_weight_decay` (which also knows
    the variable keys of `tf.distribute`). A wrapper that applies the decay
    at its own rate must ask the same (3.15). It does not look at
    `optimizer.weight_decay` (public): decay applies only where that is set.
    """
    uses = optimizer._use_weight_decay(variable)
    if not isinstance(uses, bool):
        raise RuntimeError(
            "keras_mtl needs an optimizer's weight-decay rule "
            f"(`BaseOptimizer._use_weight_decay`); Keras {keras.__version__} "
            f"returned {uses!r}. This Keras version is not supported yet."
        )
    return uses
