"""ExcessMTL: task weights that grow with each task's estimated excess risk.

He, Zhou, Zhang, Yun, Xu, Zeng, Chilimbi & Zhao, "Robust Multi-Task
Learning with Excess Risks", ICML 2024 (arXiv:2402.02009); official code
github.com/yifei-he/ExcessMTL (`LibMTL/LibMTL/weighting/ExcessMTL.py`), the
same code as LibMTL's `LibMTL/weighting/ExcessMTL.py`.

Loss-weighting methods that raise the weight of the tasks with the largest
loss give all the weight to a task with noisy labels, whose loss stays high
however well it is trained. ExcessMTL weighs each task by its *excess risk*,
its distance to convergence, estimated from a second-order Taylor expansion
with a diagonal, AdaGrad-style curvature (the paper's Eqs. 6-7). Per task `t`,
with its gradient `g_t` of this step (the `(T, P)` rows):

    S_t <- S_t + g_t²                           (element-wise; S_t = 0 at first)
    r_t  = Σ_j g_tj² / sqrt(S_tj + epsilon)     (the excess-risk estimate)

`r_t` is divided by its value at the start of training, `b_t`, so that tasks
of different loss scales compare; the weights then take a multiplicative
(exponentiated-gradient) step (Eq. 9) and are renormalised to sum to `T`:

    w_t <- w_t exp(robust_step_size · r_t / b_t),     w <- T w / Σ_s w_s

and the update is `Σ_t w_t g_t`, with this step's new weights (as the
official code does: it updates the weights, then back-propagates
`Σ_t w_t L_t`). `w = 1` at first.

The baseline `b_t` (the official code's `initial_w`, set at its
`first_epoch` flag, which is cleared after the first *step*, not epoch):
the official code and LibMTL take the risk of the first training step and
move no weight in that step. `warmup_steps = k` takes the mean of the first
`k` risks and moves no weight before; `k = 1` (the default) is the official
code. The paper (Appendix C.1) collects the statistics over the first three
epochs: `warmup_steps = 3 * steps_per_epoch`.

State (layer weights: saved with the model, restored by `BackupAndRestore`):
`squared_gradient_sums` (`S`, `(T, P)` float32: as large as the shared part
times `T`), `robust_weights` (`w`), `initial_risks` (`b`, the running mean
during the warm-up) and `initial_steps` (how many risks `b` averages, at most
`warmup_steps`: the first-step flag, per task). `task_weights` holds the
weights of the last step's combination (0 for a task without labels).

Choices and deviations from the official code / LibMTL:

- the warm-up length `warmup_steps` is a parameter (the paper's
  Appendix C.1; the official code is `warmup_steps=1`), and per task;
- a task without labels in a step (its labelled count is 0): its row of `S`,
  its baseline and its stored weight `w_t` do not move, and it gets weight 0
  in that step's combination (its gradient is 0 anyway). The weights of the
  labelled tasks are renormalised to the sum they had (so the stored weights
  still sum to `T`; with every task labelled that is the official
  renormalisation). The official code has no unlabelled tasks;
- a task's baseline collects only labelled steps with a positive finite
  risk: the official code divides by a first-step risk of 0 (a zero
  gradient) and gets infinite or NaN weights from then on. A task whose risk
  was 0 so far keeps its weight;
- the multiplicative step is taken in log space (a softmax of
  `log w_t + robust_step_size · r_t / b_t`), which is the same number where
  the official `exp` does not overflow and stays finite where it would (a
  ratio `r_t / b_t` above ~88 / `robust_step_size`, e.g. after a tiny first
  gradient): the task then takes all the weight;
- `epsilon` (1e-7 in the official code, not a parameter there) is a
  parameter. It is the method's only scale: with `epsilon = 0` the weights
  would not change if every gradient were multiplied by the same number, but
  a zero entry would divide 0 by 0; with `epsilon > 0`, gradient entries
  below about `sqrt(epsilon)` (3e-4 for the default) count less (their
  risk is quadratic in them instead of linear, as in the official code);
- weights sum to `T` as in the official code (the paper's are on the
  simplex, summing to 1: the same update for a learning rate `T` times
  smaller); `robust_step_size = 0` is equal weighting;
- float32 throughout: gradient entries above ~1e19 in magnitude overflow
  `g²` (`S` becomes infinite; such a step is not finite anyway).

`training=False` computes this step's weights from the state but changes no
state. Deterministic: no random numbers.

Modes:

| mode             | supported | why                                                 |
| ---------------- | --------- | --------------------------------------------------- |
| "params"         | yes       | the paper's and official code's setting: `S` is the |
|                  | (default) | AdaGrad diagonal of the shared parameters, the same |
|                  |           | `P` coordinates at every step.                      |
| "representation" | yes       | LibMTL's `rep_grad`: `g_t` is task `t`'s gradient   |
|                  |           | at `z` summed over the batch, i.e. its gradient     |
|                  |           | w.r.t. one bias added to `z` for every example, a   |
|                  |           | fixed parameter of `prod(z.shape[1:])` entries, so  |
|                  |           | `S` accumulates the same coordinates from batch to  |
|                  |           | batch whatever the examples (per-example gradients  |
|                  |           | would not). The curvature is that of this virtual   |
|                  |           | bias, not of the trunk's weights: a cheaper,        |
|                  |           | different estimate. The combination weighs the      |
|                  |           | per-example gradients at `z`. Needs a `z` of fixed  |
|                  |           | shape.                                              |

Sizing `S`. `S` needs `P` (the number of shared parameters, or of entries
of `z`), which the model knows, and must exist before the first training
step is traced and before a saved state is loaded. `compile` hands the
weighting the trunk's variables and `z`'s shape before building it
(`build_shared`), and `build` creates `S`; a later `compile` with the same
instance checks that `P` has not changed. A weighting used outside a model
sizes `S` at its first `combine` (eagerly), or by an explicit
`build_accumulators(P)` before a compiled loop.
"""

