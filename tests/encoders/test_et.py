"""Equivariant transformer: symmetry, batching, forces, configuration and bad input."""

from __future__ import annotations

import warnings

import jsonargparse
import pytest
import torch
from torch_geometric.data import Batch, Data

from molssl.encoders.base import EncoderOutput
from molssl.encoders.et import EquivariantTransformer
from molssl.encoders.heads import EquivariantScalarHead
from tests.encoders.molecules_3d import (
    as_batch,
    fixed_rotation,
    moved,
    nci_molecules,
    rotate_vectors,
    small_molecule,
)

TINY = {"hidden_channels": 32, "num_layers": 2, "num_heads": 4, "num_rbf": 16}
TOLERANCE = {torch.float64: 1e-4, torch.float32: 1e-3}


def tiny_encoder(dtype: torch.dtype = torch.float64, **overrides: object) -> EquivariantTransformer:
    torch.manual_seed(0)
    return EquivariantTransformer(**{**TINY, **overrides}).to(dtype).eval()


@pytest.fixture(scope="module")
def molecules() -> list[Data]:
    return nci_molecules()


def test_output_shapes_and_out_dim(molecules: list[Data]) -> None:
    encoder = tiny_encoder()
    batch = as_batch(molecules, torch.float64)
    out = encoder(batch)
    n = batch.num_nodes
    assert isinstance(out, EncoderOutput)
    assert encoder.out_dim == 32
    assert out.node.shape == (n, 32)
    assert out.vec is not None and out.vec.shape == (n, 3, 32)
    assert out.graph.shape == (len(molecules), 32)
    assert torch.isfinite(out.node).all() and torch.isfinite(out.vec).all()
    # Vector features must actually carry geometry, or the equivariance tests prove nothing.
    assert out.vec.abs().max() > 1e-2


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("layernorm_on_vec", [None, "whitened"])
@pytest.mark.parametrize("improper", [False, True], ids=["rotation", "rotoreflection"])
def test_rigid_motion_invariance_and_equivariance(
    molecules: list[Data], dtype: torch.dtype, layernorm_on_vec: str | None, improper: bool
) -> None:
    encoder = tiny_encoder(dtype, layernorm_on_vec=layernorm_on_vec)
    rotation = fixed_rotation()
    if improper:
        # ET only builds vectors from edge directions (no cross products), so it is
        # equivariant under reflections too.
        rotation = -rotation
    batch = as_batch(molecules, dtype)
    out = encoder(batch)
    out_moved = encoder(moved(batch, rotation))
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(out_moved.node, out.node, atol=tol, rtol=tol)
    torch.testing.assert_close(out_moved.graph, out.graph, atol=tol, rtol=tol)
    torch.testing.assert_close(out_moved.vec, rotate_vectors(out.vec, rotation), atol=tol, rtol=tol)


