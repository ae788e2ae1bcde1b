"""AtomMask: the AttrMask baseline as a one-method subclass of FragmentMask."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch_geometric.data import Data

from molssl.encoders.base import EncoderOutput
from molssl.objectives.atom_mask import AtomMask
from molssl.objectives.fragment_mask import FragmentMask, FragmentMaskView
from tests.conftest import read_nci_smiles
from tests.objectives.samples import collate, pretrain_sample


def sample(index: int) -> Data:
    return pretrain_sample(read_nci_smiles(index + 1)[index], mol_id=index, conformer=False)


def test_overrides_only_choose_mask() -> None:
    overridden = {
        name
        for name, value in vars(AtomMask).items()
        if callable(value) or isinstance(value, (property, staticmethod, classmethod))
    }
    assert overridden == {"choose_mask"}
    assert AtomMask.__mro__[1] is FragmentMask
    # The whole ablation stays small: it is the worked example of writing one.
    source = inspect.getsource(AtomMask)
    code_lines = [
        line for line in source.splitlines() if line.strip() and not line.strip().startswith('"')
    ]
    assert len(code_lines) <= 20


def test_defaults_name_and_view() -> None:
    objective = AtomMask()
    assert objective.mask_ratio == 0.15
    assert AtomMask(mask_ratio=0.3).mask_ratio == 0.3
    assert FragmentMask().mask_ratio == 0.2
    assert objective.name == "atom_mask"
    assert objective.requires == ("2d",)
    (view,) = objective.views()
    assert isinstance(view, FragmentMaskView) and view.objective is objective


def test_each_atom_is_masked_with_probability_mask_ratio() -> None:
    data = sample(16)  # 60 atoms
    objective = AtomMask()
    torch.manual_seed(0)
    draws = 2000
    frequency = torch.stack([objective.choose_mask(data) for _ in range(draws)]).float().mean(0)
    # Per-atom binomial standard error ~ 0.008 at p = 0.15; the forced extra atom when none
    # is drawn happens with probability 0.85^60 ~ 6e-5, invisible here.
    assert torch.allclose(frequency, torch.full_like(frequency, 0.15), atol=0.045)
    assert abs(frequency.mean().item() - 0.15) < 0.005


def test_at_least_one_atom_even_at_a_tiny_ratio() -> None:
    data = sample(15)  # 12 atoms
    objective = AtomMask(mask_ratio=1e-6)
    torch.manual_seed(1)
    counts = [int(objective.views()[0](data).atom_mask.sum()) for _ in range(200)]
    assert set(counts) == {1}


def test_masks_cut_across_fragments() -> None:
    # Unlike FragmentMask, atoms are drawn singly: some draw masks part of a fragment.
    data = sample(17)
    objective = AtomMask(mask_ratio=0.3)
    torch.manual_seed(2)
    partial = 0
    for _ in range(20):
        mask = objective.choose_mask(data)
        whole = torch.isin(data.fragment, torch.unique(data.fragment[mask]))
        partial += int(not torch.equal(mask, whole))
    assert partial > 0


def test_inherited_loss_runs_on_its_masks() -> None:
    objective = AtomMask()
    torch.manual_seed(3)
    (view,) = objective.views()
    batch = collate([view(sample(index)) for index in (16, 17, 18)])
    node = torch.randn(batch.num_nodes, 8, requires_grad=True)
    result = objective.loss(batch, {"2d": EncoderOutput(node=node, graph=torch.zeros(3, 8))})
    assert torch.isfinite(result.loss)
    result.loss.backward()
    assert node.grad is not None
    # Only masked atoms receive a gradient.
    touched = node.grad.abs().sum(-1) > 0
    assert torch.equal(touched, batch.atom_mask)
    assert result.batch_size == int(batch.atom_mask.sum())


@pytest.mark.parametrize("ratio", [0.0, 2.0])
def test_rejects_bad_ratio(ratio: float) -> None:
    with pytest.raises(ValueError, match="mask_ratio"):
        AtomMask(mask_ratio=ratio)
