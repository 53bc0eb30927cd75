"""keras_mtl.datasets.qm9 on CSV files written here in qm9pack's format:
targets, units (hand-computed from QM9's values and atomrefs), padding,
splits, standardisation, errors. Nothing needs qm9pack or the network,
except the one `slow` test on the real data (skipped without qm9pack)."""

import os
import sys

import numpy as np
import pytest

from keras_mtl.datasets import qm9

HEADER = (
    'XYZ_file,Index,SMILES,InChi,N_atoms,Stoichiometry,Elements,XYZ_Ang,Mulliken_pop,Harmonic_Freq'
    '_cmi,RotA_GHz,RotB_GHz,RotC_GHz,Dipole_debye,Polarizability_bohr3,HOMO_au,LUMO_au,HOMO_LUMO_g'
    'ap_au,R2_bohr2,ZPVE_au,InternalEnergy_0K_au,InternalEnergy_298K_au,Enthalphy_298K_au,GibbsFre'
    'eEnergy_298K_au,Heatcapacity_Cv_cal_mol_K'
)
# Real rows of qm9pack 1.0.3's qm9_part1.csv, verbatim (QM9 molecules 1-6 and 184).
ROWS = {
    1: (  # CH4
        '"dsgdb9nsd_000001.xyz",1,"C","InChI=1S/CH4/h1H4",5,"[4,1,0,0,0]","[\'C\',\'H\',\'H\',\'H'
        '\',\'H\']","[[-0.0126981359,1.0858041578,0.0080009958],[0.002150416,-0.0060313176,0.00197'
        '61204],[1.0117308433,1.4637511618,0.0002765748],[-0.540815069,1.4475266138,-0.8766437152]'
        ',[-0.5238136345,1.4379326443,0.9063972942]]","[-0.535689,0.133921,0.133922,0.133923,0.133'
        '923]","[1341.307,1341.3284,1341.365,1562.6731,1562.7453,3038.3205,3151.6034,3151.6788,315'
        '1.7078]",157.7118,157.70997,157.70699,0.,13.21,-0.3877,0.1171,0.5048,35.3641,0.044749,-40'
        '.47893,-40.476062,-40.475117,-40.498597,6.469'
    ),
    2: (  # NH3
        '"dsgdb9nsd_000002.xyz",2,"N","InChI=1S/H3N/h1H3",4,"[3,0,1,0,0]","[\'N\',\'H\',\'H\',\'H'
        '\']","[[-0.0404260543,1.0241077531,0.0625637998],[0.0172574639,0.0125452063,-0.0273771593'
        '],[0.9157893661,1.3587451948,-0.0287577581],[-0.5202777357,1.3435321258,-0.7755426124]]",'
        '"[-0.707143,0.235712,0.235712,0.23572]","[1103.8733,1684.1158,1684.3072,3458.7145,3575.24'
        '14,3575.3343]",293.60975,293.54111,191.39397,1.6256,9.46,-0.257,0.0829,0.3399,26.1563,0.0'
        '34358,-56.525887,-56.523026,-56.522082,-56.544961,6.316'
    ),
    3: (  # H2O
        '"dsgdb9nsd_000003.xyz",3,"O","InChI=1S/H2O/h1H2",3,"[2,0,0,1,0]","[\'O\',\'H\',\'H\']","['
        '[-0.0343604951,0.9775395708,0.0076015923],[0.0647664923,0.0205721989,0.0015346341],[0.871'
        '7903737,1.3007924048,0.0006931336]]","[-0.589706,0.294853,0.294853]","[1671.4222,3803.630'
        '5,3907.698]",799.58812,437.90386,282.94545,1.8511,6.31,-0.2928,0.0687,0.3615,19.0002,0.02'
        '1375,-76.404702,-76.401867,-76.400922,-76.422349,6.002'
    ),
    4: (  # C2H2
        '"dsgdb9nsd_000004.xyz",4,"C#C","InChI=1S/C2H2/c1-2/h1-2H",4,"[2,2,0,0,0]","[\'C\',\'C\','
        '\'H\',\'H\']","[[0.5995394918,0.,1.],[-0.5995394918,0.,1.],[-1.6616385861,0.,1.],[1.66163'
        '85861,0.,1.]]","[-0.207019,-0.207019,0.207019,0.207019]","[549.7648,549.7648,795.2713,795'
        '.2713,2078.1131,3455.8096,3557.8599]",0.,35.6100361,35.6100361,0.,16.28,-0.2845,0.0506,0.'
        '3351,59.5248,0.026841,-77.308427,-77.305527,-77.304583,-77.327429,8.574'
    ),
    5: (  # HCN
        '"dsgdb9nsd_000005.xyz",5,"C#N","InChI=1S/CHN/c1-2/h1H",3,"[1,1,1,0,0]","[\'C\',\'N\',\'H'
        '\']","[[-0.0133239314,1.1324657151,0.0082758861],[0.0023107217,-0.0191585871,0.0019287305'
        '],[-0.0278026991,2.1989492963,0.0141537903]]","[-0.049656,-0.188473,0.238128]","[799.0101'
        ',799.0101,2198.4393,3490.3686]",0.,44.593883,44.593883,2.8937,12.99,-0.3604,0.0191,0.3796'
        ',48.7476,0.016601,-93.411888,-93.40937,-93.408425,-93.431246,6.278'
    ),
    6: (  # H2CO
        '"dsgdb9nsd_000006.xyz",6,"C=O","InChI=1S/CH2O/c1-2/h1H2",4,"[2,1,0,1,0]","[\'C\',\'O\',\''
        'H\',\'H\']","[[-0.0139776956,1.1802114286,0.0077524981],[0.0023139861,-0.0196636557,0.002'
        '1610727],[0.9149602868,1.789511172,0.0039565555],[-0.9591097173,1.7640179751,0.0171828436'
        ']]","[-0.031232,-0.165864,0.098548,0.098548]","[1201.9838,1272.5136,1544.4691,1846.4364,2'
        '882.3231,2929.819]",285.48839,38.9823,34.29892,2.1089,14.18,-0.267,-0.0406,0.2263,59.9891'
        ',0.026603,-114.483613,-114.480746,-114.479802,-114.505268,6.413'
    ),
    184: (  # CF4
        '"dsgdb9nsd_000184.xyz",184,"FC(F)(F)F","InChI=1S/CF4/c2-1(3,4)5",5,"[0,1,0,0,4]","[\'F\','
        '\'C\',\'F\',\'F\',\'F\']","[[0.0010921821,0.0735451051,0.0024996288],[-0.0168887554,1.394'
        '7684349,0.009692655],[1.2227713731,1.8522134169,0.0003138912],[-0.6559701536,1.8325027456'
        ',-1.0609125843],[-0.6354026161,1.8208575876,1.0969063093]]","[-0.063897,0.255845,-0.06393'
        '8,-0.064034,-0.063976]","[429.729,430.4483,625.9373,626.1957,626.5807,914.9479,1290.7011,'
        '1290.8863,1291.31]",5.71326,5.71279,5.71267,0.0003,15.93,-0.4286,0.1935,0.6221,279.3208,0'
        '.017147,-437.484875,-437.480956,-437.480011,-437.512059,12.639'
    ),
}

