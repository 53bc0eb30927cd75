"""KerasTuner search over multi-task architectures and loss weighting.

`MultiTaskHyperModel` is a `keras_tuner.HyperModel`: give it the tasks and
the candidate backbones and weighting methods, hand it to any KerasTuner
tuner (`RandomSearch`, `BayesianOptimization`, `Hyperband`, ...) and search
with a multi-task objective from `keras_mtl.objectives`:

    hypermodel = MultiTaskHyperModel(
        tasks, input_shape=(64, 64, 3),
        backbones=("small_cnn", "MobileNetV3Small"),
        weightings=("equal", "uncertainty", "dwa", "pcgrad"),
        objectives=[keras_mtl.objectives.DeltaM(tasks, baselines)])
    tuner = keras_tuner.BayesianOptimization(
        hypermodel, objective=keras_tuner.Objective("val_delta_m", "min"),
        max_trials=20, directory="runs/tuning")
    tuner.search(train, validation_data=val, epochs=10)

The search space (hyperparameter names as KerasTuner shows them; the values
come from the constructor argument named in the third column):

| name              | what                                 | from                  | default       |
| ----------------- | ------------------------------------ | --------------------- | ------------- |
| `backbone`        | the shared trunk                     | `backbones`           | first listed  |
| `shared_fraction` | branch point (below)                 | `branch_points`       | first listed  |
| `head_depth`      | hidden dense layers per head         | `head_depths`         | first listed  |
| `head_units`      | their width (when `head_depth` > 0)  | `head_units`          | first listed  |
| `dropout`         | dropout in the heads                 | `dropout_range`       | lower bound   |
| `learning_rate`   | Adam's learning rate (log scale)     | `learning_rate_range` | 1e-3, clipped |
| `weighting`       | the loss-weighting method            | `weightings`          | first listed  |
| `<method>/<arg>`  | that method's own hyperparameters,   | the method's          | constructor's |
|                   | active when `weighting == <method>`  | `search_space`        | default       |

The methods' own hyperparameters (conditional scopes), named after their
constructor arguments, come from each method's class attribute
`search_space` (`keras_mtl.weighting.space`), so a method registered from
outside the package is searched the same way: `dwa/temperature` (0.5 to 10,
log), `famo/learning_rate` (1e-3 to 0.1, log), `famo/weight_decay` (1e-4 to
1e-2, log), `static/weight_<task>` (0.1 to 10, log, one per task), `cagrad/c`
(0 to 1), `grad_norm/alpha` (0 to 3), `nash_mtl/update_every` (1, 5, 25),
`grad_vac/beta` (1e-3 to 0.1, log), `grad_drop/leak` (0 to 0.5),
`mgda/normalization`, `aligned_mtl/scale`, and `<method>/mode` ("params" or
"representation") for every gradient-level method that supports both. `<method>` is the name as
given in `weightings` (an alias such as "dwa" keeps its spelling).
Arguments that are not searched (seeds, `InverseSize` counts, iteration
limits) go in `weighting_kwargs`; an argument given there is fixed and not
searched.

Branch point. `shared_fraction` is where the heads branch off the backbone:
the backbone is cut after the last block boundary at or before that fraction
of its operations (in topological order), `keras.Model(trunk.input,
trunk.get_layer(name).output)`, and every head reads that feature map. 1.0
is the whole backbone (a classic HydraNet); 0.5 shares only the first half
and gives each head features of half the depth (and a larger map), with the
head's own capacity from `head_depth` x `head_units` (dense decoders for
dense tasks). A block boundary is a layer whose output is the only tensor the
rest of the graph reads from the part before it, so a cut never splits a
residual block. The layers past the cut are not used; task-specific copies
of them (branched networks) are not part of the search. `cut_points(model)` (from `keras_mtl.backbones`)
lists a model's boundaries, `cut_backbone(model, fraction)` applies one.

Backbones: a `keras.applications` name (built with `weights=`, None by
default, and its own preprocessing inside the model), `"small_cnn"`
(`keras_mtl.backbones.small_cnn`, a few strided convolutions: fast, for small
images and tests),
or your own factory `f(input_shape) -> keras.Model` (pass
`backbones={"mine": f, ...}` to name it).

Compilation is in `compile_model(hp, model)` (Adam with the tuned learning
rate, the tuned weighting method); override it to change the optimiser.
Don't pass `optimizer=`, `loss=` or `metrics=` to the tuner: KerasTuner would
recompile the model without its weighting and task losses.

`fit(hp, model, ...)` puts the `objectives` callbacks first, so their keys
(`val_delta_m`, `val_weighted_score`) are in the epoch logs before
KerasTuner's own callbacks read the objective, and checks that the tuner's
objective is logged: an objective no epoch logs stops the search with a
`keras_tuner.errors.FatalValueError` that lists the logged keys (at the end
of the first epoch that ran validation), instead of failing every trial.
"""

