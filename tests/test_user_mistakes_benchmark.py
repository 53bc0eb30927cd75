"""The user-mistakes benchmark's classifier (benchmarks/user_mistakes.py) on
synthetic cases: no model is built or trained here."""

import argparse
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

import user_mistakes as um  # noqa: E402


@pytest.fixture(autouse=True)
def _keep_the_session(monkeypatch):
    # `run_case` clears Keras' session before each case, which takes seconds
    # late in a test run (every earlier test's graphs); these cases build none.
    monkeypatch.setattr(um.keras.backend, "clear_session", lambda: None)


def outcome(call, expect):
    return um.run_case(um.Case("synthetic", "domain", call, expect)).outcome


def raise_(error):
    def call():
        raise error

    return call


def test_a_keras_mtl_style_error_naming_everything_is_clear():
    error = ValueError("Invalid value received for argument `units`. Expected an integer "
                       ">= 1. Received: units=0")
    expect = um.expect_error("`units`", "units=0")
    result = um.run_case(um.Case("c", "domain", raise_(error), expect))
    assert result.outcome == "clear"
    assert result.error_type == "ValueError" and "units=0" in result.message
    # Names are compared case-insensitively.
    assert outcome(raise_(error), um.expect_error("UNITS")) == "clear"
    stopped = FloatingPointError("Training stopped at epoch 1, step 3")
    assert outcome(raise_(stopped), um.expect_error("step 3")) == "clear"


def test_unclear_errors():
    tf = pytest.importorskip("tensorflow")
    # TensorFlow's own error, even when it happens to name the task.
    tf_error = tf.errors.InvalidArgumentError(None, None, "Received a label value of 3 for 'age'")
    assert outcome(raise_(tf_error), um.expect_error("age")) == "unclear"
    # A clear type, but the message does not name what the case declares.
    vague = ValueError("Invalid dtype: str96")
    assert outcome(raise_(vague), um.expect_error("species")) == "unclear"
    # Types that never explain themselves.
    assert outcome(raise_(KeyError("species")), um.expect_error("species")) == "unclear"
    assert outcome(raise_(AssertionError("species")), um.expect_error("species")) == "unclear"
    # A ValueError raised inside NumPy (LinAlgError subclasses ValueError).
    singular = lambda: np.linalg.inv(np.zeros((2, 2)))  # noqa: E731
    result = um.run_case(um.Case("c", "domain", singular, um.expect_error("Singular")))
    assert result.outcome == "unclear" and "raised inside numpy" in result.message


def test_silent_outcomes():
    # A mistake that raises nothing.
    result = um.run_case(um.Case("s", "domain", lambda: 1, um.expect_error("age")))
    assert result.outcome == "silent" and "no error" in result.message

    # A valid input whose numbers are wrong.
    def check(value):
        assert value == 2, f"expected 2, got {value}"

    result = um.run_case(um.Case("s", "history", lambda: 3, um.expect_ok(check)))
    assert result.outcome == "silent" and "expected 2, got 3" in result.message

    # A warning is not an error.
    def warns():
        import warnings

        warnings.warn("metric val_mae is not available")

    result = um.run_case(um.Case("s", "idioms", warns, um.expect_error("val_mae")))
    assert result.outcome == "silent" and "warned" in result.message


def test_handled_outcomes():
    def check(value):
        assert value == 2

    assert outcome(lambda: 2, um.expect_ok(check)) == "handled"
    assert outcome(lambda: None, um.expect_ok()) == "handled"
    # A mistake whose accepted alternative (the input honoured) holds.
    assert outcome(lambda: 2, um.expect_error("reduction", ok=check)) == "handled"


def test_valid_input_refused():
    refusal = ValueError("Invalid value received for argument `threshold`. Received: 0.7")
    # No error is acceptable for a valid input ...
    assert outcome(raise_(refusal), um.expect_ok()) == "unclear"
    # ... unless the case accepts a clear one naming what it declares.
    assert outcome(raise_(refusal), um.expect_ok(or_error=["threshold"])) == "clear"


def test_argparse_exit_reads_stderr():
    def cli():
        parser = argparse.ArgumentParser(prog="keras-mtl")
        parser.add_argument("--weighting", choices=["equal", "uncertainty"])
        parser.parse_args(["--weighting", "uncertanty"])

    result = um.run_case(um.Case("cli", "naming", cli, um.expect_error("uncertanty")))
    assert result.outcome == "clear"
    assert result.message.startswith("keras-mtl: error:")  # the error line first
    assert outcome(raise_(SystemExit(0)), um.expect_error("x")) == "unclear"


def test_totals_and_markdown():
    results = [
        um.Result("a", "domain", "error", "clear", "ValueError", "`x` | y"),
        um.Result("b", "naming", "error", "unclear", "KeyError", "'b'"),
        um.Result("c", "absent", "error", "silent", "", "[no error]"),
        um.Result("d", "history", "ok", "handled", "", "ok"),
    ]
    counts = um.totals(results)
    assert counts == {"clear": 1, "unclear": 1, "silent": 1, "handled": 1,
                      "clear_percent": 33.3}
    text = um.markdown(results, elapsed=1.0)
    assert "| `a` | domain | error | **clear** | ValueError: `x` \\| y |" in text
    assert "Clear errors: 1 / 3 = 33.3 %" in text


def test_the_catalogue():
    ids = [c.id for c in um.CASES]
    assert len(ids) >= 55 and len(set(ids)) == len(ids)
    assert {c.category for c in um.CASES} == set(um.CATEGORIES)
    for c in um.CASES:
        assert callable(c.call) and c.doc, c.id
        if c.expect.kind == "error":
            assert c.expect.names, c.id
        assert c.expect.kind in ("error", "ok"), c.id
