"""FragmentMask: whole BRICS fragments masked, ratio, hydrogens, loss, lazy head, errors."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from molssl.chem.features import NUM_ELEMENT_CLASSES, element_index
from molssl.encoders.base import EncoderOutput
from molssl.encoders.graphormer import Graphormer
from molssl.objectives.fragment_mask import FragmentMask, FragmentMaskView
from tests.conftest import read_nci_smiles
from tests.objectives.samples import collate, pretrain_sample


def samples(count: int, offset: int = 0) -> list[Data]:
    """Real NCI molecules (2D only) with fragment labels."""
    out = []
    for index, smiles in enumerate(read_nci_smiles(offset + count)[offset:], start=offset):
        out.append(pretrain_sample(smiles, mol_id=index, conformer=False))
    return out


def apply_view(objective: FragmentMask, data: Data) -> Data:
    (view,) = objective.views()
    return view(data)


def tiny_graphormer() -> Graphormer:
    return Graphormer(
        num_layers=1, num_heads=2, hidden_channels=16, attention_dropout=0.0, activation_dropout=0.0
    )


def test_masks_whole_fragments_with_the_right_count() -> None:
    objective = FragmentMask()
    torch.manual_seed(0)
    checked = 0
    for data in samples(40):
        out = apply_view(objective, data)
        mask, fragment = out.atom_mask, data.fragment
        masked_labels = torch.unique(fragment[mask])
        # Every atom of a chosen fragment is masked, and nothing else.
        assert torch.equal(mask, torch.isin(fragment, masked_labels))
        num_fragments = int(torch.unique(fragment).numel())
        expected = max(1, math.floor(0.2 * num_fragments + 0.5))
        assert masked_labels.numel() == expected
        assert mask.any()
        checked += num_fragments > 1
    assert checked >= 20


def test_each_fragment_is_masked_with_frequency_k_over_f() -> None:
    # NCI 17: a diaryl ether with 7 BRICS fragments.
    data = samples(1, offset=17)[0]
    num_fragments = int(torch.unique(data.fragment).numel())
    assert num_fragments == 7
    objective = FragmentMask(mask_ratio=0.3)  # k = round(2.1) = 2
    torch.manual_seed(1)
    draws = 3000
    counts = torch.zeros(num_fragments)
    atoms_masked = 0.0
    for _ in range(draws):
        mask = objective.choose_mask(data)
        counts += torch.isin(torch.arange(num_fragments), torch.unique(data.fragment[mask]))
        atoms_masked += mask.float().mean().item()
    frequency = counts / draws
    # Binomial standard error sqrt(p(1-p)/n) ~ 0.0076 at p = 2/7; 0.04 is > 5 of them.
    assert torch.allclose(frequency, torch.full_like(frequency, 2 / 7), atol=0.04)
    # Atom-level ratio on average: each fragment's share of atoms times its frequency.
    sizes = torch.bincount(data.fragment, minlength=num_fragments).float()
    expected_atom_ratio = (sizes * 2 / 7).sum().item() / data.num_nodes
    assert abs(atoms_masked / draws - expected_atom_ratio) < 0.03


def test_hydrogens_are_masked_with_their_heavy_atom() -> None:
    objective = FragmentMask(mask_ratio=0.5)
    torch.manual_seed(2)
    hydrogens_seen = 0
    for data in samples(30):
        out = apply_view(objective, data)
        src, dst = data.edge_index
        is_h_bond = data.z[src] == 1
        assert torch.equal(out.atom_mask[src[is_h_bond]], out.atom_mask[dst[is_h_bond]])
        hydrogens_seen += int((out.atom_mask & (data.z == 1)).sum())
    assert hydrogens_seen > 0


def test_single_fragment_molecule_masks_everything() -> None:
    data = samples(1)[0]  # NCI 0: a quinone, one BRICS fragment
    assert int(torch.unique(data.fragment).numel()) == 1
    assert bool(apply_view(FragmentMask(), data).atom_mask.all())


def test_choose_mask_is_the_one_place_the_view_asks() -> None:
    class FirstAtomOnly(FragmentMask):
        def choose_mask(self, data: Data) -> Tensor:
            mask = torch.zeros(int(data.num_nodes), dtype=torch.bool)
            mask[0] = True
            return mask

    out = apply_view(FirstAtomOnly(), samples(1, offset=17)[0])
    assert out.atom_mask.nonzero().flatten().tolist() == [0]


@pytest.mark.parametrize(
    ("choose", "message"),
    [
        (lambda data: torch.zeros(int(data.num_nodes), dtype=torch.bool), "masked no atom"),
        (lambda data: torch.ones(int(data.num_nodes)), "bool tensor"),
    ],
)
def test_view_rejects_bad_masks(choose: Callable[[Data], Tensor], message: str) -> None:
    objective = FragmentMask()
    objective.choose_mask = choose  # type: ignore[method-assign]
    with pytest.raises(ValueError, match=message):
        apply_view(objective, samples(1)[0])


def test_two_mask_views_on_one_sample_are_refused() -> None:
    data = apply_view(FragmentMask(), samples(1, offset=17)[0])
    with pytest.raises(ValueError, match="two masking views"):
        apply_view(FragmentMask(name="again"), data)


def test_view_does_not_modify_the_sample_and_draws_afresh() -> None:
    data = samples(1, offset=17)[0]
    view = FragmentMaskView(FragmentMask(mask_ratio=0.2))
    torch.manual_seed(3)
    masks = {tuple(view(data).atom_mask.tolist()) for _ in range(30)}
    assert len(masks) > 1
    assert getattr(data, "atom_mask", None) is None


def test_missing_fragment_labels_are_a_clear_error() -> None:
    data = samples(1)[0].clone()
    del data.fragment
    with pytest.raises(ValueError, match="fragment"):
        FragmentMask().choose_mask(data)


def masked_batch(count: int = 6, seed: int = 0) -> tuple[FragmentMask, Batch]:
    objective = FragmentMask()
    torch.manual_seed(seed)
    batch = collate([apply_view(objective, data) for data in samples(count, offset=16)])
    return objective, batch


def test_loss_is_finite_and_reaches_head_and_encoder() -> None:
    objective, batch = masked_batch()
    encoder = tiny_graphormer()
    result = objective.loss(batch, {"2d": encoder(batch)})
    assert result.loss.dim() == 0 and torch.isfinite(result.loss)
    # An untrained head is near uniform over the element classes.
    assert abs(result.loss.item() - math.log(NUM_ELEMENT_CLASSES)) < 1.0
    result.loss.backward()
    for module in (objective.head, encoder):
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
    # The masked atoms' input embedding is the learned mask token: it gets a gradient.
    assert encoder.mask_embedding is not None and encoder.mask_embedding.grad.abs().sum() > 0
    num_masked = int(batch.atom_mask.sum())
    assert result.batch_size == num_masked
    assert result.metrics["masked_atoms"].item() == pytest.approx(num_masked / batch.num_graphs)
    assert 0.0 <= result.metrics["accuracy"].item() <= 1.0


def test_loss_matches_a_per_atom_reference() -> None:
    objective, batch = masked_batch(seed=4)
    node = torch.randn(batch.num_nodes, 12)
    result = objective.loss(batch, {"2d": EncoderOutput(node=node, graph=torch.zeros(1, 12))})
    losses, correct = [], []
    for atom in batch.atom_mask.nonzero().flatten().tolist():
        logits = objective.head(node[atom : atom + 1])[0]
        target = int(element_index(batch.z[atom : atom + 1]))
        losses.append(torch.logsumexp(logits, 0) - logits[target])
        correct.append(float(logits.argmax() == target))
    assert result.loss.item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-5)
    assert result.metrics["accuracy"].item() == pytest.approx(sum(correct) / len(correct))


def test_head_learns_masked_elements_on_a_fixed_batch() -> None:
    objective, batch = masked_batch(seed=5)
    torch.manual_seed(0)
    with torch.no_grad():
        output = tiny_graphormer()(batch)
    optimizer = torch.optim.Adam(objective.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = objective.loss(batch, {"2d": output}).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]


def test_missing_atom_mask_says_the_view_did_not_run() -> None:
    batch = collate(samples(2, offset=16))
    output = EncoderOutput(node=torch.zeros(batch.num_nodes, 8), graph=torch.zeros(2, 8))
    with pytest.raises(ValueError, match="view did not run"):
        FragmentMask().loss(batch, {"2d": output})


def test_lazy_head_width_and_explicit_width() -> None:
    objective, batch = masked_batch()
    assert not objective.head.is_materialized
    optimizer = torch.optim.SGD(objective.parameters(), lr=0.1)
    output = EncoderOutput(node=torch.randn(batch.num_nodes, 24), graph=torch.zeros(1, 24))
    objective.loss(batch, {"2d": output})
    assert objective.head.module[0].weight.shape == (24, 24)
    assert objective.head.module[-1].weight.shape == (NUM_ELEMENT_CLASSES, 24)
    # The optimiser built before the first batch holds the parameters that were built.
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in objective.parameters()}
    sized = FragmentMask(hidden_channels=24)
    assert sized.head.is_materialized
    assert sized.head.module[0].weight.shape == (24, 24)


def test_state_dict_round_trip_into_a_lazy_objective() -> None:
    objective, batch = masked_batch()
    node = torch.randn(batch.num_nodes, 16)
    output = EncoderOutput(node=node, graph=torch.zeros(batch.num_graphs, 16))
    expected = objective.loss(batch, {"2d": output}).loss
    restored = FragmentMask()
    restored.load_state_dict(objective.state_dict())
    assert restored.loss(batch, {"2d": output}).loss.item() == pytest.approx(expected.item())


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5])
def test_rejects_bad_mask_ratio(ratio: float) -> None:
    with pytest.raises(ValueError, match="mask_ratio"):
        FragmentMask(mask_ratio=ratio)


def test_defaults_and_name() -> None:
    objective = FragmentMask(weight=0.5)
    assert objective.mask_ratio == 0.2
    assert objective.name == "fragment_mask"
    assert objective.requires == ("2d",)
    assert objective.weight == 0.5