import copy
import difflib
import math

import keras

from keras_mtl._optional import require
from keras_mtl import objectives as objectives_lib
from keras_mtl import tasks as tasks_lib
from keras_mtl import weighting as weighting_lib
from keras_mtl._validation import check_bool
from keras_mtl.backbones import application_names
from keras_mtl.backbones import check_input_shape
from keras_mtl.backbones import resolve_backbone
from keras_mtl.models import MultiTaskModel
from keras_mtl.tuning import spaces
from keras_mtl.tuning.branching import BUILTIN_BACKBONES
from keras_mtl.tuning.branching import cut_backbone
from keras_mtl.tuning.checks import check_fraction
from keras_mtl.tuning.checks import check_ints
from keras_mtl.tuning.checks import check_range
from keras_mtl.tuning.checks import check_sequence

keras_tuner = require("keras_tuner", "keras_mtl.tuning (KerasTuner search)")

DEFAULT_LEARNING_RATE = 1e-3


# --- argument checks -------------------------------------------------------------
def _check_backbones(backbones):
    if isinstance(backbones, dict):
        if not backbones or not all(isinstance(k, str) and k for k in backbones):
            raise ValueError(
                "Invalid value received for argument `backbones`. Expected a "
                "non-empty dict {name: keras.applications name or factory}. "
                f"Received: backbones={backbones!r}"
            )
        items = dict(backbones)
    else:
        items = {}
        for b in check_sequence("backbones", backbones):
            key = b if isinstance(b, str) else getattr(b, "__name__", None)
            if not key or key in items:
                raise ValueError(
                    "Invalid value received for argument `backbones`. Expected "
                    "names and named functions (a factory without `__name__`, "
                    "or two with the same name, go in a dict {name: factory}). "
                    f"Received: backbones={backbones!r}"
                )
            items[key] = b
    by_lower = {n.lower(): n for n in application_names()}
    for key, spec in items.items():
        if callable(spec) and not isinstance(spec, str):
            continue
        if not isinstance(spec, str):
            raise ValueError(
                "Invalid value received for argument `backbones`. Expected "
                "`keras.applications` names, 'small_cnn' or factories "
                f"`f(input_shape) -> keras.Model`. Received: {key!r}: {spec!r}"
            )
        lookup = spec.lower().replace("-", "").replace("_", "")
        if spec in BUILTIN_BACKBONES or lookup in by_lower:
            continue
        close = difflib.get_close_matches(lookup, list(by_lower), n=3, cutoff=0.6)
        hint = f" Did you mean {[by_lower[c] for c in close]}?" if close else ""
        raise ValueError(
            "Invalid value received for argument `backbones`. Expected "
            f"`keras.applications` names or {sorted(BUILTIN_BACKBONES)}.{hint} "
            f"Received: {spec!r}"
        )
    return items


