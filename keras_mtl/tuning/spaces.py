"""The weighting methods' own hyperparameters: a method's `search_space`
(`keras_mtl.weighting.space`) as KerasTuner hyperparameters.
"""

import inspect

from keras_mtl.weighting import space


def hyperparameter(hp, name, spec, default, tasks):
    """The KerasTuner hyperparameter of one `keras_mtl.weighting.space` spec."""
    if isinstance(spec, space.PerTask):
        prefix = name.rsplit("/", 1)[0]
        return {
            t.name: hyperparameter(
                hp, f"{prefix}/{spec.key.format(task=t.name)}", spec.spec, spec.default, tasks
            )
            for t in tasks
        }
    if isinstance(spec, space.Float):
        return hp.Float(name, spec.low, spec.high, sampling=spec.sampling, default=default)
    if isinstance(spec, space.Choice):
        return hp.Choice(name, list(spec.values), default=default)
    raise TypeError(
        f"Invalid search space entry {name!r}: expected a keras_mtl.weighting.space "
        f"Float, Choice or PerTask. Received: {spec!r}"
    )


def constructor_default(cls, argument):
    """The default of `argument` in `cls`'s constructor."""
    return inspect.signature(cls.__init__).parameters[argument].default


def method_space(cls):
    """`{argument: spec}` searched for a weighting class: its `search_space`,
    and `mode` ("params" or "representation") for a gradient-level method
    that supports both."""
    searched = dict(cls.search_space)
    modes = getattr(cls, "supported_modes", ())
    if len(modes) > 1:
        searched["mode"] = space.Choice(tuple(modes))
    return searched