def test_atom_permutation_permutes_outputs(molecules: list[Data]) -> None:
    encoder = tiny_encoder()
    molecule = molecules[-1]
    perm = torch.randperm(molecule.num_nodes, generator=torch.Generator().manual_seed(3))
    out = encoder(as_batch([molecule], torch.float64))
    permuted = Data(z=molecule.z[perm], pos=molecule.pos[perm], smiles=molecule.smiles)
    out_perm = encoder(as_batch([permuted], torch.float64))
    torch.testing.assert_close(out_perm.node, out.node[perm], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out_perm.vec, out.vec[perm], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out_perm.graph, out.graph, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_batched_equals_unbatched(molecules: list[Data], reduce: str) -> None:
    encoder = tiny_encoder(reduce=reduce, layernorm_on_vec="whitened")
    # Molecules overlap in space (all centred near the origin): only the batch vector keeps
    # them apart, which is what this test checks.
    batch = as_batch(molecules, torch.float64)
    out = encoder(batch)
    for i, molecule in enumerate(molecules):
        alone = encoder(as_batch([molecule], torch.float64))
        atoms = batch.batch == i
        torch.testing.assert_close(out.node[atoms], alone.node, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(out.vec[atoms], alone.vec, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(out.graph[i : i + 1], alone.graph, atol=1e-10, rtol=1e-10)


def test_single_data_without_batch_vector(molecules: list[Data]) -> None:
    encoder = tiny_encoder()
    single = Data(z=molecules[0].z, pos=molecules[0].pos)
    out = encoder(single)
    torch.testing.assert_close(out.graph, encoder(as_batch(molecules[:1], torch.float64)).graph)


def energy_and_forces(
    encoder: EquivariantTransformer, head: EquivariantScalarHead, batch: Batch
) -> tuple[torch.Tensor, torch.Tensor]:
    pos = batch.pos.detach().requires_grad_(True)
    batch = batch.clone()
    batch.pos = pos
    energy = head(encoder(batch), batch)
    (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=True)
    return energy, -grad


@pytest.mark.parametrize(
    ("dtype", "layernorm_on_vec"),
    # Whitening divides by the square root of near-zero variances for planar and linear
    # molecules (here the quinone and the thiazoline), so float32 round-off in the forces
    # through it is amplified well past 1e-3: whitened forces are checked in float64 only.
    [(torch.float64, None), (torch.float32, None), (torch.float64, "whitened")],
)
def test_forces_finite_and_equivariant(
    molecules: list[Data], dtype: torch.dtype, layernorm_on_vec: str | None
) -> None:
    encoder = tiny_encoder(dtype, layernorm_on_vec=layernorm_on_vec)
    torch.manual_seed(1)
    head = EquivariantScalarHead(32).to(dtype)
    rotation = fixed_rotation()
    batch = as_batch(molecules, dtype)
    energy, forces = energy_and_forces(encoder, head, batch)
    energy_moved, forces_moved = energy_and_forces(encoder, head, moved(batch, rotation))
    tol = TOLERANCE[dtype]
    assert torch.isfinite(forces).all() and forces.abs().max() > 1e-4
    torch.testing.assert_close(energy_moved, energy, atol=tol, rtol=tol)
    torch.testing.assert_close(forces_moved, rotate_vectors(forces, rotation), atol=tol, rtol=tol)
    # A force-matching loss needs the second derivative (parameters through the forces).
    (forces**2).sum().backward()
    grads = [p.grad for p in encoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("layernorm_on_vec", [None, "whitened"])
def test_forces_match_finite_differences(layernorm_on_vec: str | None) -> None:
    encoder = tiny_encoder(layernorm_on_vec=layernorm_on_vec)
    torch.manual_seed(2)
    head = EquivariantScalarHead(32).double()
    batch = as_batch([small_molecule()], torch.float64)
    _, forces = energy_and_forces(encoder, head, batch)
    step = 1e-6
    numeric = torch.zeros_like(batch.pos)
    with torch.no_grad():
        for atom in range(batch.num_nodes):
            for axis in range(3):
                energies = []
                for sign in (1.0, -1.0):
                    shifted = batch.clone()
                    shifted.pos = batch.pos.clone()
                    shifted.pos[atom, axis] += sign * step
                    energies.append(head(encoder(shifted), shifted))
                numeric[atom, axis] = -(energies[0] - energies[1]).item() / (2 * step)
    torch.testing.assert_close(forces.detach(), numeric, atol=1e-6, rtol=1e-5)


def test_coincident_and_isolated_atoms_keep_gradients_finite(molecules: list[Data]) -> None:
    encoder = tiny_encoder(layernorm_on_vec="whitened")
    head = EquivariantScalarHead(32).double()
    molecule = molecules[1]
    pos = molecule.pos.clone()
    pos[1] = pos[0]  # two distinct atoms on top of each other
    pos[2] = pos[2] + 100.0  # an atom with no neighbour within the cutoff
    batch = as_batch([Data(z=molecule.z, pos=pos, smiles=molecule.smiles)], torch.float64)
    energy, forces = energy_and_forces(encoder, head, batch)
    assert torch.isfinite(energy).all() and torch.isfinite(forces).all()
    assert forces[2].abs().max() == 0  # nothing within reach, so no force
    (forces**2).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


@pytest.mark.parametrize(
    "variant",
    [
        {"distance_influence": "keys"},
        {"distance_influence": "values"},
        {"distance_influence": "none", "neighbor_embedding": False},
        {"rbf_type": "gauss", "rbf_trainable": False, "activation": "ssp"},
        {"cutoff_lower": 1.2, "vector_cutoff": True, "attn_activation": "tanh"},
    ],
    ids=["keys", "values", "none", "gauss-ssp", "lower-cutoff"],
)
def test_configuration_variants_stay_equivariant(
    molecules: list[Data], variant: dict[str, object]
) -> None:
    encoder = tiny_encoder(**variant)
    rotation = fixed_rotation()
    batch = as_batch(molecules, torch.float64)
    out, out_moved = encoder(batch), encoder(moved(batch, rotation))
    assert torch.isfinite(out.node).all() and out.vec.abs().max() > 1e-3
    torch.testing.assert_close(out_moved.node, out.node, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(
        out_moved.vec, rotate_vectors(out.vec, rotation), atol=1e-8, rtol=1e-8
    )


@pytest.mark.parametrize("vector_cutoff", [True, False])
def test_vector_cutoff_makes_energy_continuous_at_the_cutoff(vector_cutoff: bool) -> None:
    encoder = tiny_encoder(vector_cutoff=vector_cutoff)
    torch.manual_seed(3)
    head = EquivariantScalarHead(32).double()
    with torch.no_grad():
        for layer in encoder.attention_layers:
            # Non-zero value biases: what training produces, and what makes plain ET jump.
            layer.dv_proj.bias.normal_()
        energies = []
        for distance in (5.0 - 1e-7, 5.0 + 1e-7):
            pair = Data(
                z=torch.tensor([6, 8]),
                pos=torch.tensor([[0.0, 0.0, 0.0], [distance, 0.0, 0.0]], dtype=torch.float64),
            )
            energies.append(head(encoder(pair), pair))
    jump = (energies[0] - energies[1]).abs().item()
    assert (jump < 1e-5) if vector_cutoff else (jump > 1e-3)


def test_neighbour_limit_and_cutoff_change_the_graph(molecules: list[Data]) -> None:
    batch = as_batch(molecules[-1:], torch.float64)
    full = tiny_encoder().build_edges(batch.pos, batch.batch)[0]
    limited = tiny_encoder(max_num_neighbors=3).build_edges(batch.pos, batch.batch)[0]
    short = tiny_encoder(cutoff_upper=2.0).build_edges(batch.pos, batch.batch)[0]
    n = batch.num_nodes
    # One self-loop per atom plus neighbours; each atom keeps at most 3 neighbours.
    assert limited.size(1) <= n + 3 * n < full.size(1)
    assert n < short.size(1) < full.size(1)
    assert torch.bincount(limited[1], minlength=n).max() <= 4


def test_dropped_neighbours_are_counted_and_warned_once(molecules: list[Data]) -> None:
    batch = as_batch(molecules, torch.float64)
    full = tiny_encoder(max_num_neighbors=None).build_edges(batch.pos, batch.batch)[0]
    n = batch.num_nodes
    within_cutoff = full.size(1) - n  # without the self-loops
    encoder = tiny_encoder(max_num_neighbors=4)
    with pytest.warns(UserWarning, match="max_num_neighbors=4 dropped") as record:
        edges = encoder.build_edges(batch.pos, batch.batch)[0]
    dropped = within_cutoff - (edges.size(1) - n)
    assert dropped > 0
    assert f"dropped {dropped} of {within_cutoff} neighbour edges" in str(record[0].message)
    assert (encoder.dropped_neighbour_edges, encoder.neighbour_edges) == (dropped, within_cutoff)
    # Once per run: a second batch counts but does not warn again.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder(batch)
    assert (encoder.dropped_neighbour_edges, encoder.neighbour_edges) == (
        2 * dropped,
        2 * within_cutoff,
    )
    # The default cap keeps every edge of these small molecules: no warning, zero dropped.
    default = tiny_encoder()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        default(batch)
    assert default.dropped_neighbour_edges == 0 and default.neighbour_edges == within_cutoff


def test_paper_size_defaults_and_parameter_count() -> None:
    encoder = EquivariantTransformer()
    assert encoder.out_dim == 256 and len(encoder.attention_layers) == 8
    assert encoder.attention_layers[0].num_heads == 8
    assert encoder.distance_expansion.num_rbf == 64
    assert encoder.cutoff_upper == 5.0
    assert sum(p.numel() for p in encoder.parameters()) == 6_519_936


def test_constructible_from_class_path() -> None:
    parser = jsonargparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--encoder", type=torch.nn.Module)
    config = parser.parse_object(
        {
            "encoder": {
                "class_path": "molssl.encoders.et.EquivariantTransformer",
                "init_args": {**TINY, "layernorm_on_vec": "whitened", "reduce": "mean"},
            }
        }
    )
    encoder = parser.instantiate(config).encoder
    assert isinstance(encoder, EquivariantTransformer)
    assert encoder.out_dim == 32 and encoder.reduce == "mean"
    assert encoder.out_norm_vec is not None
    with pytest.raises(jsonargparse.ArgumentError):
        parser.parse_object(
            {
                "encoder": {
                    "class_path": "molssl.encoders.et.EquivariantTransformer",
                    "init_args": {"distance_influence": "sideways"},
                }
            }
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden_channels": 30, "num_heads": 4}, "divisible"),
        ({"distance_influence": "sideways"}, "distance_influence"),
        ({"reduce": "max"}, "reduce"),
        ({"activation": "relu6"}, "activation"),
        ({"layernorm_on_vec": "batch"}, "layernorm_on_vec"),
        ({"rbf_type": "bessel"}, "rbf_type"),
        ({"cutoff_lower": 5.0, "cutoff_upper": 3.0}, "cutoff_upper"),
    ],
)
def test_bad_configuration_raises(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EquivariantTransformer(**{**TINY, **kwargs})


def test_bad_input_raises_clear_errors(molecules: list[Data]) -> None:
    encoder = tiny_encoder()
    molecule = molecules[0]
    with pytest.raises(ValueError, match="'pos'"):
        encoder(Data(z=molecule.z))
    with pytest.raises(ValueError, match="atomic numbers"):
        encoder(Data(z=molecule.z + 100, pos=molecule.pos))
    with pytest.raises(ValueError, match="shape"):
        encoder(Data(z=molecule.z, pos=molecule.pos[:-1]))
    with pytest.raises(ValueError, match="float32"):
        encoder(Data(z=molecule.z, pos=molecule.pos.float()))  # encoder is float64
    with pytest.raises(ValueError, match="no atoms"):
        encoder(Data(z=molecule.z[:0], pos=molecule.pos[:0]))