def _check_weightings(weightings):
    weightings = check_sequence("weightings", weightings)
    seen = {}
    for name in weightings:
        if weighting_lib.get_class(name) is None:
            raise ValueError(
                "Invalid value received for argument `weightings`. Expected "
                f"names from keras_mtl.weighting.names(): {weighting_lib.names()}. "
                f"Received: {name!r}"
            )
        cls = weighting_lib.get_class(name)
        if cls in seen:
            raise ValueError(
                "Invalid value received for argument `weightings`. "
                f"{seen[cls]!r} and {name!r} name the same method "
                f"({cls.__name__}). Received: weightings={weightings!r}"
            )
        seen[cls] = name
    return weightings


# --- the hypermodel ----------------------------------------------------------------
class MultiTaskHyperModel(keras_tuner.HyperModel):
    """A KerasTuner search space of multi-task models and weighting methods.

    `build(hp)` returns a compiled `keras_mtl.MultiTaskModel`; see the module
    docstring for the hyperparameters. Every hyperparameter has a default
    (the first value listed), so `build(keras_tuner.HyperParameters())`
    gives the default model.

    Args:
        tasks: List of `keras_mtl.tasks.Task`.
        input_shape: `(height, width, channels)` of the raw images; None
            for backbones given as factories or models that fix their own
            inputs (text or graph trunks with several inputs), which are
            then called `f(None)`.
        backbones: `keras.applications` names, `"small_cnn"`, factories
            `f(input_shape) -> keras.Model`, or a dict `{name: any of
            those}`.
        weightings: Names from `keras_mtl.weighting.names()` (one per
            method).
        branch_points: `shared_fraction` values in (0, 1]: how much of the
            backbone is shared before the heads branch off (1.0: all).
        head_units: Widths of the heads' hidden layers to try.
        head_depths: Numbers of hidden layers per head to try (0: the
            output layer reads the pooled features directly).
        dropout_range: `(min, max)` of the heads' dropout rate, in [0, 1).
        learning_rate_range: `(min, max)` of Adam's learning rate, searched on
            a log scale.
        objectives: `keras_mtl.objectives.TaskObjective` callbacks
            (`DeltaM`, `WeightedScore`) whose keys `fit` logs every epoch.
        weights: Weights of `keras.applications` backbones: None (random) or
            "imagenet" (Keras' download and cache).
        trainable_backbone: False freezes the backbone.
        weighting_kwargs: `{method name: {argument: value}}`: fixed
            constructor arguments (seeds, `InverseSize` counts, ...); they
            are not searched.
        name: Optional name of the hypermodel.
        tunable: KerasTuner's flag: whether new hyperparameters join the
            search space.

    Example:

    >>> import keras_tuner, keras_mtl
    >>> hypermodel = MultiTaskHyperModel(
    ...     [keras_mtl.tasks.Regression("size"),
    ...      keras_mtl.tasks.MulticlassClassification("shape", num_classes=3)],
    ...     input_shape=(16, 16, 3), backbones=("small_cnn",),
    ...     weightings=("equal", "dwa"), head_units=(8,))
    >>> hp = keras_tuner.HyperParameters()
    >>> model = hypermodel.build(hp)
    >>> hp.values["weighting"], hp.values["learning_rate"], sorted(model.output_names)
    ('equal', 0.001, ['shape', 'size'])
    >>> [p.name for p in hp.space if p.conditions]
    ['dwa/temperature']
    """

    def __init__(
        self,
        tasks,
        input_shape,
        backbones=("MobileNetV3Small", "EfficientNetB0", "ResNet50"),
        weightings=("equal", "uncertainty", "dwa", "pcgrad", "cagrad"),
        branch_points=(1.0, 0.75, 0.5),
        head_units=(64, 128, 256),
        head_depths=(1, 2),
        dropout_range=(0.0, 0.5),
        learning_rate_range=(1e-4, 1e-2),
        objectives=(),
        weights=None,
        trainable_backbone=True,
        weighting_kwargs=None,
        name=None,
        tunable=True,
    ):
        super().__init__(name=name, tunable=tunable)
        self.tasks = tasks_lib.check_tasks(tasks)
        self.input_shape = None if input_shape is None else check_input_shape(input_shape)
        self.backbones = _check_backbones(backbones)
        self.weightings = _check_weightings(weightings)
        fractions = [
            check_fraction("branch_points", f)
            for f in check_sequence("branch_points", branch_points)
        ]
        self.branch_points = check_sequence("branch_points", fractions)  # distinct as floats
        self.head_units = check_ints("head_units", head_units, 1)
        self.head_depths = check_ints("head_depths", head_depths, 0)
        self.dropout_range = check_range("dropout_range", dropout_range, 0.0, 1.0, high_open=True)
        self.learning_rate_range = check_range(
            "learning_rate_range", learning_rate_range, 0.0, math.inf, low_open=True
        )
        self.objectives = self._check_objectives(objectives)
        if weights not in (None, "imagenet"):
            raise ValueError(
                "Invalid value received for argument `weights`. Expected None "
                "or 'imagenet' (a weights file fits one architecture only). "
                f"Received: weights={weights!r}"
            )
        self.weights = weights
        self.trainable_backbone = check_bool("trainable_backbone", trainable_backbone)
        self.weighting_kwargs = self._check_weighting_kwargs(weighting_kwargs)

    # --- argument checks -------------------------------------------------------
    def _check_objectives(self, objectives):
        objectives = tuple(objectives or ())
        names = [t.name for t in self.tasks]
        keys = []
        for objective in objectives:
            if not isinstance(objective, objectives_lib.TaskObjective):
                raise ValueError(
                    "Invalid value received for argument `objectives`. Expected "
                    "`keras_mtl.objectives` callbacks such as DeltaM or "
                    f"WeightedScore. Received: {objective!r}"
                )
            unknown = [t.name for t in objective.tasks if t.name not in names]
            if unknown:
                raise ValueError(
                    "Invalid value received for argument `objectives`. "
                    f"{type(objective).__name__} was made for tasks {unknown} that "
                    f"this hypermodel does not have ({names})."
                )
            keys.append(objective.key)
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(
                "Invalid value received for argument `objectives`. Expected "
                f"distinct keys; several objectives log {duplicates}."
            )
        return objectives

    def _check_weighting_kwargs(self, weighting_kwargs):
        weighting_kwargs = {} if weighting_kwargs is None else weighting_kwargs
        if not isinstance(weighting_kwargs, dict) or not all(
            isinstance(v, dict) for v in weighting_kwargs.values()
        ):
            raise ValueError(
                "Invalid value received for argument `weighting_kwargs`. Expected "
                "a dict {method name: {argument: value}}. Received: "
                f"weighting_kwargs={weighting_kwargs!r}"
            )
        unknown = [k for k in weighting_kwargs if k not in self.weightings]
        if unknown:
            raise ValueError(
                "Invalid value received for argument `weighting_kwargs`. Expected "
                f"keys among `weightings` {list(self.weightings)}. Received "
                f"unknown keys {unknown}."
            )
        task_shapes = {t.name: () for t in self.tasks}
        for name in self.weightings:
            cls = weighting_lib.get_class(name)
            fixed = weighting_kwargs.get(name, {})
            try:
                # Built once with the fixed arguments and default
                # hyperparameters: a missing or bad argument fails here.
                cls(**{**cls.arguments_from_tasks(self.tasks), **fixed}).build(task_shapes)
            except (TypeError, ValueError) as error:
                raise ValueError(
                    "Invalid value received for argument `weighting_kwargs`. "
                    f"Method {name!r} ({cls.__name__}) cannot be made with "
                    f"weighting_kwargs[{name!r}]={fixed!r}: {error}"
                ) from error
        return {k: dict(v) for k, v in weighting_kwargs.items()}

    # --- build ---------------------------------------------------------------
    def build(self, hp):
        """Builds and compiles one model of the search space."""
        backbone = hp.Choice("backbone", list(self.backbones), default=next(iter(self.backbones)))
        fraction = self._choice(hp, "shared_fraction", self.branch_points)
        depth = self._choice(hp, "head_depth", self.head_depths)
        deep = [d for d in self.head_depths if d > 0]
        units = None
        if deep and len(deep) < len(self.head_depths):
            # Widths mean nothing for heads without hidden layers.
            with hp.conditional_scope("head_depth", deep):
                units = self._choice(hp, "head_units", self.head_units)
        elif deep:
            units = self._choice(hp, "head_units", self.head_units)
        dropout = self._float(hp, "dropout", self.dropout_range, self.dropout_range[0])

        trunk, preprocessing = self.build_backbone(backbone, fraction)
        model = MultiTaskModel(
            trunk,
            self.tasks,
            input_shape=self._input_shape(trunk),
            preprocessing=preprocessing,
            head_units=(units,) * depth if depth else (),
            dropout=dropout,
            name="multi_task_model",
        )
        self.compile_model(hp, model)
        return model

    def _input_shape(self, trunk):
        # A trunk with one input takes the search's image shape (or its own
        # without one); a trunk with several inputs keeps its own.
        if len(trunk.inputs) > 1:
            return None
        return self.input_shape or tuple(trunk.inputs[0].shape[1:])

    def build_backbone(self, backbone, fraction):
        """`(trunk, preprocessing mode)` for a backbone name and branch point."""
        spec = self.backbones[backbone]
        if isinstance(spec, str) and spec in BUILTIN_BACKBONES:
            spec = BUILTIN_BACKBONES[spec]
        if not isinstance(spec, str):
            try:
                spec = spec(self.input_shape)
            except ValueError as error:  # e.g. no input shape for an image model
                raise keras_tuner.errors.FatalValueError(
                    f"Backbone {backbone!r} cannot be built: {error}"
                ) from error
            if not isinstance(spec, keras.Model):
                raise keras_tuner.errors.FatalValueError(
                    "Invalid value received for argument `backbones`. Expected "
                    f"the factory {backbone!r} to return a keras.Model. It "
                    f"returned: {spec!r}"
                )
        try:
            trunk, _, preprocessing = resolve_backbone(
                spec, self.input_shape, self.weights if isinstance(spec, str) else None
            )
        except ValueError as error:
            # A backbone that does not fit the input shape fails in every
            # trial that picks it: stop the search rather than skip trials.
            raise keras_tuner.errors.FatalValueError(
                f"Backbone {backbone!r} cannot be built: {error}"
            ) from error
        trunk = cut_backbone(trunk, fraction)
        trunk.trainable = self.trainable_backbone
        return trunk, preprocessing

    def compile_model(self, hp, model):
        """Compiles `model` with the trial's optimiser and weighting method.

        Override to add compile arguments (`jit_compile`, `run_eagerly`,
        `loss` or `metrics` overrides); keep `self.build_optimizer(hp)` and
        `self.build_weighting(hp)` to keep their hyperparameters searched.
        """
        model.compile(optimizer=self.build_optimizer(hp), weighting=self.build_weighting(hp))

    def build_optimizer(self, hp):
        """Adam with the tuned `learning_rate`. Override to change optimiser."""
        low, high = self.learning_rate_range
        learning_rate = self._float(
            hp, "learning_rate", self.learning_rate_range,
            min(max(DEFAULT_LEARNING_RATE, low), high), sampling="log",
        )
        return keras.optimizers.Adam(learning_rate)

    def build_weighting(self, hp):
        """The weighting method of this trial, with its hyperparameters.

        Every method's hyperparameters are registered (each in the
        conditional scope of its name), so the tuner knows the whole space
        from the first build; only the chosen method's are active.
        """
        chosen = hp.Choice("weighting", list(self.weightings), default=self.weightings[0])
        chosen_kwargs = None
        for name in self.weightings:
            with hp.conditional_scope("weighting", [name]):
                kwargs = self.weighting_hyperparameters(hp, name)
            if name == chosen:
                chosen_kwargs = kwargs
        return weighting_lib.get_class(chosen)(**chosen_kwargs)

    def weighting_hyperparameters(self, hp, name):
        """Constructor arguments of method `name`: searched ones from its
        `search_space` (as `<name>/<argument>`), fixed ones from
        `weighting_kwargs`, and those the tasks determine
        (`arguments_from_tasks`).

        Called inside the method's conditional scope, also when the method is
        not chosen: then the searched values are None (KerasTuner's rule for
        inactive hyperparameters) and the result is discarded.
        """
        cls = weighting_lib.get_class(name)
        fixed = self.weighting_kwargs.get(name, {})
        searched_space = spaces.method_space(cls)
        searched = {
            argument: spaces.hyperparameter(
                hp, f"{name}/{argument}", spec, spaces.constructor_default(cls, argument), self.tasks
            )
            for argument, spec in searched_space.items()
            if argument not in fixed
        }
        return {**cls.arguments_from_tasks(self.tasks), **searched, **fixed}

    @staticmethod
    def _choice(hp, name, values):
        # Numbers sorted (KerasTuner treats numeric choices as ordered); the
        # first value listed is the default.
        return hp.Choice(name, sorted(values), default=values[0])

    @staticmethod
    def _float(hp, name, bounds, default, sampling="linear"):
        low, high = bounds
        if low == high:
            return hp.Fixed(name, low)
        return hp.Float(name, low, high, sampling=sampling, default=default)

    # --- fit -----------------------------------------------------------------
    def fit(self, hp, model, *args, callbacks=None, **kwargs):
        """Trains `model`, logging the objectives first in every epoch.

        The `objectives` callbacks go before KerasTuner's callbacks (which
        read the objective from the same `logs`); then a check that the
        tuner's objective is logged. A missing key stops the search with
        `keras_tuner.errors.FatalValueError`.
        """
        callbacks = list(callbacks or [])
        own = [copy.copy(objective) for objective in self.objectives]
        validating = kwargs.get("validation_data") is not None or kwargs.get("validation_split")
        needs_validation = [o.key for o in own if o.prefix] if not validating else []
        if needs_validation:
            raise keras_tuner.errors.FatalValueError(
                f"The objectives {needs_validation} are computed from validation "
                "metrics: pass `validation_data` to `tuner.search(...)`."
            )
        keys = _tuner_objective_names(callbacks)
        if keys:
            own.append(objectives_lib.RequireLogged(keys, what="The tuner objective"))
        try:
            return model.fit(*args, callbacks=own + callbacks, **kwargs)
        except objectives_lib.ObjectiveError as error:
            # Every trial would fail the same way: stop the search.
            raise keras_tuner.errors.FatalValueError(
                f"{error} Objective callbacks of this hypermodel log "
                f"{[o.key for o in self.objectives]}."
            ) from error

    def get_config(self):
        """The constructor arguments (factories as given; tasks serialised)."""
        return {
            "tasks": [keras.saving.serialize_keras_object(t) for t in self.tasks],
            "input_shape": self.input_shape,
            "backbones": dict(self.backbones),
            "weightings": self.weightings,
            "branch_points": self.branch_points,
            "head_units": self.head_units,
            "head_depths": self.head_depths,
            "dropout_range": self.dropout_range,
            "learning_rate_range": self.learning_rate_range,
            "objectives": list(self.objectives),
            "weights": self.weights,
            "trainable_backbone": self.trainable_backbone,
            "weighting_kwargs": self.weighting_kwargs,
            "name": self.name,
            "tunable": self.tunable,
        }


def _tuner_objective_names(callbacks):
    """The objective names of the tuner whose callbacks are in `callbacks`.

    KerasTuner passes its objective to `fit` only inside its checkpoint
    callback (an `objective` attribute); a default objective (no objective
    given, the fit result is the score) has nothing to check.
    """
    for callback in callbacks:
        objective = getattr(callback, "objective", None)
        if not isinstance(objective, keras_tuner.Objective):
            continue
        if type(objective).__name__ == "DefaultObjective":
            return []
        named = getattr(objective, "name_to_direction", None)  # MultiObjective
        return list(named) if named else [objective.name]
    return []