import math

import keras
from keras import ops

from keras_mtl._validation import check_int
from keras_mtl.weighting.base import check_number
from keras_mtl.weighting.gradient_base import GradientWeighting
from keras_mtl.weighting.registry import register
from keras_mtl.weighting.space import Float


class _SquaredGradientSums(keras.layers.Layer):
    """Holds the `(T, P)` accumulators, built once `P` is known.

    A sub-layer of `ExcessMTL`, created in its `build` (Keras locks a built
    layer's own state, and `P` comes later): its variable is one of
    `ExcessMTL.variables`, so the weighting's `state_arrays` saves it.
    """

    def __init__(self, num_tasks, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.num_tasks = num_tasks

    def build(self, num_parameters):
        self.sums = self.add_weight(
            name="squared_gradient_sums",
            shape=(self.num_tasks, num_parameters),
            initializer="zeros",
            trainable=False,
        )

    # The weighting saves and loads this variable with its own state
    # (`Weighting.state_arrays`); Keras' walk must not write it twice.
    def save_own_variables(self, store):
        pass

    def load_own_variables(self, store):
        pass


@register
class ExcessMTL(GradientWeighting):
    """ExcessMTL (He et al. 2024): multiplicative task weights driven by
    each task's excess risk, estimated with an AdaGrad-style diagonal.

    Supported modes: `"params"` (default) and `"representation"`. See the
    module docstring for the update, the state and the deviations from the
    official code.

    Args:
        mode: `"params"` or `"representation"`.
        robust_step_size: The step size `eta >= 0` of the multiplicative
            weight update (the official `--robust_step_size`; its default
            1e-2; the authors' Office-Home command uses 1). 0 is equal
            weighting.
        epsilon: The constant `> 0` under the square root of the
            accumulated squared gradients (1e-7 in the official code).
        warmup_steps: How many of a task's first (labelled) steps its
            baseline risk averages, during which its weight does not move:
            1 (the official code) or more (the paper's Appendix C.1 uses
            three epochs).
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> weighting = ExcessMTL(robust_step_size=1.0)
    >>> weighting.build({"a": (), "b": ()})
    >>> grads = keras.ops.convert_to_tensor([[3.0, 4.0], [1.0, 2.0]])
    >>> _, weights = weighting.combine(grads, {"a": 1.0, "b": 1.0})
    >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(weights)]  # first step
    [1.0, 1.0]
    >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(weighting.initial_risks)]
    [7.0, 3.0]
    >>> grads = keras.ops.convert_to_tensor([[0.0, 3.0], [3.0, 0.0]])
    >>> _, weights = weighting.combine(grads, {"a": 1.0, "b": 1.0})
    >>> [round(float(x), 4) for x in keras.ops.convert_to_numpy(weights)]  # b: further off
    [0.6674, 1.3326]
    """

    registry_name = "excess_mtl"
    paper = "He et al., ICML 2024"
    search_space = {"robust_step_size": Float(1e-3, 1.0, sampling="log")}

    def __init__(
        self, mode="params", robust_step_size=1e-2, epsilon=1e-7, warmup_steps=1, **kwargs
    ):
        super().__init__(mode=mode, **kwargs)
        self.robust_step_size = check_number("robust_step_size", robust_step_size, minimum=0)
        self.epsilon = check_number("epsilon", epsilon, minimum=0, exclusive=True)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, minimum=1)

    def build(self, losses_shape):
        super().build(losses_shape)
        n = len(self.task_names)
        self.robust_weights = self.add_weight(
            name="robust_weights", shape=(n,), initializer="ones", trainable=False
        )
        self.initial_risks = self.add_weight(
            name="initial_risks", shape=(n,), initializer="zeros", trainable=False
        )
        self.initial_steps = self.add_weight(
            name="initial_steps", shape=(n,), initializer="zeros", trainable=False
        )
        self.accumulators = _SquaredGradientSums(n, name="accumulators")
        if getattr(self, "_shared_size", None) is not None:
            self.accumulators.build(self._shared_size)

    # --- sizing the accumulators --------------------------------------------------
    @property
    def squared_gradient_sums(self):
        """The `(T, P)` accumulated squared gradients `S` (None until sized)."""
        return getattr(self.accumulators, "sums", None) if self.task_names else None

    def build_accumulators(self, num_parameters):
        """Creates `S`, `(T, num_parameters)` zeros; once.

        Args:
            num_parameters: `P`, the length of one task's gradient as
                `combine` sees it flattened: the number of shared parameters
                (params mode), or of entries of one example's `z`
                (representation mode).
        """
        num_parameters = check_int("num_parameters", num_parameters, minimum=0)
        sums = self.squared_gradient_sums
        if sums is None:
            self.accumulators.build(num_parameters)
        elif sums.shape[1] != num_parameters:
            raise ValueError(
                "Invalid value received for argument `weighting`. This ExcessMTL "
                f"instance ({self.name!r}) accumulates squared gradients of "
                f"{sums.shape[1]} entries per task; the model now has "
                f"{num_parameters} (its shared trainable variables changed). Its "
                "state belongs to the other parameters: pass a new instance, e.g. "
                "weighting='excess_mtl'."
            )

    def build_shared(self, variables, representation_shape=None):
        # Called by `compile` before `build` (and at every compile): see
        # "Sizing `S`" above.
        if self.mode == "params":
            size = sum(math.prod(v.shape) for v in variables)
        else:
            shape = tuple(representation_shape or ())
            if representation_shape is None or any(d is None for d in shape):
                raise ValueError(
                    "Invalid value received for argument `weighting`. ExcessMTL in "
                    "mode='representation' accumulates squared gradients per entry of "
                    "`z`, which needs a representation of fixed shape; this model's is "
                    f"{None if representation_shape is None else (None, *shape)}. "
                    "Pass mode='params'."
                )
            size = math.prod(shape)
        self._shared_size = size
        if self.task_names is not None:  # built: a later compile
            self.build_accumulators(size)

    def load_state(self, arrays):
        # A weighting loaded on its own (not through a model) is not sized
        # yet: the saved `S` gives its size.
        if self.squared_gradient_sums is None and len(arrays) == len(self.variables) + 1:
            self.build_accumulators(int(getattr(arrays[-1], "shape", (0, 0))[1]))
        super().load_state(arrays)

    # --- the step ---------------------------------------------------------------------
    def combine(
        self, grads, losses, counts=None, training=True, cross_replica_sum=None, activations=None
    ):
        grads = ops.cast(ops.convert_to_tensor(grads), "float32")
        n = len(self.task_names)
        if self.mode == "representation" and len(grads.shape) > 2:
            # The gradient w.r.t. one bias added to every example's `z`.
            vectors = ops.reshape(ops.sum(grads, axis=1), (n, -1))
            if cross_replica_sum is not None:
                vectors = cross_replica_sum(vectors)
        else:
            vectors = ops.reshape(grads, (n, -1))
        size = vectors.shape[1]
        if self.squared_gradient_sums is None:
            self.build_accumulators(size)
        sums = ops.convert_to_tensor(self.squared_gradient_sums)
        if sums.shape[1] != size:
            raise ValueError(
                "Invalid value received for argument `grads`. This ExcessMTL "
                f"instance ({self.name!r}) accumulates squared gradients of "
                f"{sums.shape[1]} entries per task; received gradients of {size}: "
                f"shape {tuple(grads.shape)}. If the model's shared trainable "
                "variables changed since it was first compiled with it, its state "
                "belongs to the other parameters: pass a new instance, e.g. "
                "weighting='excess_mtl'."
            )
        labelled = self.labelled(counts)
        squares = ops.square(vectors)
        new_sums = sums + ops.where(labelled[:, None], squares, 0.0)
        risks = ops.sum(squares / ops.sqrt(new_sums + self.epsilon), axis=1)

        weights = ops.convert_to_tensor(self.robust_weights)
        baseline = ops.convert_to_tensor(self.initial_risks)
        steps = ops.convert_to_tensor(self.initial_steps)
        warm = steps >= self.warmup_steps
        # A labelled task past its warm-up moves its weight; one still in it
        # adds a positive finite risk to its baseline's running mean.
        moving = ops.logical_and(labelled, warm)
        collect = ops.logical_and(
            ops.logical_and(labelled, ops.logical_not(warm)),
            ops.logical_and(ops.isfinite(risks), risks > 0.0),
        )
        new_steps = steps + ops.cast(collect, "float32")
        new_baseline = ops.where(
            collect, baseline + (risks - baseline) / ops.maximum(new_steps, 1.0), baseline
        )
        ratio = ops.where(moving, risks / ops.where(moving, baseline, 1.0), 0.0)
        new_weights = _multiplicative_step(weights, self.robust_step_size * ratio, labelled)

        if training:
            self.accumulators.sums.assign(new_sums)
            self.initial_risks.assign(new_baseline)
            self.initial_steps.assign(new_steps)
            self.robust_weights.assign(new_weights)
        step_weights = ops.where(labelled, new_weights, 0.0)
        if training:
            self.task_weights.assign(step_weights)
        combined = ops.tensordot(step_weights, grads, axes=1)
        return combined, step_weights

    def get_config(self):
        return {
            **super().get_config(),
            "robust_step_size": self.robust_step_size,
            "epsilon": self.epsilon,
            "warmup_steps": self.warmup_steps,
        }


def _multiplicative_step(weights, exponents, labelled):
    """`w_t exp(e_t)` over the labelled tasks, renormalised to the sum `w`
    had over them (in log space: a softmax, finite for any finite `e`); the
    unlabelled tasks' weights unchanged."""
    total = ops.sum(ops.where(labelled, weights, 0.0))
    logits = ops.where(
        ops.logical_and(labelled, weights > 0.0),
        ops.log(ops.where(weights > 0.0, weights, 1.0)) + exponents,
        -float("inf"),
    )
    top = ops.max(logits)
    usable = ops.logical_and(total > 0.0, ops.isfinite(top))
    shifted = ops.exp(logits - ops.where(usable, top, 0.0))
    moved = total * shifted / ops.where(usable, ops.sum(shifted), 1.0)
    return ops.where(ops.logical_and(labelled, usable), moved, weights)
