"""`Weighting`: the base class of every loss-weighting method.

A weighting turns the per-task losses `{task: scalar}` of one step into the
scalar the optimiser minimises, and reports the task weights it used. It is a
`keras.layers.Layer` so that its state (learned log-variances, loss history,
step counters) is layer weights: tracked by the model, saved in `.keras`
files and checkpoints, restored by `BackupAndRestore`. Its hyperparameters
are constructor arguments, returned by `get_config()`.

`MultiTaskModel.compile(weighting=...)` builds it with the task names
(`build({task: ()})`), so its variables exist before weights are loaded.

Label presence is data: each step the model passes, beside the losses, the
number of labelled examples (pixels for dense tasks) of every task,
`counts={task: n}`. A task with `n = 0` has no label in the batch (its loss
is 0 by convention and its gradient 0); `labelled(counts)` tells which tasks
a step can weight. A loss's value never decides presence: a negative or zero
loss is a labelled task's loss, and a non-finite one is an error (the model
stops training), not a missing label. Called without `counts` (a custom
loop, the doctests), every task counts as labelled.

A method registers itself with `keras_mtl.weighting.register`, which reads
the class attributes below (see `keras_mtl.weighting.registry`).
"""


import keras
from keras import ops

from keras_mtl._validation import check_fraction  # noqa: F401 (the methods import it from here)
from keras_mtl._validation import check_int
from keras_mtl._validation import check_number


def check_seed(seed):
    """Returns `seed` (None or an integer >= 0, NumPy's too, as an `int`),
    or raises a Keras-style `ValueError`. Random methods draw from
    `keras.random.SeedGenerator(seed)`."""
    return check_int("seed", seed, minimum=0, optional=True)


def check_lower_bounds(argument, bounds):
    """Returns `bounds`, a dict `{task: finite float}` or None, or raises a
    Keras-style `ValueError` (numpy numbers are accepted)."""
    if bounds is None:
        return None
    if not isinstance(bounds, dict):
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected None or a "
            f"dict {{task: lower bound of its loss}}. Received: {argument}={bounds!r}"
        )
    return {str(k): check_number(f"{argument}[{k!r}]", v) for k, v in bounds.items()}


def explain_lower_bounds(weighting, losses):
    """The `explain_nonfinite` hint of methods that take the logarithm of
    each loss minus its `min_losses` bound: which task's loss is not above it."""
    bounds = weighting.min_losses or {}
    below = {
        n: v for n, v in losses.items() if n in weighting.task_names and v <= bounds.get(n, 0.0)
    }
    if not below:
        return None
    return (
        f"{type(weighting).__name__} takes the logarithm of each task's loss minus its "
        f"lower bound `min_losses` (default 0); the mean loss of {below} is not above "
        f"its bound {({n: bounds.get(n, 0.0) for n in below})}. Pass "
        f"{type(weighting).__name__}(min_losses={{task: a lower bound of its loss}})."
    )


