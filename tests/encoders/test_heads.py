"""Output heads: symmetry, pooling, standardisation, atom references and misuse."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch, Data

from molssl.encoders.base import EncoderOutput
from molssl.encoders.et import EquivariantTransformer
from molssl.encoders.heads import (
    EquivariantScalarHead,
    EquivariantVectorHead,
    GatedEquivariantBlock,
    MLPHead,
)
from tests.encoders.molecules_3d import as_batch, fixed_rotation, moved, nci_molecules

TOLERANCE = {torch.float64: 1e-4, torch.float32: 1e-3}


@pytest.fixture(scope="module")
def molecules() -> list[Data]:
    return nci_molecules()


def encode(batch: Batch, dtype: torch.dtype) -> EncoderOutput:
    torch.manual_seed(0)
    encoder = EquivariantTransformer(hidden_channels=32, num_layers=2, num_heads=4, num_rbf=16)
    with torch.no_grad():
        return encoder.to(dtype)(batch)


def heads(dtype: torch.dtype) -> tuple[EquivariantVectorHead, EquivariantScalarHead, MLPHead]:
    torch.manual_seed(1)
    return (
        EquivariantVectorHead(32).to(dtype),
        EquivariantScalarHead(32, mean=-3.0, std=2.5).to(dtype),
        MLPHead(32, out_dim=3, hidden_dim=16, dropout=0.1).to(dtype).eval(),
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_heads_equivariant_and_invariant_on_encoder_output(
    molecules: list[Data], dtype: torch.dtype
) -> None:
    rotation = fixed_rotation()
    batch = as_batch(molecules, dtype)
    out, out_moved = encode(batch, dtype), encode(moved(batch, rotation), dtype)
    vector_head, scalar_head, mlp_head = heads(dtype)
    tol = TOLERANCE[dtype]
    with torch.no_grad():
        vectors = vector_head(out, batch)
        assert vectors.shape == (batch.num_nodes, 3) and vectors.abs().max() > 1e-4
        torch.testing.assert_close(
            vector_head(out_moved, batch), vectors @ rotation.to(dtype).T, atol=tol, rtol=tol
        )
        energies = scalar_head(out, batch)
        assert energies.shape == (len(molecules),)
        torch.testing.assert_close(scalar_head(out_moved, batch), energies, atol=tol, rtol=tol)
        properties = mlp_head(out, batch)
        assert properties.shape == (len(molecules), 3)
        torch.testing.assert_close(mlp_head(out_moved, batch), properties, atol=tol, rtol=tol)


def test_gated_block_equivariant_on_arbitrary_vectors() -> None:
    torch.manual_seed(4)
    block = GatedEquivariantBlock(8, 5, intermediate_channels=12, scalar_activation=True).double()
    x, v = torch.randn(6, 8, dtype=torch.float64), torch.randn(6, 3, 8, dtype=torch.float64)
    rotation = -fixed_rotation()  # a rotoreflection: the block uses norms and linear maps only
    scalars, vectors = block(x, v)
    scalars_r, vectors_r = block(x, torch.einsum("ij,njc->nic", rotation, v))
    assert scalars.shape == (6, 5) and vectors.shape == (6, 3, 5)
    torch.testing.assert_close(scalars_r, scalars)
    torch.testing.assert_close(vectors_r, torch.einsum("ij,njc->nic", rotation, vectors))


def test_gated_block_has_finite_gradients_at_zero_vectors() -> None:
    torch.manual_seed(5)
    block = GatedEquivariantBlock(8, 4).double()
    x = torch.randn(3, 8, dtype=torch.float64)
    v = torch.zeros(3, 3, 8, dtype=torch.float64, requires_grad=True)
    scalars, vectors = block(x, v)
    # Second order too: force-matching losses differentiate through the forces.
    (grad,) = torch.autograd.grad(scalars.sum() + vectors.sum(), v, create_graph=True)
    (second,) = torch.autograd.grad(grad.sum(), v)
    assert torch.isfinite(grad).all() and torch.isfinite(second).all()


def test_scalar_head_pooling_standardisation_and_atomref(molecules: list[Data]) -> None:
    batch = as_batch(molecules, torch.float64)
    out = encode(batch, torch.float64)
    torch.manual_seed(1)
    plain = EquivariantScalarHead(32).double()
    atomref = [0.0] * 100
    atomref[1], atomref[6] = -0.5, -37.8  # hydrogen and carbon reference values
    for reduce in ("sum", "mean"):
        torch.manual_seed(1)
        head = EquivariantScalarHead(32, reduce=reduce, mean=1.5, std=2.0, atomref=atomref)
        head = head.double()
        with torch.no_grad():
            raw = plain.per_atom(out, batch)
            expected_atoms = 2.0 * raw + torch.tensor(atomref, dtype=torch.float64)[batch.z]
            torch.testing.assert_close(head.per_atom(out, batch), expected_atoms)
            for i in range(len(molecules)):
                atoms = expected_atoms[batch.batch == i]
                pooled = atoms.sum() if reduce == "sum" else atoms.mean()
                torch.testing.assert_close(head(out, batch)[i], pooled + 1.5)
    head.set_standardization(mean=0.0, std=1.0)
    assert "mean" in head.state_dict() and float(head.std) == 1.0
    with pytest.raises(ValueError, match="std"):
        head.set_standardization(mean=0.0, std=0.0)


def test_scalar_head_single_molecule_without_batch_vector(molecules: list[Data]) -> None:
    single = Data(z=molecules[0].z, pos=molecules[0].pos)
    out = encode(single, torch.float64)
    _, scalar_head, _ = heads(torch.float64)
    with torch.no_grad():
        energy = scalar_head(out, None)
        assert energy.shape == (1,)
        torch.testing.assert_close(energy, scalar_head.per_atom(out).sum().reshape(1) - 3.0)


def test_mlp_head_dropout_only_in_training(molecules: list[Data]) -> None:
    batch = as_batch(molecules, torch.float64)
    out = encode(batch, torch.float64)
    torch.manual_seed(2)
    head = MLPHead(32, out_dim=2, hidden_dim=64, dropout=0.5).double()
    head.eval()
    torch.testing.assert_close(head(out), head(out))
    head.train()
    assert not torch.allclose(head(out), head(out))


def test_heads_reject_misuse(molecules: list[Data]) -> None:
    no_vec = EncoderOutput(node=torch.zeros(4, 32), graph=torch.zeros(1, 32))
    with pytest.raises(ValueError, match="vector features"):
        EquivariantVectorHead(32)(no_vec)
    with pytest.raises(ValueError, match="vector features"):
        EquivariantScalarHead(32)(no_vec)
    with pytest.raises(ValueError, match="reduce"):
        EquivariantScalarHead(32, reduce="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dropout"):
        MLPHead(32, dropout=1.0)
    with pytest.raises(ValueError, match="activation"):
        MLPHead(32, activation="swish")
    batch = as_batch(molecules[:1], torch.float32)
    out = encode(batch, torch.float32)
    with pytest.raises(ValueError, match="atomref"):
        EquivariantScalarHead(32, atomref=[0.0] * 6)(out, batch)  # molecule has oxygen (z = 8)
    with pytest.raises(ValueError, match="'z'"):
        EquivariantScalarHead(32, atomref=[0.0] * 100)(out, None)
