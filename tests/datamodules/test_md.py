"""MD17 / MD22 sGDML trajectories: units, F = -dE/dR on loaded frames, bad frames, splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from molssl.datamodules.md import (
    MD17DataModule,
    MD22DataModule,
    trajectory_path,
)
from molssl.datamodules.md_raw import MDFormatError, closest_distances, read_sgdml
from tests.datamodules.md_files import HarmonicBonds, write_sgdml

FRAMES = 1100


@pytest.fixture(scope="module")
def ethanol(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, HarmonicBonds]:
    root = tmp_path_factory.mktemp("md17")
    potential = write_sgdml(root / "md17_ethanol.npz", frames=FRAMES, nan_frames=(7, 500))
    return root, potential


def _md17(root: Path, **kwargs: object) -> MD17DataModule:
    dm = MD17DataModule(molecule="ethanol", root=root, batch_size=8, **kwargs)
    dm.setup("fit")
    return dm


def test_frames_keep_units_and_forces_are_minus_the_energy_gradient(
    ethanol: tuple[Path, HarmonicBonds],
) -> None:
    root, potential = ethanol
    dm = _md17(root)
    assert dm.task_type == "energy_forces" and dm.task_names == ["energy"]
    assert dm.stats()["units"] == {"positions": "Å", "energy": "kcal/mol", "forces": "kcal/mol/Å"}
    data = dm.data[3]
    pos = data.pos.double().numpy()
    energy, forces = potential.energy_forces(pos[None].astype(np.float64))
    # The stored energy belongs to the stored positions (same frame), in kcal/mol.
    assert float(data.energy) == pytest.approx(float(energy[0]), abs=0.02)
    np.testing.assert_allclose(data.forces.numpy(), forces[0], atol=1e-2)
    # F = -dE/dR, by central differences of the labelling potential around the loaded frame.
    h = 1e-5
    for atom, axis in [(0, 0), (2, 1), (5, 2)]:
        step = np.zeros_like(pos)
        step[atom, axis] = h
        e_plus = potential.energy_forces((pos + step)[None])[0][0]
        e_minus = potential.energy_forces((pos - step)[None])[0][0]
        numeric = -(e_plus - e_minus) / (2 * h)
        assert float(data.forces[atom, axis]) == pytest.approx(numeric, rel=1e-3, abs=1e-3)
    assert data.z.tolist() == [6, 6, 8, 1, 1, 1, 1, 1, 1]
    assert data.energy.shape == (1, 1) and data.forces.shape == (9, 3)


def test_non_finite_frames_are_dropped_with_their_labels_and_counted(
    ethanol: tuple[Path, HarmonicBonds],
) -> None:
    root, _ = ethanol
    dm = _md17(root)
    stats = dm.stats()
    assert (stats["read"], stats["ok"], stats["failed"]) == (FRAMES, FRAMES - 2, 2)
    assert stats["failures_by_reason"] == {"non_finite_frame": 2}
    assert sorted(f["mol_id"] for f in stats["failures"]) == [7, 500]
    frame_ids = [int(dm.data[i].mol_id) for i in range(len(dm.data))]
    assert 7 not in frame_ids and 500 not in frame_ids and frame_ids[7] == 8
    raw = np.load(root / "md17_ethanol.npz")
    after = dm.data[7]  # frame 8 of the file: positions and energy both from frame 8
    np.testing.assert_allclose(after.pos.numpy(), raw["R"][8], atol=1e-5)
    assert float(after.energy) == pytest.approx(float(raw["E"][8, 0]), abs=0.01)


def test_md17_split_is_950_50_rest_and_seeded(ethanol: tuple[Path, HarmonicBonds]) -> None:
    root, _ = ethanol
    dm, again, other = _md17(root, seed=4), _md17(root, seed=4), _md17(root, seed=5)
    split = dm.split_indices
    assert (len(split.train), len(split.val), len(split.test)) == (950, 50, FRAMES - 2 - 1000)
    np.testing.assert_array_equal(split.test, again.split_indices.test)
    assert not np.array_equal(split.train, other.split_indices.train)
    batch = next(iter(dm.train_dataloader()))
    assert batch.energy.shape == (8, 1) and batch.forces.shape == (8 * 9, 3)
    assert batch.pos.dtype == torch.float32 and batch.mol_id.shape == (8,)


def test_target_statistics_come_from_train_frames_only(
    ethanol: tuple[Path, HarmonicBonds],
) -> None:
    root, _ = ethanol
    dm = _md17(root)
    statistics = dm.target_statistics()
    raw = np.load(root / "md17_ethanol.npz")
    kept = np.setdiff1d(np.arange(FRAMES), [7, 500])
    train_frames = kept[dm.split_indices.train]
    energy = raw["E"][train_frames, 0]
    forces = raw["F"][train_frames].reshape(-1)
    assert float(statistics["energy_mean"]) == pytest.approx(energy.mean(), rel=1e-7)
    assert float(statistics["energy_std"]) == pytest.approx(energy.std(), rel=1e-4)
    assert float(statistics["mean"]) == pytest.approx(energy.mean() / 9, rel=1e-7)
    assert float(statistics["std"]) == pytest.approx(energy.std() / 9, rel=1e-4)
    assert float(statistics["force_std"]) == pytest.approx(forces.std(), rel=1e-4)
    assert float(statistics["force_rms"]) == pytest.approx(np.sqrt((forces**2).mean()), rel=1e-4)
    everything = raw["E"][kept, 0]
    assert float(statistics["energy_mean"]) != pytest.approx(everything.mean(), rel=1e-9)


def test_md22_uses_8_1_1_and_its_file_names(tmp_path: Path) -> None:
    write_sgdml(
        tmp_path / "md22_Ac-Ala3-NHMe.npz", "CC(=O)NC(C)C(=O)NC", frames=50, flat_energy=True
    )
    dm = MD22DataModule(molecule="Ac-Ala3-NHMe", root=tmp_path, batch_size=4)
    dm.setup("fit")
    split = dm.split_indices
    assert (len(split.train), len(split.val), len(split.test)) == (40, 5, 5)
    assert dm.stats()["molecule"] == "ethanol"  # the file's own 'name' metadata
    assert trajectory_path("ac_ala3_nhme", tmp_path, dm.known_files, "md22").name == (
        "md22_Ac-Ala3-NHMe.npz"
    )
    with pytest.raises(MDFormatError, match=r"md22_stachyose\.npz"):
        MD22DataModule(molecule="stachyose", root=tmp_path).setup("fit")


def test_revised_md17_keys_and_declared_units_are_converted(tmp_path: Path) -> None:
    write_sgdml(tmp_path / "a.npz", frames=20)
    raw = dict(np.load(tmp_path / "a.npz"))
    ev_per_kcal = 1 / 23.060547830619
    np.savez(
        tmp_path / "rmd17.npz",
        nuclear_charges=raw["z"],
        coords=raw["R"],
        energies=raw["E"][:, 0] * ev_per_kcal,
        forces=raw["F"] * ev_per_kcal,
        e_unit=np.array("eV"),
    )
    trajectory = read_sgdml(tmp_path / "rmd17.npz")
    np.testing.assert_allclose(trajectory.energy, raw["E"][:, 0], rtol=1e-12)
    np.testing.assert_allclose(trajectory.forces, raw["F"], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"drop": "F"}, "missing_key"),
        ({"E": np.zeros((19, 1))}, "shape_mismatch"),
        ({"R": np.zeros((20, 8, 3))}, "shape_mismatch"),
        ({"z": np.array([6, 6, 8, 1, 1, 1, 1, 1, 0])}, "invalid_atomic_number"),
        ({"e_unit": np.array("furlong")}, "unknown_unit"),
        ({"F": np.full((20, 9, 3), np.nan)}, "empty_file"),
    ],
)
def test_whole_file_problems_are_typed_errors(
    tmp_path: Path, change: dict[str, object], reason: str
) -> None:
    write_sgdml(tmp_path / "a.npz", frames=20)
    arrays = dict(np.load(tmp_path / "a.npz"))
    arrays.pop(str(change.pop("drop", "")), None)
    arrays.update(change)
    np.savez(tmp_path / "b.npz", **arrays)
    with pytest.raises(MDFormatError) as info:
        read_sgdml(tmp_path / "b.npz")
    assert info.value.reason == reason and "b.npz" in str(info.value)


def test_unreadable_or_missing_files_and_bad_arguments(tmp_path: Path) -> None:
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(MDFormatError) as info:
        read_sgdml(tmp_path / "text.npz")
    assert info.value.reason == "not_npz"
    with pytest.raises(MDFormatError) as info:
        read_sgdml(tmp_path / "absent.npz")
    assert info.value.reason == "missing_file"
    with pytest.raises(ValueError, match="path="):
        MD17DataModule()
    with pytest.raises(ValueError, match="random"):
        MD17DataModule(path=tmp_path / "x.npz", split="scaffold")
    write_sgdml(tmp_path / "small.npz", frames=100)
    with pytest.raises(ValueError, match="no test sample"):
        MD17DataModule(path=tmp_path / "small.npz").setup("fit")


class _Tripwire:
    """Unpickling this object creates a file: proof that an object array was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def _clean_arrays(tmp_path: Path) -> dict[str, np.ndarray]:
    write_sgdml(tmp_path / "clean.npz", frames=20)
    return dict(np.load(tmp_path / "clean.npz"))


