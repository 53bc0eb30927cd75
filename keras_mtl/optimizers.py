"""Per-variable learning rates: heads, trunk and layers each at their own rate.

Two recipes of the seeds need more than Keras' one-rate optimizer: "freeze
the early blocks and fine-tune the backbone at 1/10 of the heads' learning
rate" (seed 002, transfer learning) and "separate optimisers per head"
(seed 000, against task interference). `LearningRateMultipliers` wraps one
Keras optimizer and gives named groups of variables (the trunk, a task's
head, any layer) the rate `multiplier × learning_rate`; what PyTorch calls
parameter groups. `fine_tuning` is the seed 002 recipe.

How, and why this way:

- The multiplier scales the rate inside the optimizer's own update rule
  (`update_step(gradient, variable, learning_rate)`), not the gradient. For
  SGD the two are the same; Adam divides the gradient by its running RMS, so
  a scaled gradient gives almost the same step, whereas a scaled rate gives
  exactly `multiplier` times the step. Decoupled weight decay (AdamW, Lion)
  is scaled too, as in a PyTorch parameter group.
- The wrapper runs Keras' own `apply` (gradient clipping, loss-scale
  unscaling, `tf.distribute` updates, the JAX trainer's `stateless_apply`)
  with the wrapped optimizer's settings, and calls the wrapped optimizer's
  `update_step` with each variable's rate. So `iterations` advances once per
  step (Adam's bias correction), there is one state slot per variable, and
  `learning_rate` is the wrapped optimizer's: `LearningRateScheduler`,
  `ReduceLROnPlateau` and schedules move every group's rate together.
- A multiplier of 0 freezes: those variables get no update, no weight decay
  and no optimizer state. (`build_model(trainable_backbone=False)` or
  `freeze_blocks=k` are cheaper still: no gradients are computed.)
- "Separate optimisers per head" with Adam, RMSprop and the like is this
  wrapper: their state is per variable already, so an Adam per head at rate
  `r_t` is one Adam with multiplier `r_t / learning_rate` on head `t`. For
  different optimiser *types* per group see `keras.optimizers.MultiOptimizer`
  (it matches variable paths, which in Functional models name only the
  innermost layer, and has no settable learning rate).

Keys name layers. A `MultiTaskModel` binds its optimizer when compiled, so
a key may be `"trunk"`, a task name (that task's head), the trunk's own name
or the name of any layer nested in the model; a layer nested inside another
named one takes its own key's multiplier. A key with shell wildcards
(`"cross_stitch_*"`, `fnmatch` rules) names every layer it matches: e.g. the
cross-stitch units, which Misra et al. train at a 10^2-10^3 times larger
rate. An optimizer used with a plain
`keras.Model` is bound with `optimizer.bind(model)`, or else matches keys
against the components of each variable's path (`"block0_conv/kernel"`).
"""

import fnmatch
import math

import keras
from keras import ops

from keras_mtl import _keras_compat
from keras_mtl._validation import check_non_negative


