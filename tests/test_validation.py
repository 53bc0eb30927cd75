"""The shared argument checks (`keras_mtl._validation`): what they accept,
what they return, and the Keras-style messages the rest of the package
relies on."""

import argparse

import numpy as np
import pytest

from keras_mtl import _validation as v


def test_check_int_accepts_python_and_numpy_integers():
    assert v.check_int("n", 3) == 3
    value = v.check_int("n", np.int64(2), minimum=2)
    assert value == 2 and type(value) is int
    assert v.check_positive_int("n", 1) == 1


@pytest.mark.parametrize("value", [0, -1, True, 1.0, "2", None])
def test_check_positive_int_refuses(value):
    with pytest.raises(
        ValueError,
        match=rf"Invalid value received for argument `n`. Expected an integer >= 1. "
        rf"Received: n={value!r}",
    ):
        v.check_positive_int("n", value)


def test_check_number_bounds_and_kind():
    assert v.check_number("t", 2) == 2.0
    assert v.check_non_negative("s", 0) == 0.0
    with pytest.raises(ValueError, match=r"`t`. Expected a float > 0. Received: t=0"):
        v.check_number("t", 0, minimum=0, exclusive=True)
    for bad in (float("nan"), float("inf"), -1.0, True, "1"):
        with pytest.raises(ValueError, match=r"`s`. Expected a finite number >= 0"):
            v.check_non_negative("s", bad)


def test_check_fraction_bool_and_choice():
    assert v.check_fraction("a", 1) == 1.0
    with pytest.raises(ValueError, match=r"`a`. Expected a float in \[0, 1\]. Received: a=1.5"):
        v.check_fraction("a", 1.5)
    assert v.check_bool("b", False) is False
    with pytest.raises(ValueError, match=r"`b`. Expected True or False. Received: b=1"):
        v.check_bool("b", 1)
    assert v.check_choice("c", "x", ("x", "y")) == "x"
    with pytest.raises(ValueError, match=r"`c`. Expected one of \('x', 'y'\). Received: c='z'"):
        v.check_choice("c", "z", ("x", "y"))


def test_int_arguments_for_argparse():
    assert v.positive_int_argument("3") == 3
    assert v.non_negative_int_argument("0") == 0
    with pytest.raises(argparse.ArgumentTypeError, match=r"Expected an integer >= 1. Received: '0'"):
        v.positive_int_argument("0")
    size = v.int_argument(32, "pixels per side")
    with pytest.raises(
        argparse.ArgumentTypeError,
        match=r"Expected an integer >= 32 \(pixels per side\). Received: 'big'",
    ):
        size("big")
