"""The registry of weighting methods: names, lookup, and the tables built from it.

A method registers itself with the `register` class decorator, which reads
the class's own attributes:

- `registry_name`: the name `compile(weighting=...)`, tuning and the CLI
  use (`"dwa"` style: lower case, words joined by `_`);
- `aliases`: other names from the literature (`("dwa",)`);
- `paper`: the reference it implements;
- `level`: `"loss"` or `"gradient"`; gradient-level methods also list
  `supported_modes`;
- `search_space`: the constructor arguments KerasTuner searches
  (`keras_mtl.weighting.space`).

Everything that lists methods (`names()`, the tuner's space, the
kill-and-resume, distributed and benchmark method lists, the site's
tables) reads this registry, so a new method is one file and one test file.
A method defined outside the package registers the same way and is then
usable by name everywhere:

>>> import keras, keras_mtl
>>> @keras_mtl.weighting.register
... class Halved(keras_mtl.weighting.Weighting):
...     registry_name = "halved_doc"
...     paper = "an example"
...     def call(self, losses, counts=None, training=False):
...         return self.weighted_sum(losses, 0.5 * keras.ops.ones((len(self.task_names),)))
>>> type(keras_mtl.weighting.get("Halved-Doc")).__name__
'Halved'
>>> unregister("halved_doc")

Names are matched case-insensitively and ignoring `_`, `-` and spaces, so
`"NashMTL"`, `"nash-mtl"` and `"nash_mtl"` name the same method.
"""

import keras

_METHODS = {}  # canonical registry name -> class
_LOOKUP = {}  # normalised name or alias -> canonical registry name


def _normalise(name):
    return "".join(c for c in name.lower() if c not in "_- ")


def _identity(cls):
    return cls.__module__, cls.__qualname__


def _check_class(cls):
    from keras_mtl.weighting.base import Weighting

    if not (isinstance(cls, type) and issubclass(cls, Weighting)):
        raise TypeError(
            "`keras_mtl.weighting.register` decorates subclasses of "
            f"`keras_mtl.weighting.Weighting`. Received: {cls!r}"
        )
    name = getattr(cls, "registry_name", None)
    aliases = getattr(cls, "aliases", ())
    if not isinstance(name, str) or not _normalise(name):
        raise ValueError(
            f"Invalid class attribute `registry_name` of {cls.__name__}. Expected "
            f"a non-empty string, the method's name. Received: registry_name={name!r}"
        )
    if isinstance(aliases, str) or not all(isinstance(a, str) and _normalise(a) for a in aliases):
        raise ValueError(
            f"Invalid class attribute `aliases` of {cls.__name__}. Expected a tuple "
            f"of non-empty strings. Received: aliases={aliases!r}"
        )
    if cls.level not in ("loss", "gradient"):
        raise ValueError(
            f"Invalid class attribute `level` of {cls.__name__}. Expected 'loss' or "
            f"'gradient'. Received: level={cls.level!r}"
        )
    return name, tuple(aliases)


def register(cls=None, *, package=None):
    """Class decorator: registers a weighting method under its names.

    It also registers the class with Keras' serialisation
    (`keras.saving.register_keras_serializable`), so a model compiled with it
    round-trips through `.keras` files.

    Args:
        cls: A `Weighting` subclass with the class attributes listed in the
            module docstring.
        package: The Keras serialisation package; defaults to the top-level
            package of the class's module (`"keras_mtl"` for ours).

    Returns:
        The class, unchanged.

    Raises:
        ValueError: If one of its names already names another method.
    """

    def decorate(cls):
        name, aliases = _check_class(cls)
        keys = {_normalise(n) for n in (name, *aliases)}
        for key in sorted(keys):
            owner = _METHODS.get(_LOOKUP.get(key))
            if owner is not None and _identity(owner) != _identity(cls):
                raise ValueError(
                    f"Cannot register {cls.__name__} as {name!r}: the name "
                    f"{key!r} already names {owner.__module__}.{owner.__qualname__}. "
                    "Choose another `registry_name` / `aliases`, or `unregister` "
                    "the other method first."
                )
        # Re-registering the same class (a re-run notebook cell, a reloaded
        # module) replaces it.
        unregister(name, missing_ok=True)
        _METHODS[name] = cls
        for key in keys:
            _LOOKUP[key] = name
        keras.saving.register_keras_serializable(
            package=package or cls.__module__.split(".")[0]
        )(cls)
        return cls

    return decorate if cls is None else decorate(cls)


