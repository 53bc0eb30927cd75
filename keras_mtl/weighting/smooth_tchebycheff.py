"""Smooth Tchebycheff scalarisation (STCH), with its warm-up.

Lin, Zhang, Yang, Liu, Wang & Zhang, "Smooth Tchebycheff Scalarization for
Multi-Objective Optimization", ICML 2024 (arXiv:2402.19078). The smooth
Tchebycheff scalarisation of objectives `f_t` with reference point `z_t`,
preferences `lambda_t` and smoothing `mu > 0` is

    g_mu(x) = mu * log sum_t exp(lambda_t (f_t(x) - z_t) / mu)

a smooth upper bound of the classical Tchebycheff `max_t lambda_t (f_t - z_t)`
that tends to it as `mu -> 0`. Its multi-task form is the authors' code
(github.com/Xi-L/STCH, `STCH_MTL/LibMTL/weighting/STCH.py`; LibMTL's
`LibMTL/weighting/STCH.py`, `--weighting STCH`, is the same code with a
docstring), which this module follows:

- warm-up: for the epochs `e < warmup_epochs` (0-based) the objective is
  `sum_t log L_t` (Nash-MTL's SI baseline, `ScaleInvariant`);
- the nadir epoch `e = warmup_epochs`: the same objective, and each task's
  mean training loss over the epoch is gathered: the nadir vector `n`;
- then, from epoch `warmup_epochs + 1` on, with `f_t = log L_t`,
  `z_t = log n_t` and `lambda_t = 1`, times the number of tasks `T`:

      L = T * mu * log sum_t exp(log(L_t / n_t) / mu)

  computed stably (the largest `log(L_t / n_t)` taken out of the sum).

So `warmup_epochs` has LibMTL's meaning (`STCH_warmup_epoch`): the index of
the nadir epoch, which is a warm-up epoch too; STCH starts one epoch later.
Defaults as the authors' code and LibMTL: `mu = 1` (`--STCH_mu`, default 1.0)
and `warmup_epochs = 4` (`--STCH_warmup_epoch`, default 4), both in
`LibMTL/config.py` (lines 66-67, in LibMTL and in the authors' copy).

The reported weight of a task is the derivative of the total with respect to
its loss, the coefficient its gradient gets in the update: `1 / L_t` during
the warm-up, and afterwards

    dL / dL_t = T * p_t / L_t,  p = softmax(log(L / n) / mu)

As `mu -> 0`, `p` tends to the one-hot vector of the task with the largest
normalised loss `L_t / n_t` (Tchebycheff: only the worst task is trained); as
`mu -> inf`, to `1 / T`: the weights of the warm-up's sum of logs.

Where we differ from the authors' code, and why:

- Epochs are counted by the method itself (finished epochs with at least one
  training step), not taken from the trainer, so the count, the partial sums
  and the nadir vector are state: saved in `.keras` files, restored by
  `BackupAndRestore`, and carried across `fit` calls (a second `fit` goes on
  where the first stopped, as the optimiser does).
- The total is the smooth Tchebycheff value itself. The authors' code
  subtracts the largest term from the log-sum-exp without adding it back: the
  same gradient, a loss value lower by `T * max_t log(L_t / n_t)`.
- The authors' code takes `log(L_t + 1e-20)`. We give each loss a lower
  bound `m_t` (`min_losses`, default 0; as `ScaleInvariant`, `GeometricLoss`
  and `FAMO` do) and use `L_t - m_t` in place of `L_t` everywhere (the nadir
  is the epoch mean of `L_t - m_t`); a loss at or below its bound makes the
  step non-finite, which stops training with an error that names the task
  and says how to set a bound, where the 1e-20 would give a weight of 1e20.
  (Our extension: the paper's losses are all positive.) As for
  `ScaleInvariant`, give a loss that can reach its bound a bound below its
  minimum by a margin.
- Unlabelled tasks (absent from the authors' setting): a task with no label
  in a batch (its labelled count is 0) is left out of the step: out of the
  sum of logs, the log-sum-exp and the epoch means, with weight 0; `T` is the
  number of tasks labelled in the step, and a step where none is labelled
  has loss 0. A task with no label during the whole nadir epoch gets the
  nadir 1 (its loss is not normalised).
"""

import keras
from keras import ops

from keras_mtl.weighting.base import LowerBoundedWeighting
from keras_mtl.weighting.base import check_int
from keras_mtl.weighting.base import check_number
from keras_mtl.weighting.registry import register
from keras_mtl.weighting.space import Float