HARTREE_TO_EV = 27.211386246
# QM9's atomref table (figshare 1057643), Hartree: U0, U, H, G per atom.
ATOMREF = {
    "H": (-0.500273, -0.498857, -0.497912, -0.510927),
    "C": (-37.846772, -37.845355, -37.844411, -37.861317),
    "N": (-54.583861, -54.582445, -54.581501, -54.598897),
    "O": (-75.064579, -75.063163, -75.062219, -75.079532),
    "F": (-99.718730, -99.717314, -99.716370, -99.733544),
}
SMALL = {"validation": 2, "test": 1}  # 7 molecules: 4 train, 2 validation, 1 test


def write(folder, parts=((1, 2, 3, 4, 5, 6, 184),), name="qm9_part{}.csv"):
    """Writes ROWS into qm9pack-style part files; returns the folder."""
    os.makedirs(folder, exist_ok=True)
    for number, ids in enumerate(parts, start=1):
        with open(os.path.join(folder, name.format(number)), "w", encoding="utf-8") as f:
            f.write(HEADER + "\n" + "".join(ROWS[i] + "\n" for i in ids))
    return str(folder)


@pytest.fixture
def folder(tmp_path):
    # Two parts, rows out of order, and qm9pack's polarizability file (not read).
    path = write(tmp_path / "data", parts=((3, 184, 1), (6, 2, 5, 4)))
    with open(os.path.join(path, "qm9_polarizability.csv"), "w") as f:
        f.write('XYZ_file,A_xx,A_xy,A_yy,A_xz,A_yz,A_zz\n'
                '"dsgdb9nsd_000001.xyz",13.211,0.000,13.211,0.000,0.000,13.211\n')
    return path