def _expect_format_error(path: Path, reason: str) -> str:
    with pytest.raises(MDFormatError) as info:
        read_sgdml(path)
    message = str(info.value)
    # numpy's own message for these files talks about pickled data and allow_pickle.
    assert info.value.reason == reason and path.name in message, message
    assert "allow_pickle" not in message and "pickled (object) data" not in message, message
    return message


def test_a_text_or_empty_or_lone_npy_file_is_not_npz(tmp_path: Path) -> None:
    text = tmp_path / "energies.npz"
    text.write_text("frame,energy\n0,-97000.1\n")
    assert "frame,energy" in _expect_format_error(text, "not_npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    assert "empty" in _expect_format_error(tmp_path / "empty.npz", "not_npz")
    with (tmp_path / "lone.npz").open("wb") as handle:
        np.save(handle, np.zeros((3, 9, 3)))
    assert ".npy" in _expect_format_error(tmp_path / "lone.npz", "not_npz")


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_a_truncated_npz_is_truncated_file(tmp_path: Path, keep: float) -> None:
    write_sgdml(tmp_path / "whole.npz", frames=20)
    content = (tmp_path / "whole.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(content[: int(len(content) * keep)])
    _expect_format_error(tmp_path / "cut.npz", "truncated_file")


def test_a_damaged_member_is_truncated_file(tmp_path: Path) -> None:
    write_sgdml(tmp_path / "whole.npz", frames=20)
    content = bytearray((tmp_path / "whole.npz").read_bytes())
    # Inside R's data (the archive is stored uncompressed): the member's CRC-32 no longer matches.
    start = content.index(b"R.npy") + 400
    content[start : start + 16] = bytes(16)
    (tmp_path / "damaged.npz").write_bytes(bytes(content))
    _expect_format_error(tmp_path / "damaged.npz", "truncated_file")


@pytest.mark.parametrize("key", ["z", "R", "E", "F"])
def test_an_object_array_is_refused_and_never_unpickled(tmp_path: Path, key: str) -> None:
    arrays = _clean_arrays(tmp_path)
    marker = tmp_path / "unpickled"
    objects = np.empty(arrays[key].shape, dtype=object)
    objects[...] = 0
    objects.reshape(-1)[0] = _Tripwire(marker)
    arrays[key] = objects
    np.savez(tmp_path / "objects.npz", **arrays)
    message = _expect_format_error(tmp_path / "objects.npz", "object_array")
    assert repr(key) in message
    assert not marker.exists()


def test_object_metadata_is_skipped_without_unpickling(tmp_path: Path) -> None:
    arrays = _clean_arrays(tmp_path)
    marker = tmp_path / "unpickled"
    arrays["notes"] = np.array([_Tripwire(marker)], dtype=object)
    np.savez(tmp_path / "meta.npz", **arrays)
    trajectory = read_sgdml(tmp_path / "meta.npz")
    assert trajectory.read == 20 and "notes" not in trajectory.metadata
    assert trajectory.metadata["name"] == "ethanol"
    assert not marker.exists()


def test_frames_whose_atoms_coincide_are_recorded_failures(tmp_path: Path) -> None:
    write_sgdml(tmp_path / "a.npz", frames=20)
    arrays = dict(np.load(tmp_path / "a.npz"))
    positions = arrays["R"].copy()
    positions[4, 2] = positions[4, 0]  # atom 2 on top of atom 0
    positions[9, 5] = positions[9, 1] + 0.1  # 0.17 Å apart
    np.savez(tmp_path / "b.npz", **{**arrays, "R": positions})
    trajectory = read_sgdml(tmp_path / "b.npz")
    assert [(f.mol_id, f.reason) for f in trajectory.failures] == [
        (4, "coincident_atoms"),
        (9, "coincident_atoms"),
    ]
    assert "two atoms 0 Å apart" in trajectory.failures[0].message
    assert trajectory.read == 20 == len(trajectory.frame) + len(trajectory.failures)
    np.testing.assert_allclose(trajectory.energy, arrays["E"][trajectory.frame, 0], rtol=1e-12)
    # Every frame collapsed: no usable frame, one error saying why.
    collapsed = np.repeat(positions[4:5], 20, axis=0)
    np.savez(tmp_path / "c.npz", **{**arrays, "R": collapsed})
    with pytest.raises(MDFormatError, match=r"no usable frame among 20 \(coincident_atoms 20\)"):
        read_sgdml(tmp_path / "c.npz")


def test_closest_distances_match_brute_force() -> None:
    positions = np.random.default_rng(0).normal(size=(30, 12, 3)) * 2.0 + 40.0  # far from 0
    brute = [
        min(np.linalg.norm(frame[i] - frame[j]) for i in range(12) for j in range(i))
        for frame in positions
    ]
    np.testing.assert_allclose(closest_distances(positions), brute, rtol=1e-9)