@register
class SmoothTchebycheff(LowerBoundedWeighting):
    """Smooth Tchebycheff scalarisation of the log losses, after a warm-up.

    For `warmup_epochs + 1` epochs the total is the sum of the log losses,
    and the last of them gives the nadir vector `n` (each task's mean loss);
    then it is `T * mu * log sum_t exp(log(L_t / n_t) / mu)`. See the module
    docstring for the formulas, the weights and where this differs from the
    authors' code.

    `MultiTaskModel.fit` calls `on_epoch_begin` and `on_epoch_end`; a custom
    training loop calls them itself.

    Args:
        mu: Smoothing `mu > 0`; the smaller, the closer to the classical
            Tchebycheff (all weight on the task with the largest normalised
            loss).
        warmup_epochs: Integer >= 0, the 0-based index of the nadir epoch:
            that many epochs of the sum of log losses, then one more in
            which the nadir vector is gathered, then STCH (LibMTL's
            `STCH_warmup_epoch`).
        min_losses: Optional dict `{task: lower bound of its loss}` (0 for
            tasks left out); needed for losses that can be negative.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> weighting = SmoothTchebycheff(mu=1.0, warmup_epochs=0)
    >>> weighting.build({"a": (), "b": ()})
    >>> _, weights = weighting({"a": 2.0, "b": 4.0}, training=True)
    >>> {k: float(v) for k, v in weights.items()}  # warm-up: 1 / L_t
    {'a': 0.5, 'b': 0.25}
    >>> weighting.on_epoch_end(0)  # the nadir epoch: n = (2, 4)
    >>> total, weights = weighting({"a": 1.0, "b": 4.0})
    >>> round(float(total), 4)  # 2 log(1/2 + 4/4)
    0.8109
    >>> {k: round(float(v), 4) for k, v in weights.items()}  # 2 p_t / L_t
    {'a': 0.6667, 'b': 0.3333}
    """

    registry_name = "stch"
    aliases = ("smooth_tchebycheff",)
    paper = "Lin et al., ICML 2024"
    search_space = {"mu": Float(0.1, 10.0, sampling="log")}

    def __init__(self, mu=1.0, warmup_epochs=4, min_losses=None, **kwargs):
        super().__init__(min_losses=min_losses, **kwargs)
        self.mu = check_number("mu", mu, minimum=0, exclusive=True)
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, minimum=0)

    def build(self, losses_shape):
        super().build(losses_shape)
        num_tasks = len(self.task_names)

        def state(name, shape, value=0.0, dtype="float32"):
            return self.add_weight(
                name=name,
                shape=shape,
                initializer=keras.initializers.Constant(value),
                dtype=dtype,
                trainable=False,
            )

        # This epoch's sums and counts of the labelled losses L_t - m_t
        # (training steps only), the nadir vector (1 until it is known) and
        # the number of finished epochs.
        self.loss_sums = state("loss_sums", (num_tasks,))
        self.loss_counts = state("loss_counts", (num_tasks,))
        self.nadir = state("nadir", (num_tasks,), value=1.0)
        self.epochs_seen = state("epochs_seen", (), dtype="int32")

    def call(self, losses, counts=None, training=False):
        vector = self.stack(losses) - self._bounds
        present = self.labelled(counts)
        if training:
            labelled = ops.cast(present, "float32")
            self.loss_sums.assign_add(ops.stop_gradient(vector) * labelled)
            self.loss_counts.assign_add(labelled)
        # The inner `where`s keep every gradient finite for unlabelled tasks
        # (whose loss, 0, may be at its bound).
        safe = ops.where(present, vector, 1.0)
        log_losses = ops.where(present, ops.log(safe), 0.0)
        warmup_total = ops.sum(log_losses)
        warmup_weights = ops.where(present, 1.0 / safe, 0.0)

        num_labelled = ops.sum(ops.cast(present, "float32"))
        normalised = log_losses - ops.log(ops.convert_to_tensor(self.nadir))
        # The largest labelled term comes out of the sum (no overflow for
        # small mu); the total's gradient with respect to it is 0, so
        # stopping it changes no gradient.
        largest = ops.max(ops.where(present, normalised, -1e30))
        largest = ops.stop_gradient(ops.where(ops.any(present), largest, 0.0))
        exponent = ops.where(present, (normalised - largest) / self.mu, 0.0)
        terms = ops.where(present, ops.exp(exponent), 0.0)
        sum_terms = ops.sum(terms)
        safe_sum = ops.where(sum_terms > 0, sum_terms, 1.0)
        stch_total = num_labelled * (largest + self.mu * ops.log(safe_sum))
        stch_weights = num_labelled * (terms / safe_sum) / safe

        after_warmup = ops.greater(ops.convert_to_tensor(self.epochs_seen), self.warmup_epochs)
        total = ops.where(after_warmup, stch_total, warmup_total)
        weights = ops.where(after_warmup, stch_weights, warmup_weights)
        return total, self.unstack(weights)

    def on_epoch_begin(self, epoch):
        # An epoch interrupted before (or restored from a mid-epoch backup,
        # which Keras replays from the epoch's first step) must not count twice.
        self._reset_sums()

    def _reset_sums(self):
        # Two arrays: JAX's jitted step donates each variable's buffer, and
        # one array held by two variables would be donated twice.
        self.loss_sums.assign(ops.zeros((len(self.task_names),)))
        self.loss_counts.assign(ops.zeros((len(self.task_names),)))

    def on_epoch_end(self, epoch):
        counts = ops.convert_to_tensor(self.loss_counts)
        if float(ops.sum(counts)) == 0:
            return  # No training step this epoch: not an epoch of the schedule.
        if int(ops.convert_to_numpy(self.epochs_seen)) == self.warmup_epochs:  # the nadir epoch ends
            mean = ops.divide_no_nan(ops.convert_to_tensor(self.loss_sums), counts)
            self.nadir.assign(ops.where(ops.greater(counts, 0), mean, 1.0))
        self.epochs_seen.assign_add(1)
        self._reset_sums()

    def get_config(self):
        return {
            **super().get_config(),
            "mu": self.mu,
            "warmup_epochs": self.warmup_epochs,
        }
