"""QM9's dipole-moment and spatial-extent heads: symmetry, brute force, batching, masses.

Real molecules (NCI, RDKit conformers) through a tiny equivariant transformer in float64; the
heads' formulas are written out atom by atom as references, with TorchMD-NET's
``EquivariantDipoleMoment`` (``torchmdnet/models/output_modules.py``) as ``neutral=False``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rdkit.Chem import rdMolTransforms
from torch_geometric.data import Batch, Data

from molssl.chem.conformers import ConformerOptions, embed_conformers
from molssl.chem.features import mol_from_smiles
from molssl.encoders.et import EquivariantTransformer
from molssl.encoders.property_heads import (
    DipoleMomentHead,
    SpatialExtentHead,
    atomic_masses,
    centre_of_mass,
)
from tests.encoders.molecules_3d import as_batch, fixed_rotation, moved, nci_molecules

TINY = {"hidden_channels": 32, "num_layers": 2, "num_heads": 4, "num_rbf": 16}
TOLERANCE = 1e-8


def quarter_turn_x() -> torch.Tensor:
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)


ROTATIONS = {
    "zyx": fixed_rotation,
    "quarter_turn_x": quarter_turn_x,
    "rotoreflection": lambda: -fixed_rotation(),
}


@pytest.fixture(scope="module")
def batch() -> Batch:
    return as_batch(nci_molecules(), torch.float64)


def encoder_and_heads() -> tuple[EquivariantTransformer, DipoleMomentHead, SpatialExtentHead]:
    torch.manual_seed(0)
    encoder = EquivariantTransformer(**TINY).double().eval()
    return encoder, DipoleMomentHead(32).double(), SpatialExtentHead(32).double()


@pytest.mark.parametrize("name", list(ROTATIONS))
def test_dipole_turns_with_the_molecule_and_keeps_its_length(batch: Batch, name: str) -> None:
    rotation = ROTATIONS[name]()
    encoder, dipole, _ = encoder_and_heads()
    turned = moved(batch, rotation)  # rotated, then translated
    vector = dipole.vector(encoder(batch), batch)
    vector_turned = dipole.vector(encoder(turned), turned)
    torch.testing.assert_close(vector_turned, vector @ rotation.T, atol=TOLERANCE, rtol=TOLERANCE)
    torch.testing.assert_close(
        dipole(encoder(turned), turned), dipole(encoder(batch), batch), atol=TOLERANCE, rtol=0
    )
    assert vector.abs().min() > 1e-6  # a non-trivial vector, so the check can fail


@torch.no_grad()
@pytest.mark.parametrize("neutral", [True, False])
def test_dipole_matches_the_formula_atom_by_atom(batch: Batch, neutral: bool) -> None:
    encoder, _, _ = encoder_and_heads()
    dipole = DipoleMomentHead(32, neutral=neutral).double()
    output = encoder(batch)
    charge, vec = dipole._run(output, "test")
    expected = []
    for graph in range(batch.num_graphs):
        atoms = (batch.batch == graph).nonzero().flatten().tolist()
        q = [float(charge[i]) for i in atoms]
        if neutral:
            q = [value - sum(q) / len(q) for value in q]
        masses = [float(atomic_masses(batch.z[i : i + 1], torch.float64)) for i in atoms]
        centre = [
            sum(m * float(batch.pos[i, k]) for m, i in zip(masses, atoms, strict=True))
            / sum(masses)
            for k in range(3)
        ]
        mu = [
            sum(
                qi * (float(batch.pos[i, k]) - centre[k]) + float(vec[i, k])
                for qi, i in zip(q, atoms, strict=True)
            )
            for k in range(3)
        ]
        expected.append(math.sqrt(sum(c * c for c in mu)))
    torch.testing.assert_close(
        dipole(output, batch), torch.tensor(expected, dtype=torch.float64), atol=1e-10, rtol=1e-10
    )


def test_neutral_charges_make_the_dipole_independent_of_the_centre(batch: Batch) -> None:
    encoder, dipole, _ = encoder_and_heads()
    output = encoder(batch)
    charge, vec = dipole._run(output, "test")
    index = batch.batch
    counts = torch.bincount(index).double()
    totals = torch.zeros(batch.num_graphs).double().index_add_(0, index, charge)
    neutral = charge - (totals / counts)[index]
    # About the origin instead of the centre of mass: the same vector for neutral charges.
    about_origin = torch.zeros(batch.num_graphs, 3).double()
    about_origin.index_add_(0, index, neutral.unsqueeze(-1) * batch.pos + vec)
    torch.testing.assert_close(dipole.vector(output, batch), about_origin, atol=1e-10, rtol=1e-10)


@torch.no_grad()
@pytest.mark.parametrize("name", list(ROTATIONS))
def test_spatial_extent_is_invariant_and_matches_the_formula(batch: Batch, name: str) -> None:
    encoder, _, extent = encoder_and_heads()
    output = encoder(batch)
    value = extent(output, batch)
    turned = moved(batch, ROTATIONS[name]())
    torch.testing.assert_close(extent(encoder(turned), turned), value, atol=TOLERANCE, rtol=0)
    weight = extent.output_network(output.node).squeeze(-1)
    centre = centre_of_mass(batch, batch.num_graphs)[batch.batch]
    for graph in range(batch.num_graphs):
        atoms = batch.batch == graph
        by_hand = sum(
            float(w) * float(((p - c) ** 2).sum())
            for w, p, c in zip(weight[atoms], batch.pos[atoms], centre[atoms], strict=True)
        )
        assert float(value[graph]) == pytest.approx(by_hand, rel=1e-10)


def test_batched_equals_one_molecule_at_a_time(batch: Batch) -> None:
    encoder, dipole, extent = encoder_and_heads()
    output = encoder(batch)
    together = torch.stack([dipole(output, batch), extent(output, batch)], dim=-1)
    for graph, molecule in enumerate(batch.to_data_list()):
        single = Batch.from_data_list([molecule])
        alone = encoder(single)
        one = torch.stack([dipole(alone, single), extent(alone, single)], dim=-1)[0]
        torch.testing.assert_close(one, together[graph], atol=1e-10, rtol=1e-10)


def test_centre_of_mass_matches_rdkit() -> None:
    mol = embed_conformers(mol_from_smiles("OC(=O)c1ccccc1F"), ConformerOptions(seed=3))
    conformer = mol.GetConformer()
    masses = np.array([atom.GetMass() for atom in mol.GetAtoms()])
    positions = conformer.GetPositions()
    expected = (masses[:, None] * positions).sum(0) / masses.sum()
    z = torch.tensor([atom.GetAtomicNum() for atom in mol.GetAtoms()])
    centre = centre_of_mass(Data(z=z, pos=torch.from_numpy(positions)), 1)[0]
    torch.testing.assert_close(centre, torch.from_numpy(expected))
    # RDKit's unweighted centroid is another point: the masses do matter.
    centroid = rdMolTransforms.ComputeCentroid(conformer, ignoreHs=False)
    assert float((centre - torch.tensor(list(centroid), dtype=torch.float64)).norm()) > 1e-2
    # The masses of QM9's elements, as TorchMD-NET's ASE table gives them to its precision.
    expected_masses = torch.tensor([1.008, 12.011, 14.007, 15.999, 18.998], dtype=torch.float64)
    masses = atomic_masses(torch.tensor([1, 6, 7, 8, 9]), torch.float64)
    torch.testing.assert_close(masses, expected_masses, atol=1e-3, rtol=0)


def test_every_parameter_gets_a_gradient_and_bad_input_is_clear(batch: Batch) -> None:
    encoder, dipole, extent = encoder_and_heads()
    (dipole(encoder(batch), batch).sum() + extent(encoder(batch), batch).sum()).backward()
    for module in (encoder, dipole, extent):
        for name, parameter in module.named_parameters():
            assert parameter.grad is not None, name
    no_positions = Data(z=batch.z)
    with pytest.raises(ValueError, match="positions"):
        extent(encoder(batch), no_positions)
    with pytest.raises(ValueError, match="atomic numbers"):
        atomic_masses(torch.tensor([0, 6]))
    with pytest.raises(ValueError, match="hidden_channels"):
        SpatialExtentHead(1)
