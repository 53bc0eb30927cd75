"""QM9: 11 molecular properties of 130,831 small organic molecules, offline.

QM9 (Ramakrishnan, Dral, Rupp & von Lilienfeld, "Quantum chemistry structures
and properties of 134 kilo molecules", Scientific Data 1, 140022, 2014)
holds every molecule of up to nine heavy atoms (C, N, O, F) of GDB-17, with
its B3LYP/6-31G(2df,p) geometry and properties. It is the real-data benchmark
of the multi-task papers (Nash-MTL, ICML 2022; FAMO, NeurIPS 2023; LibMTL),
which all use PyTorch Geometric's `QM9` and its 11 targets
`[0, 1, 2, 3, 5, 6, 12, 13, 14, 15, 11]`. `TARGETS` are those, in that order
and in the same units:

| target  | symbol  | what                                   | unit (`UNITS`) |
|---------|---------|----------------------------------------|----------------|
| `mu`    | μ       | dipole moment                          | D (Debye)      |
| `alpha` | α       | isotropic polarizability               | a0³ (Bohr³)    |
| `homo`  | ε_HOMO  | highest occupied orbital energy        | eV             |
| `lumo`  | ε_LUMO  | lowest unoccupied orbital energy       | eV             |
| `r2`    | ⟨R²⟩    | electronic spatial extent              | a0² (Bohr²)    |
| `zpve`  | ZPVE    | zero-point vibrational energy          | eV             |
| `u0`    | U0      | atomization internal energy at 0 K     | eV             |
| `u`     | U       | atomization internal energy at 298.15 K| eV             |
| `h`     | H       | atomization enthalpy at 298.15 K       | eV             |
| `g`     | G       | atomization free energy at 298.15 K    | eV             |
| `cv`    | c_v     | heat capacity at 298.15 K              | cal/(mol·K)    |

Conversions. QM9 gives energies in Hartree; they are multiplied by
`HARTREE_TO_EV = 27.211386246` (CODATA 2018, the factor of PyTorch Geometric's
`torch_geometric/datasets/qm9.py`). U0, U, H and G are *atomization*
energies, as in DimeNet and the papers above: the molecule's energy minus the
energies of its free atoms, `E_atomization = E - Σ_atoms E_atom`, per
quantity, with the atoms' B3LYP/6-31G(2df,p) energies of QM9's documentation
(the "atomref" table: Ramakrishnan et al., figshare,
https://doi.org/10.6084/m9.figshare.1057643, file `atomref.txt`), in Hartree
(`ATOMREF_HARTREE`):

| atom | U0 (0 K)   | U (298.15 K) | H (298.15 K) | G (298.15 K) |
|------|------------|--------------|--------------|--------------|
| H    | -0.500273  | -0.498857    | -0.497912    | -0.510927    |
| C    | -37.846772 | -37.845355   | -37.844411   | -37.861317   |
| N    | -54.583861 | -54.582445   | -54.581501   | -54.598897   |
| O    | -75.064579 | -75.063163   | -75.062219   | -75.079532   |
| F    | -99.718730 | -99.717314   | -99.716370   | -99.733544   |

(PyTorch Geometric's `atomrefs` are the same values times 27.211386246, e.g.
U0 of H: -13.61312172 eV. Its targets 12-15 come from MoleculeNet's
`u0_atom` ... columns in kcal/mol times 0.04336414; the two routes agree to
about 1e-6 relative.) For methane, U0 = -40.47893 Ha gives
`(-40.47893 - (-37.846772 - 4 × 0.500273)) × 27.211386246 = -17.172 eV`.
The peers report the MAE of `REPORTED_IN_MEV` in meV (× 1000).

Data. The `qm9pack` wheel (MIT; by QM9's first author; `pip install
"keras_mtl[qm9]"`) ships QM9 as `qm9pack/data/qm9_part1.csv` ...
`qm9_part3.csv`: one row per molecule with its QM9 id (`Index`), the atoms
(`Elements`, `N_atoms`), the coordinates in Å (`XYZ_Ang`) and the properties
in QM9's units (`TARGET_COLUMNS`). It holds 130,831 molecules: `Index` 1 to
133,885 less 3,054, the number of molecules QM9's authors list as
"uncharacterized" (their geometry failed the consistency check; the
curatedQM9 page of the same group counts 133,885 - 3,054 = 130,831), which
PyTorch Geometric's `QM9` also removes, keeping 130,831. All of qm9pack's
molecules are kept (the ids of the 3,054 were not compared one by one with
QM9's `uncharacterized.txt`). The files are read with the standard `csv`
module (not qm9pack's own pandas reader, and without importing `qm9pack`);
`path=` reads a folder of CSVs in the same format instead (its
`qm9_part*.csv`), or one such file.

Inputs. Each molecule is padded to `max_atoms` (29, QM9's largest):
`{"atoms": int32 (max_atoms,) atomic numbers (1 H, 6 C, 7 N, 8 O, 9 F),
0 for padding; "positions": float32 (max_atoms, 3) in Å as in QM9 (not
centred), 0 where padded}`. Labels are `{target: float32 (1,)}`, the shape
`keras_mtl.tasks.Regression` expects per example.

Splits, as the peers' code (Nash-MTL's `experiments/quantum_chemistry/
trainer.py`, which FAMO reuses): one permutation of all molecules drawn from
`seed`; its first 10,000 are `"test"`, the next 10,000 `"validation"`, the
remaining 110,831 `"train"` (`SPLIT_SIZES`; `split_sizes=` changes the two
held-out sizes, for small files). `num_molecules` keeps the first
`num_molecules` of a split in that permuted order, so a subset is a random
sample of its split, and a smaller subset is a prefix of a larger one.

Standardisation. `load` returns targets in their units (above), and
`target_statistics` returns `{target: (mean, std)}` fitted on the training
split (the same `num_molecules` subset as `load("train", num_molecules)`),
to pass to `keras_mtl.tasks.Regression(target, normalize=statistics[target])`:
the loss is then computed on standardised values while predictions, metrics
(MAE) and SavedModel outputs stay in the target's units, and the statistics
are stored in the task's config (so in `.keras` files). That is why `load`
does not standardise by default. For models whose heads do not standardise,
`load(..., standardize=statistics)` gives `(y - mean) / std` labels, and
`unstandardize(predictions, statistics)` maps predictions back to the units.
"""

