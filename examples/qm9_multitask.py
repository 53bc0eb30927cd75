"""QM9: eleven molecular properties from one graph network, in one `fit`.

The peers' chemistry benchmark (Nash-MTL, FAMO, LibMTL) as a Keras user runs
it: `keras_mtl.datasets.qm9` gives each molecule's atoms and positions and
its 11 properties in the peers' units; `keras_mtl.backbones.schnet` is the
shared trunk; each property is a `Regression` head that standardises its
target with the training split's mean and standard deviation, so the loss
is balanced across properties while predictions, MAEs and a SavedModel stay
in the properties' units (eV, Debye, Bohr³, ...).

    python examples/qm9_multitask.py                       # 5,000 molecules, a few minutes
    python examples/qm9_multitask.py --weighting nash_mtl --molecules 20000
    python examples/qm9_multitask.py --path data/          # CSVs in qm9pack's format

The data come from the `qm9pack` wheel (`pip install "keras_mtl[qm9]"`);
`benchmarks/bench_qm9.py` compares every weighting method with single-task
models and tuned static weights on the same setup.
"""

import argparse
import sys

import keras

import keras_mtl
from keras_mtl.datasets import qm9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", type=int, default=5000, help="training molecules")
    parser.add_argument("--held-out", type=int, default=1000,
                        help="validation and test molecules (of the peers' 10,000 each)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--interactions", type=int, default=3)
    parser.add_argument("--weighting", default="equal", help="a keras_mtl.weighting name")
    parser.add_argument("--path", default=None, help="CSVs in qm9pack's format")
    parser.add_argument("--split-sizes", type=int, default=None,
                        help="validation/test split sizes, for a small --path file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    sizes = None if args.split_sizes is None else {
        "validation": args.split_sizes, "test": args.split_sizes}
    common = {"seed": args.seed, "path": args.path, "split_sizes": sizes}
    statistics = qm9.target_statistics(args.molecules, **common)
    x, y = qm9.arrays("train", args.molecules, **common)
    validation = qm9.arrays("validation", args.held_out, **common)
    test = qm9.arrays("test", args.held_out, **common)

    tasks = [keras_mtl.tasks.Regression(t, normalize=statistics[t]) for t in qm9.TARGETS]
    trunk = keras_mtl.backbones.schnet(num_features=args.features,
                                       num_interactions=args.interactions)
    model = keras_mtl.build_model(trunk, tasks, head_units=(args.features,), name="qm9")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), weighting=args.weighting)
    history = model.fit(
        x, y, validation_data=validation, batch_size=args.batch_size, epochs=args.epochs,
        callbacks=[keras.callbacks.ReduceLROnPlateau("val_loss", factor=0.7, patience=5)],
        verbose=args.verbose,
    )
    logs = model.evaluate(*test, batch_size=256, return_dict=True, verbose=0)
    print(f"\n{args.weighting}: test MAE of {args.held_out} molecules")
    print("| target | unit | test MAE |")
    print("| --- | --- | --- |")
    for target in qm9.TARGETS:
        print(f"| {target} | {qm9.UNITS[target]} | {logs[f'{target}_mae']:.4g} |")
    return history, logs


if __name__ == "__main__":
    main(sys.argv[1:])
