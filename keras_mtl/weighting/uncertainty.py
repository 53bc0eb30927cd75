"""Uncertainty weighting: learned homoscedastic task uncertainty.

Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh
Losses for Scene Geometry and Semantics", CVPR 2018 (arXiv:1705.07115).

Each task has a learned log-variance `s_t = log sigma_t^2` (a trainable
variable the model's optimiser updates with the network). From the paper's
Gaussian likelihood (regression) and scaled softmax (classification),
eq. (7) and (10), with `log sigma_t = s_t / 2`:

    regression:      1/(2 sigma_t^2) L_t + log sigma_t = 0.5 exp(-s_t) L_t + 0.5 s_t
    classification:    1/sigma_t^2   L_t + log sigma_t =     exp(-s_t) L_t + 0.5 s_t

    L = sum_t term_t

A task's kind comes from `task_kinds`; a task it does not name uses the
regression form, so the default (`task_kinds=None`) is the uniform form
`0.5 exp(-s_t) L_t + 0.5 s_t` that LibMTL uses for every task. The reported
weight of a task is its loss coefficient: `0.5 exp(-s_t)` (regression) or
`exp(-s_t)` (classification).

A task with no label in a batch (`counts` 0) is left out of that step: neither
its term nor its regulariser `0.5 s_t` is added, so `s_t` does not drift
while the task is unlabelled.
"""

import keras
from keras import ops

from keras_mtl.weighting.base import Weighting
from keras_mtl.weighting.base import check_number
from keras_mtl.weighting.registry import register

_FACTORS = {"regression": 0.5, "classification": 1.0}


@register
class Uncertainty(Weighting):
    """Weights tasks by learned homoscedastic uncertainty (Kendall et al. 2018).

    Args:
        task_kinds: Optional dict `{task: "regression" | "classification"}`
            choosing each task's form; tasks left out use the regression form
            (`None`: the uniform form `0.5 exp(-s) L + 0.5 s` for every task).
        initial_log_variance: Initial value of every `s_t = log sigma_t^2`.
        **kwargs: Base layer arguments (`name`, ...).

    Example:

    >>> weighting = Uncertainty(task_kinds={"b": "classification"})
    >>> weighting.build({"a": (), "b": ()})
    >>> total, weights = weighting({"a": 2.0, "b": 3.0})
    >>> float(total)  # 0.5 * 2 + 1 * 3 (s = 0)
    4.0
    >>> {k: float(v) for k, v in weights.items()}
    {'a': 0.5, 'b': 1.0}
    """

    registry_name = "uncertainty"
    aliases = ("uw",)
    paper = "Kendall, Gal & Cipolla, CVPR 2018"

    def __init__(self, task_kinds=None, initial_log_variance=0.0, **kwargs):
        super().__init__(**kwargs)
        if task_kinds is not None:
            if not isinstance(task_kinds, dict) or any(
                kind not in _FACTORS for kind in task_kinds.values()
            ):
                raise ValueError(
                    "Invalid value received for argument `task_kinds`. Expected "
                    "a dict {task: 'regression' | 'classification'}. Received: "
                    f"task_kinds={task_kinds!r}"
                )
            task_kinds = {str(k): v for k, v in task_kinds.items()}
        self.task_kinds = task_kinds
        self.initial_log_variance = check_number("initial_log_variance", initial_log_variance)

    @classmethod
    def arguments_from_tasks(cls, tasks):
        # Kendall et al.'s two forms: softmax/sigmoid heads are classification.
        return {"task_kinds": {
            t.name: "classification" if t.activation in ("sigmoid", "softmax") else "regression"
            for t in tasks
        }}

    def build(self, losses_shape):
        super().build(losses_shape)
        kinds = self.task_kinds or {}
        self.check_task_keys("task_kinds", kinds, require_all=False)
        self._factors = ops.convert_to_tensor(
            [_FACTORS[kinds.get(n, "regression")] for n in self.task_names], "float32"
        )
        self.log_variances = self.add_weight(
            name="log_variances",
            shape=(len(self.task_names),),
            initializer=keras.initializers.Constant(self.initial_log_variance),
            trainable=True,
        )

    def call(self, losses, counts=None, training=False):
        vector = self.stack(losses)
        s = ops.convert_to_tensor(self.log_variances)
        weights = self._factors * ops.exp(-s)
        terms = ops.where(self.labelled(counts), weights * vector + 0.5 * s, 0.0)
        return ops.sum(terms), self.unstack(weights)

    def get_config(self):
        return {
            **super().get_config(),
            "task_kinds": self.task_kinds,
            "initial_log_variance": self.initial_log_variance,
        }
