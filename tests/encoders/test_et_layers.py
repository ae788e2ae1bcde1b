"""ET building blocks: edge geometry, and the layers against dense all-pairs equations."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Data

from molssl.encoders.et import EquivariantTransformer
from molssl.encoders.et_layers import edge_geometry
from tests.encoders.molecules_3d import as_batch, nci_molecules

TINY = {"hidden_channels": 32, "num_layers": 2, "num_heads": 4, "num_rbf": 16}


@pytest.fixture(scope="module")
def molecules() -> list[Data]:
    return nci_molecules()


def test_edge_geometry_zero_vectors_have_zero_gradient() -> None:
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [3.0, 4.0, 0.0]], dtype=torch.float64)
    pos.requires_grad_(True)
    edge_index = torch.tensor([[1, 2, 0], [0, 0, 0]])
    distances, unit = edge_geometry(pos, edge_index)
    torch.testing.assert_close(distances.detach(), torch.tensor([0.0, 5.0, 0.0]).double())
    torch.testing.assert_close(unit[1].detach(), torch.tensor([0.6, 0.8, 0.0]).double())
    assert unit[0].abs().max() == 0 and unit[2].abs().max() == 0
    (grad,) = torch.autograd.grad(distances.sum() + unit.sum(), pos)
    assert torch.isfinite(grad).all()


def dense_reference(
    encoder: EquivariantTransformer, z: torch.Tensor, pos: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The published ET equations over all atom pairs of ONE molecule, as dense einsums.

    Shares the encoder's parameters; independent of its edge lists and scatter calls.
    """
    n, cutoff = z.numel(), encoder.cutoff_upper
    diff = pos[None, :, :] - pos[:, None, :]  # [i, j] = pos_j - pos_i
    dist = diff.norm(dim=-1)
    within = (dist < cutoff).to(pos.dtype)
    off_diagonal = within * (1 - torch.eye(n, dtype=pos.dtype))
    unit = diff / dist.masked_fill(dist == 0, 1.0)[..., None]
    rbf = encoder.distance_expansion(dist)
    envelope = 0.5 * (torch.cos(dist * torch.pi / cutoff) + 1.0) * within

    embed = encoder.neighbor_embedding
    weight = embed.distance_proj(rbf) * envelope[..., None]
    neighbours = torch.einsum("ij,ijd,jd->id", off_diagonal, weight, embed.embedding(z))
    x = embed.combine(torch.cat([encoder.embedding(z), neighbours], dim=1))
    vec = torch.zeros(n, 3, x.size(1), dtype=pos.dtype)
    for layer in encoder.attention_layers:
        h, hd, d = layer.num_heads, layer.head_dim, layer.hidden_channels
        normed = layer.layernorm(x)
        q = layer.q_proj(normed).reshape(n, h, hd)
        k = layer.k_proj(normed).reshape(n, h, hd)
        v = layer.v_proj(normed).reshape(n, h, 3 * hd)
        vec1, vec2, vec3 = torch.split(layer.vec_proj(vec), d, dim=-1)
        dk = layer.act(layer.dk_proj(rbf)).reshape(n, n, h, hd)
        dv = layer.act(layer.dv_proj(rbf)).reshape(n, n, h, 3 * hd)
        attn = layer.attn_activation((q[:, None] * k[None, :] * dk).sum(-1)) * envelope[..., None]
        s, gate_vec, gate_dir = torch.split(v[None, :] * dv, hd, dim=-1)
        m = torch.einsum("ij,ijh,ijhe->ihe", within, attn, s).reshape(n, d)
        vec_heads = vec.reshape(n, 3, h, hd)
        vec_sum = torch.einsum("ij,jche,ijhe->iche", within, vec_heads, gate_vec)
        vec_sum = vec_sum + torch.einsum("ij,ijc,ijhe->iche", within, unit, gate_dir)
        o1, o2, o3 = torch.split(layer.o_proj(m), d, dim=1)
        x = x + (vec1 * vec2).sum(dim=1) * o2 + o3
        vec = vec + vec3 * o1[:, None] + vec_sum.reshape(n, 3, d)
    return encoder.out_norm(x), vec


def test_matches_dense_all_pairs_reference(molecules: list[Data]) -> None:
    torch.manual_seed(0)
    encoder = EquivariantTransformer(**TINY).double()
    with torch.no_grad():
        # Biases start at zero; perturb every parameter so no term of the equations hides.
        for parameter in encoder.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    for molecule in molecules:
        out = encoder(as_batch([molecule], torch.float64))
        with torch.no_grad():
            node, vec = dense_reference(encoder, molecule.z, molecule.pos)
        torch.testing.assert_close(out.node, node, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(out.vec, vec, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("kwargs", [{}, {"vector_cutoff": True}, {"distance_influence": "keys"}])
def test_zero_vectors_shortcut_equals_the_full_layer(
    molecules: list[Data], kwargs: dict[str, object]
) -> None:
    """``vec=None`` (the first layer's zero vectors) skips work but not results or gradients."""
    torch.manual_seed(0)
    encoder = EquivariantTransformer(**TINY, **kwargs).double()
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    batch = as_batch(molecules, torch.float64)
    edge_index, distances, unit = encoder.build_edges(batch.pos, batch.batch)
    rbf = encoder.distance_expansion(distances)
    x = encoder.embedding(batch.z)
    layer = encoder.attention_layers[0]
    results = []
    for vec in (torch.zeros(x.size(0), 3, x.size(1), dtype=x.dtype), None):
        layer.zero_grad()
        dx, dvec = layer(x, vec, edge_index, distances, rbf.detach(), unit)
        (dx.sin().sum() + dvec.pow(2).sum()).backward(retain_graph=True)
        results.append((dx, dvec, {n: p.grad.clone() for n, p in layer.named_parameters()}))
    (dx, dvec, grads), (dx0, dvec0, grads0) = results
    torch.testing.assert_close(dx0, dx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dvec0, dvec, rtol=1e-12, atol=1e-12)
    assert grads0.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grads0[name], grad, rtol=1e-10, atol=1e-12, msg=name)


def test_encoder_with_and_without_the_zero_vector_shortcut(molecules: list[Data]) -> None:
    torch.manual_seed(0)
    encoder = EquivariantTransformer(**TINY).double()
    batch = as_batch(molecules, torch.float64)
    shortcut = encoder(batch)
    encoder.skip_zero_vectors = False
    full = encoder(batch)
    torch.testing.assert_close(shortcut.node, full.node, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(shortcut.vec, full.vec, rtol=1e-12, atol=1e-12)
