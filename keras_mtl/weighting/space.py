"""Search spaces of weighting methods, declared on the method's class.

A method lists the constructor arguments worth tuning in its class attribute
`search_space`, `{argument: spec}`. The specs here are plain descriptions
(no KerasTuner import): `keras_mtl.tuning` turns each into a KerasTuner
hyperparameter named `<method>/<argument>`, with the constructor's default as
its default, so a method defined outside the package is searched like ours.

Example:

>>> space = {"temperature": Float(0.5, 10.0, sampling="log")}
>>> space["temperature"]
Float(low=0.5, high=10.0, sampling='log')
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Float:
    """A float in `[low, high]`, linear or log `sampling`."""

    low: float
    high: float
    sampling: str = "linear"


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of `values`."""

    values: tuple


@dataclasses.dataclass(frozen=True)
class PerTask:
    """A dict `{task: value}`, one `spec` per task of the model, each
    searched as `<method>/<key>` (`key` formatted with the task's name) with
    default `default`."""

    spec: Float
    key: str = "{task}"
    default: float = 1.0
