"""Loss-weighting methods for `MultiTaskModel.compile(weighting=...)`.

`get("equal")` returns a method from its name or alias (case-insensitive);
`names()` lists them.
"""

import keras

from keras_mtl.weighting.base import Weighting
from keras_mtl.weighting.equal import Equal

#: name (lower case) -> class. Aliases point at the same class.
REGISTRY = {
    "equal": Equal,
}


def names():
    """Registered method names and aliases."""
    return sorted(REGISTRY)


def get(identifier):
    """Returns a `Weighting` from an instance, a registered name or a config.

    Example:

    >>> get("equal")
    <Equal name=equal, built=False>
    """
    if isinstance(identifier, Weighting):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in REGISTRY:
        return REGISTRY[identifier.lower()]()
    if isinstance(identifier, dict):
        weighting = keras.saving.deserialize_keras_object(identifier)
        if isinstance(weighting, Weighting):
            return weighting
    raise ValueError(
        "Invalid value received for argument `weighting`. Expected a "
        f"`keras_mtl.weighting.Weighting` or one of the names {names()}. "
        f"Received: weighting={identifier!r}"
    )