import csv
import dataclasses
import functools
import glob
import importlib.util
import math
import numbers
import os
import re

import numpy as np

from keras_mtl._optional import require
from keras_mtl._validation import check_int

TARGETS = ("mu", "alpha", "homo", "lumo", "r2", "zpve", "u0", "u", "h", "g", "cv")
SYMBOLS = {
    "mu": "μ", "alpha": "α", "homo": "ε_HOMO", "lumo": "ε_LUMO", "r2": "⟨R²⟩",
    "zpve": "ZPVE", "u0": "U0", "u": "U", "h": "H", "g": "G", "cv": "c_v",
}
UNITS = {
    "mu": "D", "alpha": "a0^3", "homo": "eV", "lumo": "eV", "r2": "a0^2",
    "zpve": "eV", "u0": "eV", "u": "eV", "h": "eV", "g": "eV", "cv": "cal/(mol K)",
}
#: PyTorch Geometric's `QM9.y` column of each target.
PYG_INDICES = dict(zip(TARGETS, (0, 1, 2, 3, 5, 6, 12, 13, 14, 15, 11)))
#: Targets whose MAE the peers' tables give in meV (1000 × the eV value).
REPORTED_IN_MEV = ("homo", "lumo", "zpve", "u0", "u", "h", "g")
#: The qm9pack column each target is read from (in QM9's own units).
TARGET_COLUMNS = {
    "mu": "Dipole_debye",
    "alpha": "Polarizability_bohr3",
    "homo": "HOMO_au",
    "lumo": "LUMO_au",
    "r2": "R2_bohr2",
    "zpve": "ZPVE_au",
    "u0": "InternalEnergy_0K_au",
    "u": "InternalEnergy_298K_au",
    "h": "Enthalphy_298K_au",  # sic: qm9pack's spelling
    "g": "GibbsFreeEnergy_298K_au",
    "cv": "Heatcapacity_Cv_cal_mol_K",
}
#: The qm9pack columns that describe the molecule (the others are not read).
STRUCTURE_COLUMNS = ("Index", "N_atoms", "Elements", "XYZ_Ang")

