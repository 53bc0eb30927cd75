"""Argument checks of the hypermodel's search space (sequences of distinct
choices, ranges, fractions of a backbone's depth)."""

import math
import numbers

from keras_mtl import _validation


def check_fraction(argument, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= 1:
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected a "
            f"float in (0, 1]. Received: {argument}={value!r}"
        )
    return float(value)


def check_sequence(argument, value):
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected a "
            f"non-empty list or tuple. Received: {argument}={value!r}"
        )
    if len(set(map(repr, value))) != len(value):
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected "
            f"distinct values. Received: {argument}={value!r}"
        )
    return tuple(value)


def check_ints(argument, value, minimum):
    """Distinct integers (NumPy's too) >= `minimum`, as a tuple of `int`s."""
    value = check_sequence(argument, value)
    value = _validation.check_ints(
        argument, value, minimum=minimum, expected=f"integers >= {minimum}"
    )
    return check_sequence(argument, value)  # 8 and np.int64(8) are one value


def check_range(argument, value, low, high, low_open=False, high_open=False):
    ok = (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
        and value[0] <= value[1]
        and (value[0] > low if low_open else value[0] >= low)
        and (value[1] < high if high_open else value[1] <= high)
    )
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected a pair "
            f"(min, max) with min <= max in {interval}. Received: {argument}={value!r}"
        )
    return float(value[0]), float(value[1])
