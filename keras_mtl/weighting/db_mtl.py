"""DB-MTL: dual balancing, of the loss scales (logarithms) and of the gradient magnitudes.

Lin, Jiang, Ye, Zhang, Chen, Chen, Liu & Kwok, "Dual-Balancing for
Multi-Task Learning", arXiv:2308.12029 (2023; later versions add Tsang as an
author and appear in Neural Networks). Official code: LibMTL
(github.com/median-research-group/LibMTL, maintained by the first author),
`LibMTL/weighting/DB_MTL.py` and the options `--DB_beta`, `--DB_beta_sigma`
of `LibMTL/config.py` (commit 4336804).

Two balancing steps, per training step `k` and task `t`:

1. Loss-scale balancing: each task minimises `log L_t`, whose gradient is
   `g̃_t = g_t / L_t` (`g_t` the gradient of `L_t` itself). Multiplying a
   loss by `c > 0` leaves `g̃_t` unchanged.
2. Gradient-magnitude balancing: an exponential moving average of each
   task's `g̃_t` (a `(T, P)` state, initialised to 0),

       b_t <- β_k b_t + (1 - β_k) g̃_t,        β_k = beta / k^beta_sigma,

   then every buffered gradient is scaled to the largest buffered norm:

       d = Σ_t α_t b_t,        α_t = max_s ‖b_s‖ / ‖b_t‖,

   so every task pulls the shared parameters with the same magnitude, the
   largest one's.

`d` is the shared update. It is not a combination of this step's gradients
alone: `d = Σ_t α_t β_k b_t(previous) + Σ_t w_t g_t`, the first sum carried
over from earlier steps. The reported weight of task `t` (`weight_<task>`) is
the coefficient of this step's gradient `g_t` (of the loss `L_t` itself) in
`d`:

    w_t = α_t (1 - β_k) / L_t

so `d - Σ_t w_t g_t` is the part the buffer carries over. (The training
step's reported `loss`, `Σ_t w_t L_t = (1 - β_k) Σ_t α_t`, is therefore no
loss value; `evaluate` reports `Σ_t w_t L_t` with the last step's weights, as
for every gradient-level method.)

The rate. `β_k = beta / k^beta_sigma` with `k = 1, 2, ...` the buffer's update
number, LibMTL's form (`beta / self.step**beta_sigma`, the step counted from
1). With `beta_sigma = 0` it is a plain EMA of rate `beta`; with
`beta_sigma > 0` the past weighs less and less (`β_k -> 0`: the buffer
becomes the current gradient). Defaults `beta = 0.9`, `beta_sigma = 0`
(a constant rate): LibMTL's command-line defaults (`--DB_beta 0.9`,
`--DB_beta_sigma 0`), which every other implementation we found keeps.
(`0.5` is LibMTL's default for MoCo's `--MoCo_beta_sigma`, the option DB-MTL's
mirrors, not for DB-MTL.)

The first step. The buffer starts at 0 (LibMTL's `torch.zeros`) with no
Adam-style bias correction: at `k = 1` it holds `(1 - beta) g̃_t`, so the
first updates are `1 - beta` (0.1) times as long as `max_t ‖g̃_t‖`, growing
as the buffer fills. The direction is unaffected (the same factor for every
task). LibMTL does the same. (The update here is the official code's: the
paper's own text, its Algorithm 1, was not at hand when this was written.)

With Adam. The buffer is a momentum of its own, under Adam's: at larger
learning rates the two lags add up. Measured on a SchNet trunk learning
three atom-count targets (10 epochs of 8 steps, Adam 3e-3): `beta=0.9`
barely learns (the three losses from about 1.0 to 0.82, 0.86, 0.99), where
Equal reaches 0.25, 0.06, 0.15 and `beta=0` (no average) 0.04, 0.06, 0.05;
with plain SGD `beta=0.9` and `beta=0` learn alike. It is the method's
dynamics (PCGrad and MGDA in params mode learn on the same trunk), and what
QM9 (`benchmarks/bench_qm9.py`, Adam 1e-3, at most 25 short epochs) shows
too. With Adam, try a smaller `beta` or learning rate.

Deviations from LibMTL, and why:

- LibMTL takes `log(L_t + 1e-8)`; here `log L_t` exactly (or `log(L_t - m_t)`,
  below): a loss at or just below 0 would give `g_t / (L_t + 1e-8)`, 1e8 times
  the gradient or more, and one below `-1e-8` a NaN with no hint. A labelled
  task whose loss is at or below its bound makes the step non-finite (the
  combined gradient and the weights are NaN, and no state moves), which
  stops `fit` with `explain_nonfinite`'s hint.
- LibMTL divides by `‖b_t‖ + 1e-8`, which shrinks the update for gradients
  of norm near 1e-8 or below; here exactly `max_s ‖b_s‖ / ‖b_t‖`, so that
  gradients `s` times larger give an update `s` times larger for any `s`
  (the norms are taken of the rows divided by their largest entry, so
  neither 1e-20 nor 1e20 gradients underflow or overflow). A zero buffer
  (a task whose gradient has been 0 so far) takes no part (`α_t = 0`).
- The task heads: LibMTL back-propagates `log L_t` through everything, so
  each task's head gets `∇ log L_t = ∇L_t / L_t`. Here, as for every method
  of the package, each head gets the gradient of its own `L_t`: the
  weighting sees only the shared parameters' gradients.
- Tasks without labels (below): LibMTL has none.

Lower bounds (our extension, as `ScaleInvariant`, `GeometricLoss`, FAMO and
STCH have). A loss that can be negative or reach 0 (a closeness loss, a
cosine similarity) is given a lower bound `m_t` (`min_losses`, default 0),
and `L_t - m_t` takes the place of `L_t` above: `g̃_t = g_t / (L_t - m_t)`.

Unlabelled tasks. A task with no label in the batch (its labelled count is 0)
has no gradient that step: its buffer and its update count do not move, it
takes no part in `d` (nor in the largest norm), and its weight is 0. Its
buffer is used again from its next labelled step, whose rate is that of its
own next update (each task counts its own updates: with every task labelled
at every step this is LibMTL's global step).

State (saved with the model, restored by `BackupAndRestore`): the `(T, P)`
float32 buffer `gradient_buffer` (`P` the number of trainable parameters of
the trunk), the `(T,)` int32 `update_counts`, and the last weights. The
buffer holds `T·P` floats besides the per-task gradients. `compile` hands
the trunk's variables over before building the method (`build_shared`), and
`build` creates the buffer; outside a model, call `build_shared(variables)`
before `build`. A trunk whose number of trainable parameters changes
afterwards (layers frozen or unfrozen) needs a new instance: `compile` says
so.
`training=False` computes the same update and weights and changes no state.

Modes:

| mode             | supported | why                                               |
| ---------------- | --------- | ------------------------------------------------- |
| "params"         | yes       | the paper's (and LibMTL's) setting: an EMA of the |
|                  | (default) | shared parameters' gradients, the same parameters |
|                  |           | every step.                                       |
| "representation" | no        | the gradient at `z` is one row per example of the |
|                  |           | batch: row `i` of one step and row `i` of the     |
|                  |           | next belong to different examples, so their EMA   |
|                  |           | averages unrelated quantities (and the batch size |
|                  |           | may change). LibMTL refuses it too.               |
"""