@keras.saving.register_keras_serializable(package="keras_mtl")
class LearningRateMultipliers(keras.optimizers.Optimizer):
    """Wraps an optimizer to give groups of variables their own learning rate.

    The variables of the layer named by a key are updated at
    `multiplier × optimizer.learning_rate`; all others at the base rate. The
    wrapper reads and sets the wrapped optimizer's `learning_rate`, so rate
    schedules and learning-rate callbacks work unchanged.

    Args:
        optimizer: The Keras optimizer (instance, name or config) whose
            update rule is used, with its clipping, weight decay and loss
            scale. Not a `LossScaleOptimizer` (Keras puts that one outside),
            not `Muon` (its update ignores the rate it is given).
        multipliers: Dict `{layer name: multiplier}` of non-negative floats;
            `"trunk"` and task names are understood by `MultiTaskModel`; a
            name with wildcards (`"cross_stitch_*"`) covers every layer it
            matches. 0 freezes the layer.
        name: Name of the optimizer.

    Example:

    >>> import keras, keras_mtl
    >>> model = keras_mtl.build_model(
    ...     keras_mtl.tuning.small_cnn((16, 16, 3), filters=(4, 4)),
    ...     [keras_mtl.tasks.Regression("age"),
    ...      keras_mtl.tasks.BinaryClassification("gender")],
    ...     head_units=(8,))
    >>> optimizer = keras_mtl.optimizers.LearningRateMultipliers(
    ...     keras.optimizers.Adam(1e-3), {"trunk": 0.1, "age": 2.0})
    >>> model.compile(optimizer=optimizer)
    >>> optimizer.multiplier(model.trunk.trainable_variables[0])
    0.1
    >>> optimizer.multiplier(model.heads["gender"].trainable_variables[0])
    1.0
    """

    def __init__(self, optimizer, multipliers, name=None):
        inner = keras.optimizers.get(optimizer)
        # `MultiOptimizer` and `Muon` (whose update reads
        # `self.learning_rate`) are not in every supported Keras.
        wrappers = (LearningRateMultipliers, keras.optimizers.LossScaleOptimizer) + tuple(
            getattr(keras.optimizers, name)
            for name in ("MultiOptimizer", "Muon") if hasattr(keras.optimizers, name)
        )
        if isinstance(inner, wrappers):
            raise ValueError(
                "Invalid value received for argument `optimizer`. Expected a "
                "Keras optimizer whose `update_step` uses the learning rate it is "
                "given (SGD, Adam, AdamW, RMSprop, ...), not a wrapper or Muon. "
                f"Received: optimizer={inner!r}"
            )
        multipliers = _check_multipliers(multipliers)
        super().__init__(
            learning_rate=0.0,  # unused: `learning_rate` is the wrapped one's
            clipnorm=inner.clipnorm,
            clipvalue=inner.clipvalue,
            global_clipnorm=inner.global_clipnorm,
            use_ema=inner.use_ema,
            ema_momentum=inner.ema_momentum,
            ema_overwrite_frequency=inner.ema_overwrite_frequency,
            loss_scale_factor=inner.loss_scale_factor,
            gradient_accumulation_steps=inner.gradient_accumulation_steps,
            name=name,
        )
        self.inner_optimizer = inner
        self.multipliers = multipliers
        self._groups = None  # {key: {id(variable)}} once bound to a model

    # --- which variable gets which rate -----------------------------------
    def bind(self, model):
        """Resolves the keys against `model`'s trunk, heads and layers.

        `MultiTaskModel.compile` calls it; call it yourself before `fit` for
        a plain `keras.Model`. Unknown keys raise a `ValueError` listing the
        valid names.
        """
        layers = {}
        for layer in _keras_compat.flatten_layers(model):
            if layer.weights:
                layers.setdefault(layer.name, []).append(layer)
        if isinstance(getattr(model, "trunk", None), keras.layers.Layer):
            layers["trunk"] = [model.trunk]
        matches = {key: _matching(key, layers) for key in self.multipliers}
        unknown = [key for key, names in matches.items() if not names]
        if unknown:
            raise ValueError(
                "Invalid value received for argument `multipliers`. Expected keys "
                f"naming layers (with weights) of the model {model.name!r}: one of "
                f"{sorted(layers)}. Received unknown keys {unknown} in "
                f"multipliers={self.multipliers!r}"
            )
        self._groups = {
            key: {id(v) for name in names for layer in layers[name] for v in layer.weights}
            for key, names in matches.items()
        }

    def multiplier(self, variable):
        """The multiplier of `variable`'s learning rate (1.0 if no key names it)."""
        if self._groups is not None:
            groups = self._groups
        else:  # unbound: match keys against the variable's path
            groups = {key: None for key in self.multipliers}
        found, size = 1.0, math.inf
        for key, members in groups.items():
            if members is None:
                if _matching(key, variable.path.split("/")):
                    found = self.multipliers[key]
            elif id(variable) in members and len(members) <= size:
                # The smaller group is the inner layer: its key wins.
                found, size = self.multipliers[key], len(members)
        return found

    def _check_paths(self, variables):
        components = {part for v in variables for part in v.path.split("/")}
        unknown = [key for key in self.multipliers if not _matching(key, components)]
        if unknown:
            raise ValueError(
                "Invalid value received for argument `multipliers`. This "
                "optimizer is not bound to a model (`MultiTaskModel.compile` "
                "binds it; for a plain model call `optimizer.bind(model)`), so "
                "keys must be components of variable paths: one of "
                f"{sorted(components)}. Received unknown keys {unknown} in "
                f"multipliers={self.multipliers!r}"
            )

    # --- the Optimizer API -------------------------------------------------
    def build(self, var_list):
        if self.built:
            return
        var_list = list(var_list)
        if self._groups is None:
            self._check_paths(var_list)
        super().build(var_list)
        # A tuple of floats, and the variables out of sight of Keras'
        # attribute tracking: neither is optimizer state.
        self._rates = tuple(self.multiplier(v) for v in var_list)
        self._built_with = _Untracked(var_list)
        self.inner_optimizer.build([v for v, m in zip(var_list, self._rates) if m != 0])

    @property
    def variables(self):
        return super().variables + self.inner_optimizer.variables

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None:
            if not self.built:
                raise ValueError(
                    "When passing `grads` without `variables`, the optimizer "
                    "must already be built. Call `optimizer.build(variables)`."
                )
            trainable_variables = self._built_with.value
        trainable_variables = list(trainable_variables)
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
        # Frozen variables (multiplier 0) never reach the update rule.
        pairs = [
            (g, v)
            for g, v in zip(grads, trainable_variables)
            if self._rates[_keras_compat.variable_index(self, v)] != 0
        ]
        if pairs:
            super().apply([g for g, _ in pairs], [v for _, v in pairs])
        else:
            _keras_compat.iterations_variable(self).assign_add(1)
        # The wrapped update rule reads its own step count (Adam's bias
        # correction, schedules): one step per apply, as ours.
        _keras_compat.iterations_variable(self.inner_optimizer).assign_add(1)

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self._rates[_keras_compat.variable_index(self, variable)]
        if multiplier != 1.0:
            learning_rate = ops.multiply(learning_rate, multiplier)
        inner = self.inner_optimizer
        # Decoupled weight decay at this variable's rate (Keras applies it in
        # `apply`, before the update rule, at the base rate).
        if inner.weight_decay is not None and _keras_compat.uses_weight_decay(inner, variable):
            lr = ops.cast(learning_rate, variable.dtype)
            wd = ops.cast(inner.weight_decay, variable.dtype)
            inner.assign(variable, variable - variable * wd * lr)
        inner.update_step(gradient, variable, learning_rate)

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    def set_weights(self, weights):
        if not self.built:
            raise ValueError(
                "You are calling `set_weights()` on an optimizer that has not "
                "yet been built. Call `optimizer.build(trainable_variables)` first."
            )
        for variable, weight in zip(self.variables, weights):
            variable.assign(weight)

    def get_config(self):
        # Not `super().get_config()`: the settings are the wrapped optimizer's.
        return {
            "name": self.name,
            "optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "multipliers": dict(self.multipliers),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["optimizer"] = keras.saving.deserialize_keras_object(
            config["optimizer"], custom_objects=custom_objects
        )
        return cls(**config)


