"""Fine-tuning metrics and losses against references written out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from rdkit import Chem
from rdkit.Chem import Crippen, rdMolDescriptors

from molssl.modules.finetune_losses import masked_bce, masked_mse
from molssl.modules.finetune_metrics import (
    MaskedMultitaskAUROC,
    MaskedRegressionErrors,
    TaskMetrics,
)
from tests.modules.finetune_fixtures import brute_force_auroc


@pytest.fixture(scope="module")
def descriptor_table(nci_smiles: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (B, 3) and labels (B, 3) from real molecules, with missing labels.

    Task 0: is logP above 2, scored by logP itself rounded (ties); task 1: has a ring, scored
    by TPSA; task 2: labelled only for the first molecules, all of one class (unscorable).
    """
    mols = [Chem.MolFromSmiles(s) for s in nci_smiles[:120]]
    logp = torch.tensor([Crippen.MolLogP(m) for m in mols])
    tpsa = torch.tensor([rdMolDescriptors.CalcTPSA(m) for m in mols])
    rings = torch.tensor([float(m.GetRingInfo().NumRings() > 0) for m in mols])
    scores = torch.stack(
        [logp.round(), tpsa, torch.randn(len(mols), generator=torch.Generator().manual_seed(0))], 1
    )
    labels = torch.stack([(logp > 2).float(), rings, torch.full_like(logp, float("nan"))], 1)
    labels[::5, 0] = float("nan")
    labels[:10, 2] = 1.0
    return scores, labels


def test_auroc_matches_the_pairwise_count_and_skips_one_class_tasks(
    descriptor_table: tuple[torch.Tensor, torch.Tensor],
) -> None:
    scores, labels = descriptor_table
    metric = MaskedMultitaskAUROC(num_tasks=3)
    for start in range(0, len(scores), 7):  # uneven batches
        metric.update(scores[start : start + 7], labels[start : start + 7])
    expected = [brute_force_auroc(scores[:, t], labels[:, t]) for t in range(3)]
    assert math.isnan(expected[2]) and not any(math.isnan(e) for e in expected[:2])
    per_task = metric.per_task()
    assert per_task[:2].tolist() == pytest.approx(expected[:2], rel=1e-6)
    assert math.isnan(per_task[2].item())
    assert metric.compute().item() == pytest.approx(sum(expected[:2]) / 2, rel=1e-6)
    assert metric.last_num_scored_tasks == 2


def test_auroc_without_any_scorable_task_is_nan() -> None:
    metric = MaskedMultitaskAUROC(num_tasks=1)
    metric.update(torch.tensor([[0.3], [0.9]]), torch.tensor([[1.0], [1.0]]))
    assert math.isnan(metric.compute().item())
    assert metric.last_num_scored_tasks == 0


def test_auroc_rejects_labels_other_than_0_1_nan() -> None:
    metric = MaskedMultitaskAUROC(num_tasks=1)
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        metric.update(torch.tensor([[0.3]]), torch.tensor([[2.0]]))
    with pytest.raises(ValueError, match=r"shape \(batch, 1\)"):
        metric.update(torch.tensor([0.3]), torch.tensor([1.0]))


def test_regression_errors_per_target_over_labelled_entries(
    descriptor_table: tuple[torch.Tensor, torch.Tensor],
) -> None:
    scores, labels = descriptor_table
    preds = scores[:, :2] / 10
    targets = torch.where(torch.isnan(labels[:, :2]), labels[:, :2], scores[:, :2].flip(0) / 10)
    metric = MaskedRegressionErrors(num_tasks=2)
    for start in range(0, len(preds), 11):
        metric.update(preds[start : start + 11], targets[start : start + 11])
    result = metric.compute()
    for task in range(2):
        mask = ~torch.isnan(targets[:, task])
        error = (preds[mask, task] - targets[mask, task]).double()
        assert result["rmse"][task].item() == pytest.approx(
            error.pow(2).mean().sqrt().item(), rel=1e-6
        )
        assert result["mae"][task].item() == pytest.approx(error.abs().mean().item(), rel=1e-6)
        assert result["count"][task].item() == mask.sum().item()


def test_task_metrics_names_are_what_compute_returns() -> None:
    names = ["homo", "lumo"]
    cases = {
        "classification": (
            torch.tensor([[0.1, 0.7], [0.9, 0.2]]),
            torch.tensor([[0.0, 1.0], [1.0, 0.0]]),
        ),
        "regression": (
            torch.tensor([[0.1, 0.7], [0.9, 0.2]]),
            torch.tensor([[0.0, 1.0], [1.0, float("nan")]]),
        ),
        "energy_forces": (torch.ones(2, 1), torch.zeros(2, 1), torch.ones(5, 3), torch.zeros(5, 3)),
    }
    for task, inputs in cases.items():
        metrics = TaskMetrics(task, 1 if task == "energy_forces" else 2)
        assert metrics.compute("val", names) == {}, "nothing seen yet: nothing to log"
        metrics.update("val", *inputs)
        values = metrics.compute("val", names)
        assert sorted(values) == sorted(metrics.names("val", names)), task
        assert metrics.compute("val", names) == {}, "compute resets"
    metrics = TaskMetrics("energy_forces", 1)
    metrics.update("test", *cases["energy_forces"])
    assert metrics.compute("test", ["energy"]) == {
        "test/energy_mae": pytest.approx(1.0),
        "test/force_mae": pytest.approx(1.0),
    }


def test_masked_losses_ignore_missing_labels_and_empty_batches() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]], requires_grad=True)
    target = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    mask = ~torch.isnan(target)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[mask], target[mask])
    assert masked_bce(logits, target).item() == pytest.approx(expected.item())
    assert masked_mse(logits, target).item() == pytest.approx(
        ((logits[mask] - target[mask]) ** 2).mean().item()
    )
    empty = masked_mse(logits, torch.full_like(target, float("nan")))
    empty.backward()
    assert empty.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


def test_confident_logits_keep_their_order() -> None:
    # float32 sigmoid saturates to 1.0 above ~17: logits must not be turned into ties.
    metric = MaskedMultitaskAUROC(num_tasks=1)
    metric.update(torch.tensor([[20.0], [25.0], [30.0]]), torch.tensor([[0.0], [0.0], [1.0]]))
    assert metric.compute().item() == 1.0