import numbers

import keras
import numpy as np
from keras import ops

from keras_mtl._validation import check_non_negative
from keras_mtl.weighting.base import check_lower_bounds
from keras_mtl.weighting.base import explain_lower_bounds
from keras_mtl.weighting.gradient_base import GradientWeighting
from keras_mtl.weighting.gradient_base import shared_parameter_count
from keras_mtl.weighting.registry import register
from keras_mtl.weighting.space import Float


def _row_norms(matrix):
    """The L2 norm of each row of `matrix`, taken of the row divided by its
    largest entry, so that neither tiny nor huge rows under- or overflow.
    0 for a zero row; NaN for a row with a non-finite entry."""
    largest = ops.max(ops.abs(matrix), axis=1)
    safe = ops.where(largest > 0, largest, 1.0)
    return largest * ops.sqrt(ops.sum(ops.square(matrix / safe[:, None]), axis=1))


@register
class DBMTL(GradientWeighting):
    """Dual-Balancing MTL (Lin et al. 2023): gradients of the log losses,
    averaged over steps, each scaled to the largest one's norm.

    Supported modes: `"params"` only (see the module docstring for the
    update, the reported weights and why the representation mode is left
    out).

    Args:
        beta: The EMA rate `beta` in [0, 1) (`β_k = beta / k^beta_sigma`);
            0: no averaging. Default 0.9 (LibMTL's).
        beta_sigma: The decay exponent of the rate, >= 0. Default 0 (a
            constant rate, LibMTL's default).
        min_losses: Optional dict `{task: lower bound of its loss}` (0 for
            tasks left out); needed for losses that can be 0 or negative.
        mode: `"params"`.
        gradient_dtype: As `GradientWeighting`'s.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> import numpy as np
    >>> weighting = DBMTL(beta=0.5, beta_sigma=0.0)
    >>> weighting.build_shared([np.zeros(2)])  # the shared variables: P = 2 (compile or fit)
    >>> weighting.build({"a": (), "b": ()})
    >>> grads = np.array([[2.0, 0.0], [0.0, 1.0]], "float32")
    >>> # g / L = [1, 0] and [0, 2]; buffers 0.5 times those, norms 0.5 and 1,
    >>> # scaled to the largest: d = 2 [0.5, 0] + 1 [0, 1].
    >>> combined, weights = weighting.combine(grads, {"a": 2.0, "b": 0.5})
    >>> [float(x) for x in combined]
    [1.0, 1.0]
    >>> [float(w) for w in weights]  # α_t (1 - β) / L_t
    [0.5, 1.0]
    """

    registry_name = "db_mtl"
    aliases = ("dual_balancing",)
    paper = "Lin et al., arXiv:2308.12029 (2023)"
    search_space = {"beta": Float(0.5, 0.99), "beta_sigma": Float(0.0, 1.0)}

    supported_modes = ("params",)

    def __init__(
        self, beta=0.9, beta_sigma=0.0, min_losses=None, mode="params", gradient_dtype="float32",
        **kwargs,
    ):
        super().__init__(mode=mode, gradient_dtype=gradient_dtype, **kwargs)
        if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0 <= beta < 1:
            raise ValueError(
                "Invalid value received for argument `beta`. Expected a float in "
                f"[0, 1) (at 1 the buffer never moves from 0). Received: beta={beta!r}"
            )
        self.beta = float(beta)
        self.beta_sigma = check_non_negative("beta_sigma", beta_sigma)
        self.min_losses = check_lower_bounds("min_losses", min_losses)
        #: P, the number of shared parameters (entries of the trunk's
        #: trainable variables), from `build_shared`.
        self.num_parameters = None

    def build_shared(self, variables, representation_shape=None):
        """Records `P`, the number of entries of the shared variables (the
        trunk's trainable ones): `build` creates the `(T, P)` buffer.
        `compile` calls it; a custom loop calls it before `build`.
        (`representation_shape` is not used: params mode only.)"""
        self.num_parameters = shared_parameter_count(self, variables, self.num_parameters)

    def build(self, losses_shape):
        if self.num_parameters is None:
            raise ValueError(
                "DBMTL needs the shared variables before `build` (its gradient buffer "
                "has one entry per shared parameter): `compile` hands them over; "
                "outside a model call `weighting.build_shared(variables)` first."
            )
        super().build(losses_shape)
        n = len(self.task_names)
        bounds = self.min_losses or {}
        self.check_task_keys("min_losses", bounds, require_all=False)
        self._bounds = ops.convert_to_tensor(
            [bounds.get(name, 0.0) for name in self.task_names], "float32"
        )
        self.update_counts = self.add_weight(
            name="update_counts", shape=(n,), initializer="zeros", dtype="int32",
            trainable=False,
        )
        self.gradient_buffer = self.add_weight(
            name="gradient_buffer", shape=(n, self.num_parameters), initializer="zeros",
            trainable=False,
        )

    def combine(
        self, grads, losses, counts=None, training=True, cross_replica_sum=None, activations=None
    ):
        grads = ops.convert_to_tensor(grads)
        n = len(self.task_names)
        flat = ops.cast(ops.reshape(grads, (n, -1)), "float32")
        if flat.shape[1] != self.num_parameters:
            raise ValueError(
                f"DBMTL was built for {self.num_parameters} shared parameters; the "
                f"gradients have {flat.shape[1]} per task. Received: grads of shape "
                f"{tuple(grads.shape)}"
            )
        buffer = ops.convert_to_tensor(self.gradient_buffer)
        updates = ops.convert_to_tensor(self.update_counts)
        labelled = self.labelled(counts)
        shifted = self.stack(losses) - self._bounds
        positive = ops.greater(shifted, 0.0)
        # log(L - m) needs L > m for every labelled task: otherwise the step is
        # made non-finite (fit stops with `explain_nonfinite`), never zeroed.
        undefined = ops.any(ops.logical_and(labelled, ops.logical_not(positive)))
        safe = ops.where(ops.logical_and(labelled, positive), shifted, 1.0)

        step = ops.cast(updates, "float32") + 1.0  # each task's update number k
        rate = self.beta / ops.power(step, self.beta_sigma)  # β_k
        moved = rate[:, None] * buffer + (1.0 - rate)[:, None] * (flat / safe[:, None])
        new_buffer = ops.where(labelled[:, None], moved, buffer)

        norms = _row_norms(new_buffer)
        active = ops.logical_and(
            labelled, ops.logical_and(ops.greater(norms, 0.0), ops.isfinite(norms))
        )
        largest = ops.max(ops.where(active, norms, 0.0))
        alpha = ops.where(active, largest / ops.where(active, norms, 1.0), 0.0)
        combined = ops.tensordot(alpha, new_buffer, axes=1)
        weights = alpha * (1.0 - rate) / safe
        combined = ops.where(undefined, float("nan"), combined)
        weights = ops.where(undefined, float("nan"), weights)
        if training:
            # A non-finite step leaves the state as it was.
            ok = ops.logical_and(
                ops.logical_not(undefined), ops.all(ops.isfinite(new_buffer))
            )
            self.gradient_buffer.assign(ops.where(ok, new_buffer, buffer))
            self.update_counts.assign(
                ops.where(ops.logical_and(ok, labelled), updates + 1, updates)
            )
            self.task_weights.assign(weights)
        return ops.reshape(ops.cast(combined, "float32"), grads.shape[1:]), weights

    def explain_nonfinite(self, losses):
        return explain_lower_bounds(self, losses)

    def get_config(self):
        return {
            **super().get_config(),
            "beta": self.beta,
            "beta_sigma": self.beta_sigma,
            "min_losses": self.min_losses,
        }