def fine_tuning(optimizer="adam", backbone_factor=0.1, head_factors=None):
    """The transfer-learning recipe: the trunk at a fraction of the heads' rate.

    Seed 002: fine-tune a pretrained backbone at 1/10 of the learning rate of
    the new heads (with the early blocks frozen: `build_model(...,
    freeze_blocks=k)`). `backbone_factor=0` freezes the whole trunk, though
    `build_model(..., trainable_backbone=False)` does it without computing
    its gradients. With `build_model(..., architecture=...)` the trunk also
    holds the architecture's new layers (experts, gates, attention), which
    then train at the backbone's rate too; to slow down only the pretrained
    part, name it instead: `LearningRateMultipliers(optimizer,
    {"small_cnn": 0.1})` where the backbone stays one layer (MMoE, PLE).

    Args:
        optimizer: The Keras optimizer (instance or name); its learning rate
            is the heads' rate.
        backbone_factor: Multiplier of the trunk's rate (non-negative).
        head_factors: Optional dict `{task: multiplier}` for some heads
            (default 1 each).

    Returns:
        A `LearningRateMultipliers`, to pass to `MultiTaskModel.compile`.

    Example:

    >>> optimizer = fine_tuning(keras.optimizers.Adam(1e-3), backbone_factor=0.1)
    >>> optimizer.multipliers
    {'trunk': 0.1}
    """
    if head_factors is not None and not isinstance(head_factors, dict):
        raise ValueError(
            "Invalid value received for argument `head_factors`. Expected None "
            f"or a dict {{task: multiplier}}. Received: head_factors={head_factors!r}"
        )
    if "trunk" in (head_factors or {}):
        raise ValueError(
            "Invalid value received for argument `head_factors`. Expected task "
            "names; set the trunk's rate with `backbone_factor`. Received: "
            f"head_factors={head_factors!r}"
        )
    backbone_factor = check_non_negative("backbone_factor", backbone_factor)
    return LearningRateMultipliers(
        optimizer, {"trunk": backbone_factor, **(head_factors or {})}
    )


def bind(optimizer, model):
    """Binds `optimizer` to `model` if it is (or wraps) `LearningRateMultipliers`.

    Called by `MultiTaskModel.compile`; a no-op for other optimizers.
    """
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    if isinstance(optimizer, LearningRateMultipliers):
        optimizer.bind(model)


class _Untracked:
    """Holds a value where Keras' attribute tracking does not look: an
    optimizer takes every variable in a list, tuple or dict attribute for
    its own state."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def _matching(key, names):
    """The names among `names` that `key` names: itself, or those its
    wildcards match."""
    if key in names:
        return [key]
    if any(c in key for c in "*?["):
        return [name for name in names if fnmatch.fnmatchcase(name, key)]
    return []


def _check_multipliers(multipliers):
    if not isinstance(multipliers, dict) or not all(isinstance(k, str) for k in multipliers):
        raise ValueError(
            "Invalid value received for argument `multipliers`. Expected a dict "
            f"{{layer name: multiplier}}. Received: multipliers={multipliers!r}"
        )
    return {
        key: check_non_negative(f"multipliers[{key!r}]", value)
        for key, value in multipliers.items()
    }
