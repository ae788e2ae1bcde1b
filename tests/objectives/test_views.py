"""TorsionAugment, CoordNoise and RemoveHydrogens on real molecules: statistics, geometry,
order, equality."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rdkit.Chem import rdMolTransforms
from torch_geometric.data import Data

from molssl.chem.conformers import ConformerOptions, embed_conformers
from molssl.chem.features import mol_from_smiles
from molssl.modules.pretrain import merge_views
from molssl.objectives.base import View
from molssl.objectives.fragment_mask import FragmentMaskView
from molssl.objectives.views import CoordNoise, RemoveHydrogens, TorsionAugment
from tests.conftest import read_nci_smiles
from tests.objectives.samples import pretrain_sample

# NCI molecules: a C16 alkyl phenol (14 rotatable torsions), a flexible diaryl ether (7) and
# a dialkyl sulfide chain (4); index 0 is a quinone without rotatable bonds.
FLEXIBLE = (16, 17, 18)
RIGID = 0


def nci(index: int) -> Data:
    return pretrain_sample(read_nci_smiles(index + 1)[index], mol_id=index)


def dihedrals_deg(pos: np.ndarray, torsions: np.ndarray) -> np.ndarray:
    """Signed dihedral angles (i, j, k, l) in degrees, vectorised over torsions."""
    p = pos[torsions]
    b0, b1, b2 = p[:, 0] - p[:, 1], p[:, 2] - p[:, 1], p[:, 3] - p[:, 2]
    axis = b1 / np.linalg.norm(b1, axis=1, keepdims=True)
    v = b0 - (b0 * axis).sum(1, keepdims=True) * axis
    w = b2 - (b2 * axis).sum(1, keepdims=True) * axis
    return np.degrees(np.arctan2((np.cross(axis, v) * w).sum(1), (v * w).sum(1)))


def wrapped(angle_deg: np.ndarray) -> np.ndarray:
    return (angle_deg + 180.0) % 360.0 - 180.0


def bond_lengths(data: Data, pos: torch.Tensor) -> torch.Tensor:
    src, dst = data.edge_index
    return (pos[src].double() - pos[dst].double()).norm(dim=-1)


def test_dihedral_helper_matches_rdkit() -> None:
    mol = embed_conformers(mol_from_smiles("CCCCSCC"), ConformerOptions(seed=1))
    conf = mol.GetConformer(0)
    torsions = np.array([[0, 1, 2, 3], [1, 2, 3, 4], [3, 4, 5, 6]])
    expected = [rdMolTransforms.GetDihedralDeg(conf, *map(int, row)) for row in torsions]
    assert np.allclose(dihedrals_deg(conf.GetPositions(), torsions), expected, atol=1e-8)


@pytest.mark.parametrize("index", FLEXIBLE)
def test_torsion_changes_have_the_configured_std(index: int) -> None:
    data = nci(index)
    torsions = data.torsion_atoms.numpy()
    assert len(torsions) >= 4
    before = dihedrals_deg(data.pos.double().numpy(), torsions)
    view = TorsionAugment(sigma=2.0, unit="deg")
    torch.manual_seed(index)
    draws = 1500
    changes = np.stack(
        [
            wrapped(dihedrals_deg(view(data).pos.double().numpy(), torsions) - before)
            for _ in range(draws)
        ]
    )
    # Sample std of n normal draws has relative standard error 1/sqrt(2n) ~ 1.8%: 10% is
    # > 5 standard errors, while a wrong unit (2 rad) or a missed torsion (std 0) is far off.
    assert np.allclose(changes.std(axis=0), 2.0, rtol=0.10)
    assert np.all(np.abs(changes.mean(axis=0)) < 5 * 2.0 / math.sqrt(draws))
    # Independent draws per torsion: off-diagonal correlations near 0.
    correlation = np.corrcoef(changes.T)
    off_diagonal = correlation[~np.eye(len(torsions), dtype=bool)]
    assert np.abs(off_diagonal).max() < 0.15


def test_unit_deg_and_rad_are_the_same_draw() -> None:
    data = nci(17)
    torch.manual_seed(3)
    in_degrees = TorsionAugment(sigma=10.0, unit="deg")(data).pos
    torch.manual_seed(3)
    in_radians = TorsionAugment(sigma=math.radians(10.0), unit="rad")(data).pos
    torch.manual_seed(3)
    ten_radians = TorsionAugment(sigma=10.0, unit="rad")(data).pos
    assert torch.allclose(in_degrees, in_radians, atol=1e-6)
    assert not torch.allclose(in_degrees, ten_radians, atol=1e-2)
    assert TorsionAugment(10.0, "deg") == TorsionAugment(math.radians(10.0), "rad")


def test_torsion_augment_keeps_bond_lengths_and_differs_between_calls() -> None:
    data = nci(16)
    view = TorsionAugment(sigma=30.0)
    first, second = view(data), view(data)
    reference = bond_lengths(data, data.pos)
    for out in (first, second):
        assert torch.allclose(bond_lengths(data, out.pos), reference, atol=1e-4)
        assert out.pos.dtype == data.pos.dtype
    assert (first.pos - second.pos).abs().max() > 0.1
    assert (first.pos - data.pos).abs().max() > 0.1


def test_torsion_augment_does_not_modify_its_input() -> None:
    data = nci(18)
    pos = data.pos.clone()
    out = TorsionAugment(sigma=45.0)(data)
    assert torch.equal(data.pos, pos)
    assert out is not data
    assert out.fragment is data.fragment


def test_no_rotatable_bond_is_identity() -> None:
    data = nci(RIGID)
    assert data.torsion_atoms.shape == (0, 4)
    out = TorsionAugment(sigma=90.0)(data)
    assert torch.equal(out.pos, data.pos)


def test_torsion_augment_needs_torsion_keys() -> None:
    data = nci(18).clone()
    del data.torsion_moving
    with pytest.raises(ValueError, match="torsion_moving"):
        TorsionAugment()(data)
    with pytest.raises(ValueError, match="'pos'"):
        TorsionAugment()(Data(torsion_atoms=torch.zeros(0, 4, dtype=torch.long)))


@pytest.mark.parametrize(("sigma", "unit"), [(-1.0, "deg"), (float("nan"), "rad"), (2.0, "grad")])
def test_torsion_augment_rejects_bad_arguments(sigma: float, unit: str) -> None:
    with pytest.raises(ValueError):
        TorsionAugment(sigma, unit)  # type: ignore[arg-type]


def test_coord_noise_statistics_and_target() -> None:
    data = nci(16)
    view = CoordNoise(sigma=0.04)
    torch.manual_seed(0)
    outs = [view(data) for _ in range(200)]
    noise = torch.stack([out.coord_noise for out in outs]).double()
    assert noise.shape == (200, data.num_nodes, 3)
    assert abs(noise.std().item() - 0.04) < 0.04 * 0.03
    assert abs(noise.mean().item()) < 1e-3
    for out in outs[:5]:
        # The clean conformer is recoverable exactly as pos - coord_noise.
        assert torch.allclose(out.pos - out.coord_noise, data.pos, atol=1e-6)
    assert not torch.equal(outs[0].coord_noise, outs[1].coord_noise)
    assert getattr(data, "coord_noise", None) is None


def test_coord_noise_refuses_a_second_noise() -> None:
    noisy = CoordNoise(0.04)(nci(18))
    with pytest.raises(ValueError, match="two coordinate-noise views"):
        CoordNoise(0.04)(noisy)


def test_coord_noise_equality_for_deduplication() -> None:
    assert CoordNoise(0.04) == CoordNoise(0.04)
    assert hash(CoordNoise(0.04)) == hash(CoordNoise(0.04))
    assert CoordNoise(0.04) != CoordNoise(0.05)
    assert len({CoordNoise(0.04), CoordNoise(0.04), CoordNoise(0.1)}) == 2
    assert CoordNoise(0.04) != TorsionAugment(0.04, "rad")
    for bad in (0.0, -0.1, float("inf")):
        with pytest.raises(ValueError):
            CoordNoise(bad)


def test_pipeline_order_torsion_then_noise_then_mask() -> None:
    assert TorsionAugment.order == 10
    assert CoordNoise.order == 20
    assert FragmentMaskView.order == 30
    views: list[View] = sorted([CoordNoise(), TorsionAugment()], key=lambda v: v.order)
    data = nci(17)
    torch.manual_seed(5)
    out = data
    for view in views:
        out = view(out)
    # Noise is added after the torsion change: removing it gives a conformer with the
    # original bond lengths but different torsions.
    clean = out.pos - out.coord_noise
    assert torch.allclose(bond_lengths(data, clean), bond_lengths(data, data.pos), atol=1e-4)
    assert (clean - data.pos).abs().max() > 1e-3


def test_torsion_then_noise_on_a_rigid_molecule_is_plain_denoising() -> None:
    data = nci(RIGID)
    out = CoordNoise(0.04)(TorsionAugment(2.0)(data))
    assert torch.allclose(out.pos - out.coord_noise, data.pos, atol=1e-6)


def test_remove_hydrogens_runs_first_and_commutes_with_torsion_augmentation() -> None:
    """Removing the hydrogens before rotating the torsions gives the heavy atoms the
    coordinates they get when the whole molecule is rotated first: the order-5 view changes
    what later views see, not the geometry; the given sample is left as it was."""
    assert RemoveHydrogens.order < TorsionAugment.order
    views = [("a", CoordNoise(0.2)), ("b", RemoveHydrogens()), ("c", RemoveHydrogens())]
    assert merge_views(views) == [RemoveHydrogens(), CoordNoise(0.2)]
    data = nci(FLEXIBLE[1])
    before = {key: value.clone() for key, value in data.items() if isinstance(value, torch.Tensor)}
    heavy = data.z > 1
    torch.manual_seed(3)
    first = TorsionAugment(30.0)(RemoveHydrogens()(data))
    torch.manual_seed(3)
    last = RemoveHydrogens()(TorsionAugment(30.0)(data))
    assert first.num_nodes == last.num_nodes == int(heavy.sum()) == first.pos.size(0)
    assert (first.pos - data.pos[heavy]).abs().max() > 0.1  # the torsions did turn
    torch.testing.assert_close(first.pos, last.pos, atol=1e-4, rtol=0.0)
    for key in ("x", "edge_index", "edge_attr", "fragment", "torsion_moving"):
        assert torch.equal(first[key], last[key]), key
    for key, value in before.items():
        assert torch.equal(data[key], value), key