def unregister(name, missing_ok=False):
    """Removes the method registered as `name` (any of its names)."""
    canonical = _LOOKUP.get(_normalise(name))
    if canonical is None:
        if missing_ok:
            return
        raise ValueError(f"No weighting method is registered as {name!r}. Known: {names()}")
    del _METHODS[canonical]
    for key in [k for k, v in _LOOKUP.items() if v == canonical]:
        del _LOOKUP[key]


def methods(level=None):
    """`{registry name: class}` of the registered methods, in registration
    order; only `"loss"` or `"gradient"` ones if `level` is given."""
    return {n: c for n, c in _METHODS.items() if level is None or c.level == level}


def names():
    """Every registered name and alias, sorted."""
    return sorted({n for cls in _METHODS.values() for n in (cls.registry_name, *cls.aliases)})


def get_class(name):
    """The class registered under `name` (or `None`)."""
    canonical = _LOOKUP.get(_normalise(name)) if isinstance(name, str) else None
    return _METHODS.get(canonical)


def get(identifier):
    """Returns a `Weighting` from an instance, a registered name or a config.

    Example:

    >>> get("equal")
    <Equal name=equal..., built=False>
    >>> type(get("DWA")).__name__
    'DynamicWeightAverage'
    """
    from keras_mtl.weighting.base import Weighting

    if isinstance(identifier, Weighting):
        return identifier
    cls = get_class(identifier)
    if cls is not None:
        return cls()
    if isinstance(identifier, dict):
        weighting = keras.saving.deserialize_keras_object(identifier)
        if isinstance(weighting, Weighting):
            return weighting
    raise ValueError(
        "Invalid value received for argument `weighting`. Expected a "
        f"`keras_mtl.weighting.Weighting` or one of the names {names()}. "
        f"Received: weighting={identifier!r}"
    )


def markdown_table(level, package=None):
    """The table (docs/weighting.md) of the registered methods of one `level`
    (`"loss"` or `"gradient"`); only the classes defined in `package` (e.g.
    `"keras_mtl"`) if given. Its last column lists the `search_space`."""
    gradient = level == "gradient"
    rows = ["| name (aliases) | class | paper |" + (" modes |" if gradient else "") + " tuned |",
            "| --- | --- | --- |" + (" --- |" if gradient else "") + " --- |"]
    for name, cls in methods(level).items():
        if package and cls.__module__.split(".")[0] != package:
            continue
        aliases = f" ({', '.join(f'`{a}`' for a in cls.aliases)})" if cls.aliases else ""
        row = f"| `{name}`{aliases} | `{cls.__name__}` | {cls.paper} |"
        if gradient:
            row += f" {', '.join(cls.supported_modes)} |"
        tuned = ", ".join(f"`{a}` {_describe(spec)}" for a, spec in cls.search_space.items())
        rows.append(row + f" {tuned or '-'} |")
    return "\n".join(rows)


def _describe(spec):
    from keras_mtl.weighting import space

    if isinstance(spec, space.PerTask):
        return f"per task {_describe(spec.spec)}"
    if isinstance(spec, space.Choice):
        return "∈ {" + ", ".join(repr(v) for v in spec.values) + "}"
    log = ", log" if spec.sampling == "log" else ""
    return f"∈ [{spec.low:g}, {spec.high:g}{log}]"