def by_id(path, **kwargs):
    """{QM9 id: (atoms, positions, {target: value})} over the three splits."""
    found = {}
    for split in qm9.SPLITS:
        ids = qm9.split_indices(split, path=path, split_sizes=SMALL)
        inputs, labels = qm9.arrays(split, path=path, split_sizes=SMALL, **kwargs)
        for k, i in enumerate(ids):
            found[int(i)] = (inputs["atoms"][k], inputs["positions"][k],
                             {t: v[k] for t, v in labels.items()})
    return found


def test_targets_are_the_peers_eleven_in_order():
    assert qm9.TARGETS == ("mu", "alpha", "homo", "lumo", "r2", "zpve",
                           "u0", "u", "h", "g", "cv")
    assert [qm9.PYG_INDICES[t] for t in qm9.TARGETS] == [0, 1, 2, 3, 5, 6, 12, 13, 14, 15, 11]
    assert set(qm9.UNITS) == set(qm9.SYMBOLS) == set(qm9.TARGET_COLUMNS) == set(qm9.TARGETS)
    assert [qm9.UNITS[t] for t in ("mu", "alpha", "r2", "cv")] == [
        "D", "a0^3", "a0^2", "cal/(mol K)"]
    assert all(qm9.UNITS[t] == "eV" for t in qm9.REPORTED_IN_MEV)
    assert qm9.HARTREE_TO_EV == HARTREE_TO_EV


def test_units_by_hand(folder):
    found = by_id(folder)
    assert sorted(found) == [1, 2, 3, 4, 5, 6, 184]
    ch4 = found[1][2]
    # Unchanged units: Debye, Bohr^3, Bohr^2, cal/(mol K).
    assert ch4["mu"] == 0.0 and ch4["alpha"] == np.float32(13.21)
    assert ch4["r2"] == np.float32(35.3641) and ch4["cv"] == np.float32(6.469)
    # Hartree -> eV.
    np.testing.assert_allclose(ch4["homo"], -0.3877 * HARTREE_TO_EV, rtol=1e-7)
    np.testing.assert_allclose(ch4["lumo"], 0.1171 * HARTREE_TO_EV, rtol=1e-7)
    np.testing.assert_allclose(ch4["zpve"], 0.044749 * HARTREE_TO_EV, rtol=1e-7)
    # Atomization: CH4's U0 minus C and 4 H, then eV: -17.1722 eV (PyG's U0_atom of
    # molecule 1, -395.9996 kcal/mol × 0.04336414, is -17.1722 eV too).
    u0 = (-40.47893 - (-37.846772 + 4 * -0.500273)) * HARTREE_TO_EV
    assert u0 == pytest.approx(-17.17218, abs=1e-4)
    np.testing.assert_allclose(ch4["u0"], u0, rtol=1e-7)
    molecules = {  # id: (composition, U0, U, H, G in Hartree, from ROWS)
        1: ({"C": 1, "H": 4}, (-40.47893, -40.476062, -40.475117, -40.498597)),
        3: ({"O": 1, "H": 2}, (-76.404702, -76.401867, -76.400922, -76.422349)),
        5: ({"C": 1, "N": 1, "H": 1}, (-93.411888, -93.40937, -93.408425, -93.431246)),
        184: ({"C": 1, "F": 4}, (-437.484875, -437.480956, -437.480011, -437.512059)),
    }
    for i, (composition, energies) in molecules.items():
        for k, target in enumerate(("u0", "u", "h", "g")):
            atoms = sum(n * ATOMREF[e][k] for e, n in composition.items())
            expected = (energies[k] - atoms) * HARTREE_TO_EV
            np.testing.assert_allclose(found[i][2][target], expected, rtol=1e-7,
                                       err_msg=f"{target} of molecule {i}")


