"""Argument checks shared across keras_mtl, one copy of each.

Each `check_*` returns the value (normalised: `int`, `float`) or raises a
`ValueError` in Keras' form, naming the argument, what was expected and what
was received:

    Invalid value received for argument `units`. Expected an integer >= 1.
    Received: units=0

The `*_argument` functions are the same checks as `argparse` types, for the
command line (`keras-mtl`) and the examples.

Checks that belong to one concept (a task's name, a dataset's spec) stay in
that concept's module; this module holds those needed in more than one.
"""

import argparse
import math
import numbers


def is_int(value, minimum=0):
    """Whether `value` is an integer (Python or NumPy, not a bool) `>= minimum`."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= minimum


def check_int(argument, value, minimum=0, optional=False):
    """`value` as an `int` if it is an integer (Python or NumPy, not a bool)
    `>= minimum`, else a Keras-style `ValueError`. With `optional`, `None`
    is accepted (and returned) too."""
    if optional and value is None:
        return None
    if not is_int(value, minimum):
        none = "None or " if optional else ""
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected "
            f"{none}an integer >= {minimum}. Received: {argument}={value!r}"
        )
    return int(value)


def check_positive_int(argument, value):
    """`value` as an `int` if it is an integer >= 1, else a `ValueError`."""
    return check_int(argument, value, minimum=1)


def check_ints(argument, values, minimum=1, min_length=1, max_length=None, expected=None):
    """`values`, a sequence (list, tuple, NumPy array, ...) of integers
    (Python or NumPy, not bools) `>= minimum`, as a tuple of `int`s; else a
    Keras-style `ValueError`.

    Its length must be in `[min_length, max_length]` (`None`: no upper
    bound). `expected` words the expectation in the message (by default "a
    non-empty tuple of positive integers" or of "integers >= minimum").

    Example:

    >>> import numpy as np
    >>> check_ints("units", [np.int64(8), 4])
    (8, 4)
    """
    try:
        result = tuple(values)
    except TypeError:
        result = None
    ok = (
        result is not None
        and min_length <= len(result)
        and (max_length is None or len(result) <= max_length)
        and all(is_int(v, minimum) for v in result)
    )
    if not ok:
        if expected is None:
            items = "positive integers" if minimum == 1 else f"integers >= {minimum}"
            expected = f"a {'non-empty ' if min_length else ''}tuple of {items}"
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected "
            f"{expected}. Received: {argument}={values!r}"
        )
    return tuple(int(v) for v in result)


def check_number(argument, value, minimum=None, exclusive=False, kind="float"):
    """`value` as a `float`, or a Keras-style `ValueError`.

    `minimum` is a lower bound (exclusive when `exclusive`); NaN, infinities,
    booleans and non-numbers are refused. `kind` names the expectation in the
    message ("float", "finite number").
    """
    ok = (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and math.isfinite(value)
        and (minimum is None or (value > minimum if exclusive else value >= minimum))
    )
    if not ok:
        bound = "" if minimum is None else f" {'>' if exclusive else '>='} {minimum}"
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected a "
            f"{kind}{bound}. Received: {argument}={value!r}"
        )
    return float(value)


def check_non_negative(argument, value):
    """`value` as a `float` if it is a finite number >= 0 (a scale, a
    strength, a factor), else a Keras-style `ValueError`."""
    return check_number(argument, value, minimum=0, kind="finite number")


def check_fraction(argument, value):
    """`value` as a `float` in [0, 1], or a Keras-style `ValueError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected a float "
            f"in [0, 1]. Received: {argument}={value!r}"
        )
    return float(value)


def check_bool(argument, value):
    """`value` if it is `True` or `False` (not merely truthy), else a
    Keras-style `ValueError`."""
    if not isinstance(value, bool):
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected True "
            f"or False. Received: {argument}={value!r}"
        )
    return value


def check_choice(argument, value, choices):
    """`value` if it is one of the strings `choices`, else a Keras-style
    `ValueError` listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected one of "
            f"{choices}. Received: {argument}={value!r}"
        )
    return value


# --- the same checks for argparse ------------------------------------------------
def int_argument(minimum, unit=""):
    """An `argparse` type: the text as an `int` >= `minimum`.

    Example:

    >>> parser = argparse.ArgumentParser()
    >>> _ = parser.add_argument("--epochs", type=int_argument(1))
    >>> parser.parse_args(["--epochs", "3"]).epochs
    3
    """
    suffix = f" ({unit})" if unit else ""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(
                f"Expected an integer >= {minimum}{suffix}. Received: {text!r}"
            )
        return value

    parse.__name__ = f"integer >= {minimum}"  # What argparse names in its errors.
    return parse


positive_int_argument = int_argument(1)
non_negative_int_argument = int_argument(0)