HARTREE_TO_EV = 27.211386246
ATOMIC_NUMBERS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
#: Free atoms' energies in Hartree (QM9's atomref table, see the docstring).
ATOMREF_HARTREE = {
    "u0": {"H": -0.500273, "C": -37.846772, "N": -54.583861, "O": -75.064579, "F": -99.718730},
    "u": {"H": -0.498857, "C": -37.845355, "N": -54.582445, "O": -75.063163, "F": -99.717314},
    "h": {"H": -0.497912, "C": -37.844411, "N": -54.581501, "O": -75.062219, "F": -99.716370},
    "g": {"H": -0.510927, "C": -37.861317, "N": -54.598897, "O": -75.079532, "F": -99.733544},
}
_HARTREE_TARGETS = ("homo", "lumo", "zpve", "u0", "u", "h", "g")

MAX_ATOMS = 29
NUM_MOLECULES = 130_831
SPLITS = ("train", "validation", "test")
SPLIT_SIZES = {"validation": 10_000, "test": 10_000}
_PACKAGE = "qm9pack"


# --- arguments ---------------------------------------------------------------


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(
            "Invalid value received for argument `split`. "
            f"Expected one of {SPLITS}. Received: split={split!r}"
        )
    return split


def _check_targets(targets):
    ok = isinstance(targets, (list, tuple)) and len(targets) > 0
    unknown = [t for t in targets if t not in TARGETS] if ok else []
    if not ok or unknown or len(set(targets)) != len(targets):
        raise ValueError(
            "Invalid value received for argument `targets`. Expected a non-empty "
            f"list or tuple of distinct names from {TARGETS}. Received: "
            f"targets={targets!r}" + (f" (unknown: {unknown})" if unknown else "")
        )
    return tuple(targets)


def _check_split_sizes(split_sizes):
    if split_sizes is None:
        return dict(SPLIT_SIZES)
    ok = isinstance(split_sizes, dict) and set(split_sizes) == set(SPLIT_SIZES)
    if ok:
        ok = all(
            not isinstance(v, bool) and isinstance(v, numbers.Integral) and v >= 1
            for v in split_sizes.values()
        )
    if not ok:
        raise ValueError(
            "Invalid value received for argument `split_sizes`. Expected None or a "
            "dict {'validation': n, 'test': n} of integers >= 1 (the training split "
            f"is the rest). Received: split_sizes={split_sizes!r}"
        )
    return {k: int(v) for k, v in split_sizes.items()}


def _check_statistics(argument, statistics, targets):
    ok = isinstance(statistics, dict) and all(t in statistics for t in targets)
    if ok:
        for t in targets:
            pair = statistics[t]
            ok = ok and isinstance(pair, (list, tuple)) and len(pair) == 2 and all(
                not isinstance(v, bool) and isinstance(v, numbers.Real) and math.isfinite(v)
                for v in pair
            ) and pair[1] > 0
    if not ok:
        raise ValueError(
            f"Invalid value received for argument `{argument}`. Expected a dict "
            "{target: (mean, std)} with a finite mean and std > 0 for each of "
            f"{targets} (from `target_statistics`). Received: {argument}={statistics!r}"
        )
    return {t: (float(statistics[t][0]), float(statistics[t][1])) for t in targets}


# --- reading -----------------------------------------------------------------