def test_atoms_positions_and_padding(folder):
    found = by_id(folder)
    atoms, positions, _ = found[1]
    assert atoms.dtype == np.int32 and atoms.shape == (29,)
    assert positions.dtype == np.float32 and positions.shape == (29, 3)
    assert atoms.tolist() == [6, 1, 1, 1, 1] + [0] * 24
    np.testing.assert_allclose(positions[0], [-0.0126981359, 1.0858041578, 0.0080009958])
    np.testing.assert_allclose(positions[4], [-0.5238136345, 1.4379326443, 0.9063972942])
    assert not positions[5:].any()
    # C2H2's coordinates are written "0." and "1." in the file.
    np.testing.assert_allclose(found[4][1][0], [0.5995394918, 0.0, 1.0])
    assert found[184][0][:5].tolist() == [9, 6, 9, 9, 9]
    assert found[5][0][:3].tolist() == [6, 7, 1]
    # Tighter padding; too tight is an error naming max_atoms.
    inputs, _ = qm9.arrays("train", path=folder, split_sizes=SMALL, max_atoms=5)
    assert inputs["atoms"].shape[1:] == (5,) and inputs["positions"].shape[1:] == (5, 3)
    with pytest.raises(ValueError, match=r"argument `max_atoms`.*largest molecule's atom count, 5"):
        qm9.arrays("train", path=folder, split_sizes=SMALL, max_atoms=4)


def test_labels_have_the_shape_regression_expects(folder):
    from keras_mtl.tasks import Regression

    _, labels = qm9.arrays("validation", path=folder, split_sizes=SMALL, targets=["u0", "mu"])
    assert list(labels) == ["u0", "mu"]
    assert labels["u0"].shape[1:] == Regression("u0").label_shape(batch_size=2)[1:] == (1,)
    assert labels["u0"].dtype == np.float32


def test_splits_are_disjoint_seeded_and_sized(folder):
    ids = {s: qm9.split_indices(s, path=folder, split_sizes=SMALL) for s in qm9.SPLITS}
    assert {s: len(v) for s, v in ids.items()} == {"train": 4, "validation": 2, "test": 1}
    assert sorted(np.concatenate(list(ids.values())).tolist()) == [1, 2, 3, 4, 5, 6, 184]
    again = qm9.split_indices("train", 0, path=folder, split_sizes=SMALL)
    np.testing.assert_array_equal(again, ids["train"])
    others = [qm9.split_indices("train", seed, path=folder, split_sizes=SMALL).tolist()
              for seed in (1, 2, 3)]
    assert any(o != ids["train"].tolist() for o in others)
    # The rows' order in the files does not matter: one file, another order.
    one = write(os.path.join(folder, "..", "one"), parts=((184, 6, 5, 4, 3, 2, 1),))
    np.testing.assert_array_equal(qm9.split_indices("train", path=one, split_sizes=SMALL),
                                  ids["train"])
    single = os.path.join(one, "qm9_part1.csv")  # a file is accepted as well as a folder
    np.testing.assert_array_equal(qm9.split_indices("test", path=single, split_sizes=SMALL),
                                  ids["test"])


def test_num_molecules_is_a_prefix_of_the_split(folder):
    full_inputs, full_labels = qm9.arrays("train", path=folder, split_sizes=SMALL)
    inputs, labels = qm9.arrays("train", 3, path=folder, split_sizes=SMALL)
    np.testing.assert_array_equal(inputs["positions"], full_inputs["positions"][:3])
    np.testing.assert_array_equal(labels["g"], full_labels["g"][:3])
    with pytest.raises(ValueError, match=r"argument `num_molecules`.*at most the 4 molecules"):
        qm9.arrays("train", 5, path=folder, split_sizes=SMALL)


def test_the_default_split_needs_the_whole_data(folder):
    assert qm9.SPLIT_SIZES == {"validation": 10_000, "test": 10_000}
    with pytest.raises(ValueError, match=r"argument `split_sizes`.*hold 7 molecule"):
        qm9.arrays("train", path=folder)


