"""Tests of `keras_mtl.plots`: a PNG from a fake History, and bad input."""

import builtins

import numpy as np
import pytest

from keras_mtl import plots
from keras_mtl.tasks import Regression

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fake_history(tasks=("age", "gender"), epochs=4):
    history = {"loss": list(np.linspace(3.0, 1.0, epochs)),
               "val_loss": list(np.linspace(3.5, 1.5, epochs))}
    for i, name in enumerate(tasks):
        history[f"{name}_loss"] = list((i + 1) * np.exp(-np.arange(epochs) / 3.0))
        history[f"val_{name}_loss"] = list((i + 1.2) * np.exp(-np.arange(epochs) / 4.0))
        history[f"{name}_mae"] = [0.5] * epochs
    return history


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG_SIGNATURE


def test_writes_png_from_history_dict(tmp_path):
    path = tmp_path / "sub" / "curves.png"
    returned = plots.plot_learning_curves(fake_history(), path)
    assert returned == str(path)
    assert _is_png(path)


def test_accepts_history_object_tasks_and_baselines(tmp_path):
    class History:  # what `fit` returns: the dict is in `.history`
        history = fake_history()

    baselines = {"age": {"loss": [1.1, 0.8, 0.6, 0.5], "val_loss": [1.2, 1.0, 0.9, 0.9]}}
    path = plots.plot_learning_curves(
        History(), tmp_path / "curves.png", tasks=[Regression("age"), "gender"],
        baselines=baselines,
    )
    assert _is_png(path)


def test_one_epoch_history(tmp_path):
    path = plots.plot_learning_curves({"a_loss": [1.0]}, tmp_path / "one.png")
    assert _is_png(path)


def test_task_names_read_from_history():
    assert plots._task_names_from(fake_history(("x", "y_z"))) == ["x", "y_z"]


def test_history_without_task_losses():
    with pytest.raises(ValueError, match="history_or_dict.*<task>_loss"):
        plots.plot_learning_curves({"loss": [1.0]}, "unused.png")


def test_unknown_task():
    with pytest.raises(ValueError, match=r"argument `tasks`.*\['nope'\]"):
        plots.plot_learning_curves(fake_history(), "unused.png", tasks=["age", "nope"])


def test_unknown_baseline():
    with pytest.raises(ValueError, match=r"argument `baselines`.*\['nope'\]"):
        plots.plot_learning_curves(
            fake_history(), "unused.png", baselines={"nope": {"loss": [1.0]}}
        )


def test_not_a_history():
    with pytest.raises(ValueError, match="argument `history_or_dict`"):
        plots.plot_learning_curves([1.0, 2.0], "unused.png")


def test_missing_matplotlib_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r"keras_mtl\[examples\]"):
        plots.plot_learning_curves(fake_history(), "unused.png")