def _default_folder():
    # Located, not imported: `import qm9pack` imports pandas and setuptools'
    # pkg_resources, neither of which reading its CSVs needs.
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"keras_mtl.datasets.qm9 needs the {_PACKAGE!r} package (QM9's CSV "
            'files), which is not installed. Install it with: pip install '
            '"keras_mtl[qm9]" (or pass `path=` a folder of CSVs in its format).'
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def _files(path):
    """The CSV files `path` (None, a folder or a file) stands for."""
    if path is None:
        path = _default_folder()
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if isinstance(path, str) and os.path.isfile(path):
        return (os.path.abspath(path),)
    files = []
    if isinstance(path, str) and os.path.isdir(path):
        files = glob.glob(os.path.join(glob.escape(path), "qm9_part*.csv"))
    if not files:
        raise ValueError(
            "Invalid value received for argument `path`. Expected None (qm9pack's "
            "data), a CSV file or a folder holding qm9_part*.csv files in "
            f"qm9pack's format. Received: path={path!r}"
        )

    def part(name):
        digits = re.findall(r"\d+", os.path.basename(name))
        return (int(digits[-1]) if digits else 0, name)

    return tuple(os.path.abspath(f) for f in sorted(files, key=part))


@dataclasses.dataclass(frozen=True)
class _Table:
    """Every molecule of some CSV files, sorted by QM9 id, atoms concatenated."""

    ids: np.ndarray          # int64 (N,): QM9's `Index`
    offsets: np.ndarray      # int64 (N + 1,): molecule i's atoms are [o[i], o[i+1])
    numbers: np.ndarray      # int32 (total atoms,)
    positions: np.ndarray    # float32 (total atoms, 3), Å
    values: dict             # {target: float64 (N,)} in `UNITS`


def _read(path):
    files = _files(path)
    # Keyed by size and time of change too: a rewritten file is read again.
    key = tuple((f, os.path.getsize(f), os.path.getmtime(f)) for f in files)
    return _read_files(key)


