"""The `keras-mtl` command line: `keras-mtl demo` runs `keras_mtl.demo`.

This module parses the arguments; the demo pipeline (data, models, report)
is `keras_mtl.demo`.
"""

import argparse
import logging
import sys

import keras_mtl
from keras_mtl import backbones
from keras_mtl import demo as demo_lib
from keras_mtl._validation import int_argument
from keras_mtl._validation import non_negative_int_argument
from keras_mtl._validation import positive_int_argument


#: `argparse` type of an image side: an integer >= `keras_mtl.demo.MIN_IMAGE_SIZE`.
image_size_argument = int_argument(demo_lib.MIN_IMAGE_SIZE, "pixels per side")


def weighting_argument(text):
    """`argparse` type of a `keras_mtl.weighting` name (lower-cased)."""
    name = text.lower()
    if keras_mtl.weighting.get_class(name) is None:
        raise argparse.ArgumentTypeError(
            "Expected a keras_mtl.weighting name, one of "
            f"{', '.join(keras_mtl.weighting.names())}. Received: {text!r}"
        )
    return name


def build_parser():
    """The `keras-mtl` argument parser.

    Example:

    >>> args = build_parser().parse_args(["demo", "--quick", "--epochs", "2"])
    >>> args.command, args.quick, args.epochs, args.examples
    ('demo', True, 2, None)
    """
    parser = argparse.ArgumentParser(
        prog="keras-mtl",
        description="Multi-task (multi-output) models for Keras 3.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {keras_mtl.__version__}"
    )
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)

    quick = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in demo_lib.QUICK_DEFAULTS.items())
    demo = commands.add_parser(
        "demo",
        help="train a HydraNet and its single-task baselines on shapes scenes",
        description=(
            "Trains a multi-task model (heads: shape class, size, segmentation, "
            "depth) and one single-task model per task on the embedded shapes "
            "scenes, prints a per-task table with Δm (mean relative change "
            "against the single-task models; negative: multi-task is better), "
            "and writes hydranet.keras, report.md, learning_curves.png, "
            "task_weights.png, gradient_conflict.png and results.json to "
            "--output. The defaults take a few minutes on a 2-core CPU."
        ),
    )
    d = demo_lib.DEMO_DEFAULTS
    demo.add_argument(
        "--output", default=d["output"], metavar="DIR",
        help=f"folder for the model, report and plots (default: {d['output']})",
    )
    demo.add_argument(
        "--epochs", type=positive_int_argument, metavar="N",
        help=f"epochs for every model (default: {d['epochs']})",
    )
    demo.add_argument(
        "--examples", type=positive_int_argument, metavar="N",
        help=f"training scenes (default: {d['examples']})",
    )
    demo.add_argument(
        "--validation-examples", type=positive_int_argument, metavar="N",
        help=f"validation scenes (default: {d['validation_examples']})",
    )
    demo.add_argument(
        "--image-size", type=image_size_argument, metavar="S",
        help=f"image side in pixels, >= {demo_lib.MIN_IMAGE_SIZE} (default: {d['image_size']})",
    )
    demo.add_argument(
        "--batch-size", type=positive_int_argument, default=d["batch_size"], metavar="N",
        help=f"batch size (default: {d['batch_size']})",
    )
    demo.add_argument(
        "--backbone", default=d["backbone"], metavar="NAME",
        help=(
            f"shared trunk: {demo_lib.SMALL_CNN!r} (default), a 6-convolution CNN "
            "(keras_mtl.demo.demo_trunk) that trains from scratch in seconds per epoch on a "
            "CPU, or a keras.applications name such as MobileNetV3Small (random "
            "init: on a 2-core CPU each of the 5 models then takes ~30 s just to "
            "trace, and BatchNorm momentum 0.999 keeps validation metrics poor "
            "for the first thousands of steps)"
        ),
    )
    demo.add_argument(
        "--weighting", type=weighting_argument, default=d["weighting"], metavar="NAME",
        help=(
            "how the multi-task model combines its task losses: a "
            "keras_mtl.weighting name such as equal, uncertainty, dwa, famo, "
            f"pcgrad, mgda (default: {d['weighting']})"
        ),
    )
    demo.add_argument(
        "--seed", type=non_negative_int_argument, default=d["seed"], metavar="N",
        help=f"seed of the data and of every model's initialisation (default: {d['seed']})",
    )
    demo.add_argument(
        "--verbose", type=int, choices=(0, 1, 2), metavar="{0,1,2}",
        help=(
            "Keras fit verbosity: 1 progress bar, 2 one line per epoch, 0 "
            "silent (default: 1 on a terminal, 2 otherwise, e.g. in CI logs)"
        ),
    )
    demo.add_argument(
        "--quick", action="store_true",
        help=f"smoke run: {quick} unless given (for tests)",
    )
    # The subcommand's own parser reports its errors ("keras-mtl demo: error").
    demo.set_defaults(handler=_demo_command, parser=demo)
    return parser


def main(argv=None):
    """Runs `keras-mtl` with `argv` (default: `sys.argv[1:]`); returns 0.

    Argument errors exit through argparse (status 2, message on stderr).
    """
    args = build_parser().parse_args(argv)
    return args.handler(args)


def _demo_command(args):
    settings = {
        key: getattr(args, key)
        for key in ("output", "batch_size", "backbone", "weighting", "seed")
    }
    for key in ("epochs", "examples", "validation_examples", "image_size"):
        given = getattr(args, key)
        if given is None:
            given = demo_lib.QUICK_DEFAULTS[key] if args.quick else demo_lib.DEMO_DEFAULTS[key]
        settings[key] = given
    if settings["backbone"] != demo_lib.SMALL_CNN:
        # Fail before any data or training, with the builder's own message
        # (close names for a typo, the accepted sizes for a too-small image).
        try:
            backbones.resolve_backbone(
                settings["backbone"], (settings["image_size"],) * 2 + (3,)
            )
        except ValueError as error:
            args.parser.error(f"argument --backbone: {error}")
    verbose = args.verbose
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    # Every model builds its own tf.functions, which TensorFlow reports as
    # "excessive retracing"; that is expected here, so keep the log readable.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    demo_lib.run_demo(**settings, quick=args.quick, verbose=verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