def test_standardisation_is_fitted_on_train_only_and_inverts(folder):
    statistics = qm9.target_statistics(path=folder, split_sizes=SMALL)
    assert list(statistics) == list(qm9.TARGETS)
    found = by_id(folder)
    train = qm9.split_indices("train", path=folder, split_sizes=SMALL)
    for target in ("homo", "u0", "cv"):
        values = np.array([found[int(i)][2][target][0] for i in train], np.float64)
        mean, std = statistics[target]
        assert mean == pytest.approx(values.mean(), rel=1e-6)
        assert std == pytest.approx(values.std(), rel=1e-5)
        everything = np.array([v[2][target][0] for v in found.values()])
        assert mean != pytest.approx(everything.mean(), rel=1e-3)  # not fitted on all
    # The training subset in use: the same molecules as load("train", 2).
    two = qm9.target_statistics(2, path=folder, split_sizes=SMALL, targets=["u0"])
    _, labels = qm9.arrays("train", 2, path=folder, split_sizes=SMALL, targets=["u0"])
    assert two["u0"][0] == pytest.approx(float(labels["u0"].astype(np.float64).mean()), rel=1e-6)
    # Applied to every split with the training statistics, and invertible.
    for split in ("validation", "test"):
        _, raw = qm9.arrays(split, path=folder, split_sizes=SMALL)
        _, scaled = qm9.arrays(split, path=folder, split_sizes=SMALL, standardize=statistics)
        for target in qm9.TARGETS:
            mean, std = statistics[target]
            np.testing.assert_allclose(scaled[target], (raw[target] - mean) / std,
                                       rtol=1e-5, atol=1e-6)
        back = qm9.unstandardize(scaled, statistics)
        for target in qm9.TARGETS:
            np.testing.assert_allclose(back[target], raw[target], rtol=1e-5, atol=1e-5)
    # They plug into Regression(normalize=...), which keeps MAE in the units.
    from keras_mtl.tasks import Regression

    task = Regression("u0", loss="mae", normalize=statistics["u0"])
    assert task.normalize == ([statistics["u0"][0]], [statistics["u0"][1]])


def test_a_constant_target_gets_std_one(tmp_path):
    path = write(tmp_path, parts=((1, 4, 2, 3),))  # mu of 1 and 4 is 0
    sizes = {"validation": 1, "test": 1}
    for seed in range(20):
        train = qm9.split_indices("train", seed, path=path, split_sizes=sizes)
        if sorted(train.tolist()) == [1, 4]:
            break
    assert qm9.target_statistics(seed=seed, path=path, split_sizes=sizes,
                                 targets=["mu"]) == {"mu": (0.0, 1.0)}


def test_load_is_an_unbatched_tf_dataset(folder):
    tf = pytest.importorskip("tensorflow")
    ds = qm9.load("train", path=folder, split_sizes=SMALL, targets=["mu", "g"])
    inputs, labels = ds.element_spec
    assert inputs["atoms"] == tf.TensorSpec((29,), tf.int32)
    assert inputs["positions"] == tf.TensorSpec((29, 3), tf.float32)
    assert labels == {"mu": tf.TensorSpec((1,), tf.float32), "g": tf.TensorSpec((1,), tf.float32)}
    batch_inputs, batch_labels = next(iter(ds.batch(4)))
    expected_inputs, expected_labels = qm9.arrays("train", path=folder, split_sizes=SMALL,
                                                  targets=["mu", "g"])
    np.testing.assert_array_equal(batch_inputs["atoms"].numpy(), expected_inputs["atoms"])
    np.testing.assert_array_equal(batch_labels["g"].numpy(), expected_labels["g"])


def test_without_qm9pack_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "qm9pack", None)  # find_spec: not installed
    with pytest.raises(ImportError, match=r"'qm9pack'.*pip install \"keras_mtl\[qm9\]\""):
        qm9.arrays("train")


