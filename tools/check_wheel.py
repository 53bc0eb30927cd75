"""Builds keras_mtl's wheel and sdist and checks them as a user would meet them.

1. `python -m build`: an sdist and a wheel; `twine check --strict` on both
   (the metadata PyPI would show).
2. A fresh venv with the wheel and TensorFlow's CPU build (pinned by
   constraints/newest.txt): the README's "Ten lines" run there, from an
   empty folder, so nothing is imported from this checkout; then the
   `keras-mtl` command.
3. A fresh venv with the wheel's `[jax]` extra and no TensorFlow: a model is
   built, compiled and fitted under `KERAS_BACKEND=jax`, and a TF-only
   feature says which extra to install.
4. `pip install --dry-run` of the wheel (with its tuner and tfds extras)
   beside the stacks users already have: `tensorflow==2.21.0`,
   `tensorflow==2.20.0`, `keras==3.12.0`. Each resolves, keeps the version
   asked for, and installs no `tensorflow-cpu` next to `tensorflow`.

Run: `make check-wheel` (CI runs it; a few minutes, mostly installs). Exits
non-zero at the first check that fails.
"""

import glob
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONSTRAINTS = os.path.join(ROOT, "constraints", "newest.txt")
# What users already have installed, and what must stay as they have it.
USER_STACKS = ("tensorflow==2.21.0", "tensorflow==2.20.0", "keras==3.12.0")

JAX_SMOKE = """
import sys
import numpy as np
import keras, keras_mtl
tasks = [keras_mtl.tasks.Regression("size"),
         keras_mtl.tasks.BinaryClassification("round")]
model = keras_mtl.build_model(keras_mtl.backbones.small_cnn((16, 16, 3)), tasks,
                              input_shape=(16, 16, 3), head_units=(8,))
model.compile(optimizer="adam", weighting="pcgrad")
x = np.random.rand(32, 16, 16, 3).astype("float32")
y = {"size": np.random.rand(32, 1), "round": np.random.randint(0, 2, (32, 1)).astype("float32")}
history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
assert keras.backend.backend() == "jax", keras.backend.backend()
assert "tensorflow" not in sys.modules, "TensorFlow was imported"
assert np.isfinite(history.history["loss"]).all(), history.history
try:
    keras_mtl.data.interleave
except ImportError as error:
    assert 'pip install "keras_mtl[tensorflow]"' in str(error), error
else:
    raise AssertionError("keras_mtl.data imported without TensorFlow")
print("jax-only install: fit", {k: round(v[-1], 4) for k, v in history.history.items()})
"""


def run(command, **kwargs):
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, check=True, **kwargs)


def readme_ten_lines():
    """The README's "Ten lines" code block."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    match = re.search(r"## Ten lines\s+```python\n(.*?)```", text, re.S)
    if not match:
        raise SystemExit("README.md has no '## Ten lines' python block")
    return match.group(1)


def build(dist):
    run([sys.executable, "-m", "build", "--outdir", dist, ROOT])
    wheels = glob.glob(os.path.join(dist, "*.whl"))
    sdists = glob.glob(os.path.join(dist, "*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        raise SystemExit(f"expected one wheel and one sdist in {dist}: {os.listdir(dist)}")
    run([sys.executable, "-m", "twine", "check", "--strict", wheels[0], sdists[0]])
    return wheels[0]


def venv(path, *requirements):
    run([sys.executable, "-m", "venv", path])
    python = os.path.join(path, "bin", "python")
    run([python, "-m", "pip", "install", "--quiet", *requirements, "-c", CONSTRAINTS])
    return python


def check_ten_lines(wheel, tmp):
    python = venv(os.path.join(tmp, "venv-tf"), wheel, "tensorflow-cpu")
    work = os.path.join(tmp, "work")
    os.makedirs(work)
    script = os.path.join(work, "ten_lines.py")
    with open(script, "w", encoding="utf-8") as f:
        f.write(readme_ten_lines())
    env = dict(os.environ, KERAS_BACKEND="tensorflow", PYTHONPATH="")
    run([python, script], cwd=work, env=env)
    run([python, "-c", "import keras_mtl; assert keras_mtl.__file__.startswith("
         f"{os.path.join(tmp, 'venv-tf')!r}), keras_mtl.__file__"], cwd=work, env=env)
    run([os.path.join(tmp, "venv-tf", "bin", "keras-mtl"), "--help"], cwd=work, env=env,
        stdout=subprocess.DEVNULL)


def check_jax_only(wheel, tmp):
    python = venv(os.path.join(tmp, "venv-jax"), f"{wheel}[jax]")
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH="")
    found = subprocess.run([python, "-c", "import tensorflow"], env=env, capture_output=True)
    if found.returncode == 0:
        raise SystemExit("the [jax] install brought TensorFlow with it")
    run([python, "-c", JAX_SMOKE], cwd=tmp, env=env)


def check_resolution(wheel, tmp):
    for stack in USER_STACKS:
        report = os.path.join(tmp, "report.json")
        # `--ignore-installed`: resolve as in an empty environment with the
        # user's stack, whatever this venv holds.
        run([sys.executable, "-m", "pip", "install", "--quiet", "--dry-run",
             "--ignore-installed", "--report", report, f"{wheel}[tuner,tfds]", stack])
        with open(report, encoding="utf-8") as f:
            installed = {
                item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
                for item in json.load(f)["install"]
            }
        name, version = stack.split("==")
        if installed.get(name) != version:
            raise SystemExit(f"beside {stack}, pip would install {name} {installed.get(name)}")
        if "tensorflow-cpu" in installed:
            raise SystemExit(f"beside {stack}, pip would also install tensorflow-cpu")
        print(f"beside {stack}: resolves; keras {installed.get('keras')}, "
              f"tensorflow {installed.get('tensorflow', '-')}, no tensorflow-cpu", flush=True)


def main():
    with tempfile.TemporaryDirectory(prefix="keras_mtl_wheel_") as tmp:
        wheel = build(os.path.join(tmp, "dist"))
        check_resolution(wheel, tmp)
        check_ten_lines(wheel, tmp)
        check_jax_only(wheel, tmp)
    print("check_wheel: all checks passed")


if __name__ == "__main__":
    main()