@functools.lru_cache(maxsize=2)
def _read_files(key):
    ids, counts, numbers_, coordinates = [], [], [], []
    raw = {t: [] for t in TARGETS}
    for filename, _, _ in key:
        with open(filename, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [
                c for c in STRUCTURE_COLUMNS + tuple(TARGET_COLUMNS.values())
                if c not in (reader.fieldnames or ())
            ]
            if missing:
                raise ValueError(
                    f"Invalid QM9 file {filename!r}: expected qm9pack's columns, "
                    f"missing {missing}."
                )
            for row in reader:
                where = f"{filename!r}, line {reader.line_num}"
                try:
                    ids.append(int(row["Index"]))
                    count = int(row["N_atoms"])
                    elements = [
                        e.strip().strip("'\"") for e in row["Elements"].strip()[1:-1].split(",")
                    ]
                    xyz = row["XYZ_Ang"].replace("[", "").replace("]", "").split(",")
                    for t, column in TARGET_COLUMNS.items():
                        raw[t].append(float(row[column]))
                except (TypeError, ValueError) as error:
                    raise ValueError(f"Invalid QM9 row at {where}: {error}") from None
                unknown = [e for e in elements if e not in ATOMIC_NUMBERS]
                if unknown or len(elements) != count or len(xyz) != 3 * count:
                    raise ValueError(
                        f"Invalid QM9 row at {where}: N_atoms={count}, "
                        f"{len(elements)} elements, {len(xyz)} coordinates"
                        + (f", unknown elements {unknown}" if unknown else "")
                        + f" (expected elements among {tuple(ATOMIC_NUMBERS)})."
                    )
                counts.append(count)
                numbers_.extend(ATOMIC_NUMBERS[e] for e in elements)
                coordinates.extend(xyz)
    if not ids:
        raise ValueError(f"Invalid QM9 files {[k[0] for k in key]}: no molecule.")
    try:
        positions = np.asarray(coordinates, dtype=np.float64).reshape(-1, 3)
    except ValueError as error:
        raise ValueError(f"Invalid QM9 coordinates in {[k[0] for k in key]}: {error}") from None

    ids = np.asarray(ids, np.int64)
    counts = np.asarray(counts, np.int64)
    numbers_ = np.asarray(numbers_, np.int32)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    values = {t: np.asarray(v, np.float64) for t, v in raw.items()}

    # Atomization: E - sum of the free atoms' energies (Hartree), per quantity.
    molecule = np.repeat(np.arange(len(ids)), counts)
    for target, reference in ATOMREF_HARTREE.items():
        per_atom = np.zeros(max(ATOMIC_NUMBERS.values()) + 1)
        for element, energy in reference.items():
            per_atom[ATOMIC_NUMBERS[element]] = energy
        values[target] = values[target] - np.bincount(
            molecule, weights=per_atom[numbers_], minlength=len(ids)
        )
    for target in _HARTREE_TARGETS:
        values[target] = values[target] * HARTREE_TO_EV

    # Sorted by QM9 id: the split does not depend on how rows fill the files.
    order = np.argsort(ids, kind="stable")
    if np.any(np.diff(ids[order]) == 0):
        duplicates = np.unique(ids[order][1:][np.diff(ids[order]) == 0])
        raise ValueError(
            f"Invalid QM9 files {[k[0] for k in key]}: molecule Index repeated: "
            f"{duplicates[:5].tolist()}."
        )
    sorted_offsets = np.concatenate([[0], np.cumsum(counts[order])])
    # Atom j of sorted molecule i moves from offsets[order[i]] + j.
    atom_order = np.arange(offsets[-1]) + np.repeat(
        offsets[:-1][order] - sorted_offsets[:-1], counts[order]
    )
    return _Table(
        ids=ids[order],
        offsets=sorted_offsets,
        numbers=numbers_[atom_order],
        positions=positions[atom_order].astype(np.float32),
        values={t: v[order] for t, v in values.items()},
    )


def _split_rows(table, split, seed, split_sizes, num_molecules):
    """Rows of `table` in `split`, in the permuted order, cut to `num_molecules`."""
    total = len(table.ids)
    num_test, num_validation = split_sizes["test"], split_sizes["validation"]
    if num_test + num_validation >= total:
        raise ValueError(
            "Invalid value received for argument `split_sizes`. Expected sizes that "
            f"leave molecules for training: the data hold {total} molecule(s). "
            f"Received: split_sizes={split_sizes!r}"
        )
    order = np.random.default_rng(seed).permutation(total)
    bounds = {
        "test": (0, num_test),
        "validation": (num_test, num_test + num_validation),
        "train": (num_test + num_validation, total),
    }
    start, stop = bounds[split]
    rows = order[start:stop]
    if num_molecules is not None:
        if num_molecules > len(rows):
            raise ValueError(
                "Invalid value received for argument `num_molecules`. Expected None "
                f"or at most the {len(rows)} molecules of split {split!r}. "
                f"Received: num_molecules={num_molecules}"
            )
        rows = rows[:num_molecules]
    return rows


# --- public ------------------------------------------------------------------


def split_indices(split="train", seed=0, *, path=None, split_sizes=None):
    """QM9 ids (the `Index` column, 1 to 133,885) of a split, in its order.

    Args:
        split: One of `"train"`, `"validation"`, `"test"`.
        seed: Non-negative integer fixing the permutation, hence the split.
        path: None for qm9pack's data, or a CSV file or folder (see `load`).
        split_sizes: None for `SPLIT_SIZES`, or `{"validation": n, "test": n}`.

    Returns:
        An int64 numpy array; `load(split, num_molecules, seed)` yields the
        molecules of its first `num_molecules` entries, in that order.
    """
    _check_split(split)
    seed = check_int("seed", seed, minimum=0)
    split_sizes = _check_split_sizes(split_sizes)
    table = _read(path)
    return table.ids[_split_rows(table, split, seed, split_sizes, None)]


def arrays(
    split="train",
    num_molecules=None,
    seed=0,
    *,
    targets=TARGETS,
    standardize=None,
    max_atoms=MAX_ATOMS,
    path=None,
    split_sizes=None,
):
    """The molecules of a split as numpy arrays (what `load` wraps).

    Takes the arguments of `load`, which describes them.

    Returns:
        `(inputs, labels)`: `inputs = {"atoms": int32 (n, max_atoms),
        "positions": float32 (n, max_atoms, 3)}` and `labels = {target:
        float32 (n, 1)}`.
    """
    _check_split(split)
    num_molecules = check_int("num_molecules", num_molecules, minimum=1, optional=True)
    seed = check_int("seed", seed, minimum=0)
    targets = _check_targets(targets)
    max_atoms = check_int("max_atoms", max_atoms, minimum=1)
    split_sizes = _check_split_sizes(split_sizes)
    if standardize is not None:
        standardize = _check_statistics("standardize", standardize, targets)

    table = _read(path)
    rows = _split_rows(table, split, seed, split_sizes, num_molecules)
    starts, counts = table.offsets[rows], np.diff(table.offsets)[rows]
    if len(rows) and counts.max() > max_atoms:
        raise ValueError(
            "Invalid value received for argument `max_atoms`. Expected at least the "
            f"largest molecule's atom count, {int(counts.max())} (QM9's largest has "
            f"{MAX_ATOMS}). Received: max_atoms={max_atoms}"
        )
    atoms = np.zeros((len(rows), max_atoms), np.int32)
    positions = np.zeros((len(rows), max_atoms, 3), np.float32)
    slot = np.arange(max_atoms)
    present = slot[None, :] < counts[:, None]
    source = (starts[:, None] + slot[None, :])[present]
    atoms[present] = table.numbers[source]
    positions[present] = table.positions[source]

    labels = {}
    for target in targets:
        values = table.values[target][rows]
        if standardize is not None:
            mean, std = standardize[target]
            values = (values - mean) / std
        labels[target] = values.astype(np.float32).reshape(-1, 1)
    return {"atoms": atoms, "positions": positions}, labels


def load(
    split="train",
    num_molecules=None,
    seed=0,
    *,
    targets=TARGETS,
    standardize=None,
    max_atoms=MAX_ATOMS,
    path=None,
    split_sizes=None,
):
    """Loads a QM9 split as an unbatched `tf.data.Dataset`.

    The molecules come in the split's permuted order (already random);
    reshuffle each epoch yourself (`ds.shuffle(...)`) and batch
    (`ds.batch(...)`). The files are parsed once per process (a few seconds
    for the whole of qm9pack) and kept in memory.

    Args:
        split: One of `"train"`, `"validation"`, `"test"`.
        num_molecules: None for the whole split, or an integer >= 1: the
            first `num_molecules` molecules of the split's random order.
        seed: Non-negative integer fixing the permutation, hence the split
            and the subset.
        targets: Names from `TARGETS` to label with (all by default).
        standardize: None for labels in `UNITS`, or `{target: (mean, std)}`
            (from `target_statistics`) for `(y - mean) / std` labels.
        max_atoms: Atoms per molecule after padding, at least the largest
            molecule loaded (29 in QM9).
        path: None for qm9pack's data (`pip install "keras_mtl[qm9]"`), or
            a CSV file, or a folder of `qm9_part*.csv` files, in qm9pack's
            format (the columns `STRUCTURE_COLUMNS` and `TARGET_COLUMNS` are
            read; others are ignored).
        split_sizes: None for the peers' `SPLIT_SIZES` (10,000 validation,
            10,000 test, the rest training), or `{"validation": n, "test":
            n}` for smaller files.

    Returns:
        A `tf.data.Dataset` of `({"atoms": int32 (max_atoms,), "positions":
        float32 (max_atoms, 3)}, {target: float32 (1,)})`.

    Raises:
        ImportError: without `path` when qm9pack is not installed.
        ValueError: for an invalid argument or file; the message names it.

    Example:

    >>> import csv, os, tempfile
    >>> molecules = [  # QM9 molecules 1 to 3 (coordinates rounded)
    ...     (1, 5, "['C','H','H','H','H']", "[[-0.0127,1.0858,0.008],"
    ...      "[0.0022,-0.006,0.002],[1.0117,1.4638,0.0003],"
    ...      "[-0.5408,1.4475,-0.8766],[-0.5238,1.4379,0.9064]]",
    ...      0.0, 13.21, -0.3877, 0.1171, 35.3641, 0.044749,
    ...      -40.47893, -40.476062, -40.475117, -40.498597, 6.469),
    ...     (2, 4, "['N','H','H','H']", "[[-0.0404,1.0241,0.0626],"
    ...      "[0.0173,0.0125,-0.0274],[0.9158,1.3587,-0.0288],"
    ...      "[-0.5203,1.3435,-0.7755]]",
    ...      1.6256, 9.46, -0.257, 0.0829, 26.1563, 0.034358,
    ...      -56.525887, -56.523026, -56.522082, -56.544961, 6.316),
    ...     (3, 3, "['O','H','H']", "[[-0.0344,0.9775,0.0076],"
    ...      "[0.0648,0.0206,0.0015],[0.8718,1.3008,0.0007]]",
    ...      1.8511, 6.31, -0.2928, 0.0687, 19.0002, 0.021375,
    ...      -76.404702, -76.401867, -76.400922, -76.422349, 6.002)]
    >>> sizes = {"validation": 1, "test": 1}
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with open(os.path.join(folder, "qm9_part1.csv"), "w", newline="") as f:
    ...         writer = csv.writer(f)
    ...         _ = writer.writerow(STRUCTURE_COLUMNS + tuple(TARGET_COLUMNS.values()))
    ...         writer.writerows(molecules)
    ...     ds = load("train", path=folder, split_sizes=sizes, targets=["homo", "u0"])
    ...     statistics = target_statistics(path=folder, split_sizes=sizes)
    >>> inputs, labels = next(iter(ds))
    >>> inputs["atoms"].shape, inputs["positions"].shape, labels["u0"].shape
    (TensorShape([29]), TensorShape([29, 3]), TensorShape([1]))
    >>> sorted(statistics) == sorted(TARGETS)
    True
    >>> import keras_mtl
    >>> tasks = [keras_mtl.tasks.Regression(t, loss="mae", normalize=statistics[t])
    ...          for t in TARGETS]
    """
    inputs, labels = arrays(
        split, num_molecules, seed, targets=targets, standardize=standardize,
        max_atoms=max_atoms, path=path, split_sizes=split_sizes,
    )
    # Imported here: `keras_mtl.datasets` stays light.
    tf = require("tensorflow", "qm9.load (a tf.data dataset)")
    return tf.data.Dataset.from_tensor_slices((inputs, labels))


def target_statistics(num_molecules=None, seed=0, *, targets=TARGETS, path=None,
                      split_sizes=None):
    """`{target: (mean, std)}` of the training split, in `UNITS`.

    Fitted on the molecules of `load("train", num_molecules, seed)` only
    (population std; a target with std 0 gets 1), for
    `keras_mtl.tasks.Regression(target, normalize=statistics[target])` or
    `load(..., standardize=statistics)` on every split.

    Args:
        num_molecules: None, or the training subset size used with `load`.
        seed: The seed used with `load`.
        targets: Names from `TARGETS`.
        path: As in `load`.
        split_sizes: As in `load`.

    Returns:
        A dict of `(mean, std)` Python floats.
    """
    num_molecules = check_int("num_molecules", num_molecules, minimum=1, optional=True)
    seed = check_int("seed", seed, minimum=0)
    targets = _check_targets(targets)
    split_sizes = _check_split_sizes(split_sizes)
    table = _read(path)
    rows = _split_rows(table, "train", seed, split_sizes, num_molecules)
    statistics = {}
    for target in targets:
        values = table.values[target][rows]  # float64, in UNITS
        std = float(values.std())
        statistics[target] = (float(values.mean()), std if std > 0 else 1.0)
    return statistics


def unstandardize(labels, statistics):
    """Maps standardised values back to `UNITS`: `value * std + mean`.

    Args:
        labels: `{target: array}`, e.g. predictions of heads trained on
            `load(..., standardize=statistics)` labels.
        statistics: `{target: (mean, std)}` from `target_statistics`.

    Returns:
        `{target: float32 numpy array}` in the target's units.

    Example:

    >>> unstandardize({"homo": [0.0, 1.0]}, {"homo": (-6.5, 0.6)})["homo"]
    array([-6.5, -5.9], dtype=float32)
    """
    statistics = _check_statistics("statistics", statistics, tuple(labels))
    return {
        t: (np.asarray(v, np.float64) * statistics[t][1] + statistics[t][0]).astype(np.float32)
        for t, v in labels.items()
    }