class Weighting(keras.layers.Layer):
    """Base class: maps per-task losses to `(total_loss, {task: weight})`.

    Subclasses create their variables in `build(losses_shape)` (after calling
    `super().build`) and implement `call(losses, counts=None, training=False)`.

    Args:
        **kwargs: Base layer arguments (`name`, ...).
    """

    #: The name `compile(weighting=...)` and tuning know the method by.
    registry_name = None
    #: Other names from the literature.
    aliases = ()
    #: The reference the method implements.
    paper = ""
    #: "loss" for methods that only see losses, "gradient" for methods that
    #: combine per-task gradients.
    level = "loss"
    #: `{constructor argument: keras_mtl.weighting.space spec}` searched by
    #: `keras_mtl.tuning`.
    search_space = {}

    def __init__(self, **kwargs):
        # The task losses reach the weighting in float32, and its state
        # (log-variances, FAMO's logits, loss histories) stays float32 under
        # a mixed precision policy, as Keras keeps a model's variables.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.task_names = None

    @classmethod
    def arguments_from_tasks(cls, tasks):
        """Constructor arguments the tasks determine (used by tuning):
        `{argument: value}`, none by default."""
        return {}

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

    def labelled(self, counts):
        """Boolean `(T,)` vector: True for tasks with a label in the step.

        Args:
            counts: `{task: number of labelled examples}` as the model passes
                it, or `None` (every task labelled).
        """
        if counts is None:
            return ops.ones((len(self.task_names),), "bool")
        return ops.greater(self.stack(counts), 0.0)

    def __call__(self, losses, counts=None, *args, **kwargs):
        # Keras' Layer refuses Python numbers in its positional input; accept
        # them (doctests, custom loops) as float32 tensors.
        losses = _as_tensors(losses)
        counts = _as_tensors(counts)
        return super().__call__(losses, counts, *args, **kwargs)

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

    # --- state ----------------------------------------------------------------
    # Keras' Layer saves its weights but not the state of its
    # `SeedGenerator`s; a random method must resume its stream after
    # `load_model` or `BackupAndRestore`, so its state is every variable:
    # `variables` is the weights followed by the seed states.
    def state_arrays(self):
        """The method's whole state, as numpy arrays."""
        return [ops.convert_to_numpy(v) for v in self.variables]

    def load_state(self, arrays):
        """Sets the state from `state_arrays()` of the same method and tasks."""
        variables = self.variables
        shapes = [tuple(v.shape) for v in variables]
        saved = [tuple(getattr(a, "shape", ())) for a in arrays]
        if saved != shapes:
            raise ValueError(
                f"Cannot load the state of weighting {type(self).__name__} "
                f"({self.name!r}, tasks {self.task_names}): it has variables of "
                f"shapes {shapes}, the file holds {saved}. The file was saved "
                "from a model compiled with another method or other tasks."
            )
        for variable, value in zip(variables, arrays):
            variable.assign(value)

    def _owned(self):
        # A `MultiTaskModel` saves and loads its weighting's state with its
        # own variables (so that it also reaches a model not compiled yet):
        # when Keras' saving walks the model's attributes, the weighting
        # itself writes nothing.
        return getattr(self, "_keras_mtl_owner", None) is not None

    def save_own_variables(self, store):
        if not self._owned():
            for i, array in enumerate(self.state_arrays()):
                store[f"{i}"] = array

    def load_own_variables(self, store):
        if not self._owned():
            self.load_state([store[f"{i}"] for i in range(len(store.keys()))])

    def call(self, losses, counts=None, training=False):
        raise NotImplementedError(
            f"{type(self).__name__} must implement `call(losses, counts, training)`."
        )

    def explain_nonfinite(self, losses):
        """A hint for the error raised when a training step is not finite,
        or `None`. `losses` is `{task: float}` (the epoch's mean losses so
        far); methods whose arithmetic needs a domain (a logarithm) say
        which task left it."""
        return None

    def on_epoch_begin(self, epoch):
        """Called by `MultiTaskModel.fit` before each epoch (eagerly)."""

    def on_epoch_end(self, epoch):
        """Called by `MultiTaskModel.fit` after each epoch (eagerly), before
        any checkpointing callback, so epoch-level state is saved with it."""

    def compute_output_spec(self, losses, counts=None, training=False):
        scalar = keras.KerasTensor((), dtype="float32")
        return scalar, {n: keras.KerasTensor((), dtype="float32") for n in losses}


def _as_tensors(values):
    if not isinstance(values, dict):
        return values
    return {k: ops.convert_to_tensor(v, "float32") for k, v in values.items()}


class LowerBoundedWeighting(Weighting):
    """A method that takes logarithms of the losses, shifted by their lower
    bounds `min_losses` (`{task: m_t}`, 0 for tasks left out): `L_t - m_t`
    must stay positive. Subclasses read the bounds as `self._bounds`, a
    vector in task order."""

    def __init__(self, min_losses=None, **kwargs):
        super().__init__(**kwargs)
        self.min_losses = check_lower_bounds("min_losses", min_losses)

    def build(self, losses_shape):
        super().build(losses_shape)
        bounds = self.min_losses or {}
        self.check_task_keys("min_losses", bounds, require_all=False)
        self._bounds = ops.convert_to_tensor([bounds.get(n, 0.0) for n in self.task_names], "float32")

    def explain_nonfinite(self, losses):
        return explain_lower_bounds(self, losses)

    def get_config(self):
        return {**super().get_config(), "min_losses": self.min_losses}
