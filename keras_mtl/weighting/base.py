"""`Weighting`: the base class of every loss-weighting method.

A weighting turns the per-task losses `{task: scalar}` of one step into the
scalar the optimiser minimises, and reports the task weights it used. It is a
`keras.layers.Layer` so that its state (learned log-variances, loss history,
step counters) is layer weights: tracked by the model, saved in `.keras`
files and checkpoints, restored by `BackupAndRestore`. Its hyperparameters
are constructor arguments, returned by `get_config()`.

`MultiTaskModel.compile(weighting=...)` builds it with the task names
(`build({task: ()})`), so its variables exist before weights are loaded.

A task with no label in a batch has a loss of exactly 0 (the model's masked
mean): `labelled()` tells which tasks a step can weight.
"""

import math
import numbers

import keras
from keras import ops


def check_number(argument, value, minimum=None, exclusive=False, kind="float"):
    """Returns `value` as a float, or raises a Keras-style `ValueError`.

    `minimum` is a lower bound (exclusive when `exclusive`); NaN, infinities,
    booleans and non-numbers are refused.
    """
    ok = (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and math.isfinite(value)
        and (minimum is None or (value > minimum if exclusive else value >= minimum))
    )
    if not ok:
        bound = "" if minimum is None else f" {'>' if exclusive else '>='} {minimum}"
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected a "
            f"{kind}{bound}. Received: {argument}={value!r}"
        )
    return float(value)


def check_fraction(argument, value):
    """Returns `value` as a float in [0, 1], or raises a Keras-style `ValueError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected a float "
            f"in [0, 1]. Received: {argument}={value!r}"
        )
    return float(value)


def check_seed(seed):
    """Returns `seed` (None or an integer >= 0), or raises a Keras-style
    `ValueError`. Random methods draw from `keras.random.SeedGenerator(seed)`."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(
            "Invalid value received for argument `seed`. Expected None or "
            f"an integer >= 0. Received: seed={seed!r}"
        )
    return seed


class Weighting(keras.layers.Layer):
    """Base class: maps per-task losses to `(total_loss, {task: weight})`.

    Subclasses create their variables in `build(losses_shape)` (after calling
    `super().build`) and implement `call(losses, training=False)`.

    Args:
        **kwargs: Base layer arguments (`name`, ...).
    """

    #: "loss" for methods that only see losses, "gradient" for methods that
    #: combine per-task gradients.
    level = "loss"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.task_names = None

    def build(self, losses_shape):
        """Records the task names; `losses_shape` is `{task: ()}`."""
        self.task_names = list(losses_shape)

    def build_from_config(self, config):
        # Deserialising a saved compile config must not build the weighting:
        # `MultiTaskModel.compile` builds it right after, with the model's task
        # names, and a second `build` would create its variables twice.
        pass

    def check_task_keys(self, argument, mapping, require_all=True):
        """Raises a `ValueError` unless `mapping`'s keys are task names
        (all of them when `require_all`)."""
        missing = [n for n in self.task_names if n not in mapping] if require_all else []
        unknown = sorted(set(mapping) - set(self.task_names))
        if missing or unknown:
            raise ValueError(
                f"Invalid value received for argument `{argument}`. Expected "
                f"{'a value for every task' if require_all else 'keys among the tasks'} "
                f"{self.task_names}. Missing: {missing}; unknown: {unknown}. "
                f"Received: {argument}={mapping!r}"
            )

    def labelled(self, vector):
        """Boolean vector: True where a task's loss is positive (labelled).

        A loss of exactly 0 is what the model gives a task with no label in
        the batch; methods leave such tasks out of that step.
        """
        return ops.greater(vector, 0.0)

    def __call__(self, losses, *args, **kwargs):
        # Keras' Layer refuses Python numbers in its positional input; accept
        # them (doctests, custom loops) as float32 tensors.
        if isinstance(losses, dict):
            losses = {k: ops.convert_to_tensor(v, "float32") for k, v in losses.items()}
        return super().__call__(losses, *args, **kwargs)

    def stack(self, losses):
        """The losses as a vector, in task order."""
        return ops.stack([ops.cast(losses[n], "float32") for n in self.task_names])

    def unstack(self, vector):
        """A vector in task order, as `{task: scalar}`."""
        return {n: vector[i] for i, n in enumerate(self.task_names)}

    def weighted_sum(self, losses, weights):
        """`(sum_i w_i * L_i, {task: w_i})` for a weight vector `weights`."""
        total = ops.sum(weights * self.stack(losses))
        return total, self.unstack(weights)

    # Keras' Layer saves its own variables but not the state of its
    # `SeedGenerator`s; a random method must resume its stream after
    # `load_model` or `BackupAndRestore`, so the seed states are saved too.
    def _saved_variables(self):
        seeds = [sg.state for sg in self._seed_generators]
        return self._trainable_variables + self._non_trainable_variables + seeds

    def save_own_variables(self, store):
        for i, variable in enumerate(self._saved_variables()):
            store[f"{i}"] = variable

    def load_own_variables(self, store):
        variables = self._saved_variables()
        if len(store.keys()) != len(variables):
            raise ValueError(
                f"Weighting {self.name!r} expects {len(variables)} saved "
                f"variables but the file holds {len(store.keys())}. Was it "
                "saved with the same method and tasks?"
            )
        for i, variable in enumerate(variables):
            variable.assign(store[f"{i}"])

    def call(self, losses, training=False):
        raise NotImplementedError(
            f"{type(self).__name__} must implement `call(losses, training)`."
        )

    def on_epoch_begin(self, epoch):
        """Called by `MultiTaskModel.fit` before each epoch (eagerly)."""

    def on_epoch_end(self, epoch):
        """Called by `MultiTaskModel.fit` after each epoch (eagerly), before
        any checkpointing callback, so epoch-level state is saved with it."""

    def compute_output_spec(self, losses, training=False):
        scalar = keras.KerasTensor((), dtype="float32")
        return scalar, {n: keras.KerasTensor((), dtype="float32") for n in losses}


class WeightingCallback(keras.callbacks.Callback):
    """Forwards epoch events to a weighting; `MultiTaskModel.fit` adds it."""

    def __init__(self, weighting):
        super().__init__()
        self.weighting = weighting

    def on_epoch_begin(self, epoch, logs=None):
        self.weighting.on_epoch_begin(epoch)

    def on_epoch_end(self, epoch, logs=None):
        self.weighting.on_epoch_end(epoch)