@pytest.mark.parametrize("kwargs, argument", [
    ({"split": "val"}, "split"),
    ({"split": None}, "split"),
    ({"targets": ["mu", "U0"]}, "targets"),
    ({"targets": "mu"}, "targets"),
    ({"targets": []}, "targets"),
    ({"targets": ["mu", "mu"]}, "targets"),
    ({"num_molecules": 0}, "num_molecules"),
    ({"num_molecules": -3}, "num_molecules"),
    ({"num_molecules": 2.0}, "num_molecules"),
    ({"seed": -1}, "seed"),
    ({"seed": True}, "seed"),
    ({"max_atoms": 0}, "max_atoms"),
    ({"split_sizes": {"validation": 0, "test": 1}}, "split_sizes"),
    ({"split_sizes": {"val": 1, "test": 1}}, "split_sizes"),
    ({"split_sizes": (2, 1)}, "split_sizes"),
    ({"split_sizes": {"validation": 4, "test": 3}}, "split_sizes"),
    ({"standardize": {"mu": (0.0, 1.0)}}, "standardize"),
    ({"standardize": True}, "standardize"),
    ({"targets": ["mu"], "standardize": {"mu": (0.0, 0.0)}}, "standardize"),
    ({"path": "/nonexistent/qm9"}, "path"),
])
def test_bad_arguments_name_the_argument(folder, kwargs, argument):
    kwargs = {"split_sizes": SMALL, "path": folder, **kwargs}
    with pytest.raises(ValueError, match=rf"argument `{argument}`"):
        qm9.arrays(**kwargs)


def test_bad_statistics_and_empty_folders(tmp_path):
    with pytest.raises(ValueError, match=r"argument `statistics`"):
        qm9.unstandardize({"mu": [1.0]}, {"homo": (0.0, 1.0)})
    with pytest.raises(ValueError, match=r"argument `path`"):
        qm9.arrays("train", path=str(tmp_path))  # no qm9_part*.csv
    with pytest.raises(ValueError, match=r"argument `num_molecules`"):
        qm9.target_statistics(0, path=str(tmp_path))


def test_bad_files_say_what_is_wrong(tmp_path):
    path = write(tmp_path / "a", parts=((1, 2, 3),))
    name = os.path.join(path, "qm9_part1.csv")
    text = open(name).read()
    with open(name, "w") as f:
        f.write(text.replace("HOMO_au", "HOMO"))
    with pytest.raises(ValueError, match=r"missing \['HOMO_au'\]"):
        qm9.arrays("train", path=path, split_sizes={"validation": 1, "test": 1})
    path = write(tmp_path / "b", parts=((1, 2, 3),))
    name = os.path.join(path, "qm9_part1.csv")
    with open(name, "w") as f:
        f.write(text.replace('"InChI=1S/H3N/h1H3",4,', '"InChI=1S/H3N/h1H3",5,'))
    with pytest.raises(ValueError, match=r"line 3: N_atoms=5, 4 elements, 12 coordinates"):
        qm9.arrays("train", path=path, split_sizes={"validation": 1, "test": 1})
    path = write(tmp_path / "c", parts=((1, 2), (2, 3)))
    with pytest.raises(ValueError, match=r"Index repeated: \[2\]"):
        qm9.arrays("train", path=path, split_sizes={"validation": 1, "test": 1})


@pytest.mark.slow
def test_the_real_qm9pack_data():
    pytest.importorskip("qm9pack")
    test_ids = qm9.split_indices("test")
    sizes = {s: len(qm9.split_indices(s)) for s in qm9.SPLITS}
    assert sizes == {"train": 110_831, "validation": 10_000, "test": 10_000}
    assert sum(sizes.values()) == qm9.NUM_MOLECULES
    assert len(np.unique(test_ids)) == 10_000 and test_ids.max() <= 133_885
    inputs, labels = qm9.arrays("train", 2000)
    assert inputs["atoms"].shape == (2000, 29)
    assert set(np.unique(inputs["atoms"])) <= {0, 1, 6, 7, 8, 9}
    statistics = qm9.target_statistics()
    # PyTorch Geometric's QM9 targets have these means (eV, D, a0^3, a0^2).
    expected = {"mu": 2.68, "alpha": 75.3, "homo": -6.54, "lumo": 0.32, "r2": 1189.5,
                "zpve": 4.06, "u0": -76.1, "cv": 31.6}
    for target, mean in expected.items():
        assert statistics[target][0] == pytest.approx(mean, rel=0.01), target
    assert statistics["u0"][1] == pytest.approx(10.3, rel=0.02)
