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
