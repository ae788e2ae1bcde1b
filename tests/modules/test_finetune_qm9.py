"""FinetuneModule on QM9 (small raw files in the true format): mu and <R^2> heads, QM9's
free-atom references, and the optional denoising term of fine-tuning (Frad)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch_geometric.datasets import qm9 as pyg_qm9

from molssl.datamodules.qm9 import QM9DataModule
from molssl.datamodules.qm9_raw import HARTREE_TO_MEV
from molssl.encoders import EquivariantTransformer
from molssl.modules.atomref import QM9_FREE_ATOM_ENERGIES, qm9_atomref_table
from molssl.modules.finetune import FinetuneModule
from tests.datamodules.qm9_files import write_qm9_raw
from tests.modules.finetune_fixtures import TINY_ET_ARGS, DescriptorData, ForceFieldFrames
from tests.modules.pretrain_fixtures import quiet_trainer


@pytest.fixture(scope="module")
def qm9_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("qm9")
    write_qm9_raw(root, n=24)
    return root


def qm9_data(root: Path, cache: Path, targets: list[str], **kwargs: object) -> QM9DataModule:
    return QM9DataModule(
        root=str(root), targets=targets, cache_dir=str(cache), batch_size=6, **kwargs
    )


def tiny_module(**kwargs: object) -> FinetuneModule:
    torch.manual_seed(0)
    return FinetuneModule(EquivariantTransformer(**TINY_ET_ARGS), lr=1e-3, **kwargs)


def test_qm9_free_atom_energies_match_pyg() -> None:
    """Parity with the table PyG's QM9 (and so TorchMD-NET's Atomref prior) reads, in eV."""
    table = qm9_atomref_table(["U0", "U", "H", "G", "homo"], max_z=10)
    for row, pyg_index in enumerate((7, 8, 9, 10)):
        for column, z in enumerate((1, 6, 7, 8, 9)):
            mev = pyg_qm9.atomrefs[pyg_index][column] * 1000.0
            # PyG converted with a Hartree-to-eV factor of an older CODATA: 1e-8 relative.
            assert float(table[row, z]) == pytest.approx(mev, rel=2e-8)
    assert not table[4].any()  # homo has no reference
    assert not table[:, [0, 2, 3, 4, 5]].any()
    with pytest.raises(ValueError, match="free-atom energies"):
        qm9_atomref_table(["homo", "Cv"], max_z=10)


def test_qm9_atomref_and_the_residual_statistics(qm9_root: Path, tmp_path: Path) -> None:
    module = tiny_module(num_tasks=2, head="equivariant", atomref="qm9", regression_metric="mae")
    data = qm9_data(qm9_root, tmp_path, ["U0", "homo"])
    quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(module, data)
    train = [data.train_dataset[i] for i in range(len(data.train_dataset))]
    references = torch.tensor(
        [sum(QM9_FREE_ATOM_ENERGIES["U0"][int(z)] * HARTREE_TO_MEV for z in d.z) for d in train],
        dtype=torch.float64,
    )
    targets = torch.stack([d.y.reshape(-1).double() for d in train])
    residual = targets - torch.stack([references, torch.zeros_like(references)], dim=-1)
    torch.testing.assert_close(module.target_mean, residual.mean(0).float())
    torch.testing.assert_close(module.target_std, residual.std(0, unbiased=False).float())
    # U0's free-atom energies are close to the test file's per-element energies, so the residual
    # is small against U0 itself: the reference did its work.
    assert float(module.target_mean[0].abs()) < 0.05 * float(targets[:, 0].abs().mean())
    batch = next(iter(data.val_dataloader()))
    module.eval()
    with torch.no_grad():
        raw = module.head(module.encoder(batch), batch)
        pred = module(batch)
    by_hand = raw * module.target_std + module.target_mean
    for graph in range(batch.num_graphs):
        atoms = batch.z[batch.batch == graph].tolist()
        by_hand[graph, 0] += sum(QM9_FREE_ATOM_ENERGIES["U0"][z] * HARTREE_TO_MEV for z in atoms)
    torch.testing.assert_close(pred, by_hand, rtol=1e-6, atol=1e-2)


@pytest.mark.parametrize(("target", "head"), [("mu", "dipole"), ("r2", "spatial_extent")])
def test_property_heads_train_on_qm9(
    qm9_root: Path, tmp_path: Path, target: str, head: str
) -> None:
    module = tiny_module(head=head, regression_metric="mae")
    data = qm9_data(qm9_root, tmp_path, [target])
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_val_batches=1)
    trainer.fit(module, data)
    assert torch.isfinite(trainer.callback_metrics["val/mae"])
    targets = data.train_targets().reshape(-1)
    if head == "dipole":
        # A length is scaled by the targets' root mean square and not shifted.
        assert float(module.target_mean) == 0.0
        rms = float(targets.pow(2).mean().sqrt())
        assert float(module.target_std) == pytest.approx(rms, rel=1e-5)
    else:
        assert float(module.target_mean) == pytest.approx(float(targets.mean()), rel=1e-5)
    batch = next(iter(data.val_dataloader()))
    module.eval()
    with torch.no_grad():
        raw = module.head.head(module.encoder(batch), batch)
        torch.testing.assert_close(
            module(batch).reshape(-1), raw * module.target_std + module.target_mean
        )
    if head == "dipole":
        assert bool((module(batch) >= 0).all())


def test_property_heads_refuse_what_they_cannot_do() -> None:
    with pytest.raises(ValueError, match="one QM9 property"):
        tiny_module(head="dipole", num_tasks=2)
    with pytest.raises(ValueError, match="one QM9 property"):
        tiny_module(head="spatial_extent", task="classification")
    with pytest.raises(ValueError, match="sums no atomic energies"):
        tiny_module(head="dipole", atomref="qm9")
    with pytest.raises(ValueError, match="regression setting"):
        tiny_module(task="energy_forces", atomref="qm9")
    with pytest.raises(ValueError, match="atomref must be"):
        tiny_module(atomref="dft")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="denoise_weight"):
        tiny_module(denoise_weight=-0.1)


class RecordLogged(Callback):
    """Keeps the keys logged in training and in validation."""

    def __init__(self) -> None:
        self.train: set[str] = set()
        self.val: set[str] = set()

    def on_train_batch_end(self, trainer: Trainer, *args: object) -> None:
        self.train |= set(trainer.callback_metrics)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.val |= {k for k in trainer.callback_metrics if k.startswith("val/")}


@pytest.mark.parametrize("task", ["regression", "energy_forces"])
def test_denoising_term_adds_to_the_training_loss_only(tmp_path: Path, task: str) -> None:
    if task == "regression":
        data = DescriptorData(batch_size=8)
        kwargs: dict = {"num_tasks": 2, "head": "equivariant"}
    else:
        data = ForceFieldFrames(batch_size=8)
        kwargs = {"task": "energy_forces"}
    module = tiny_module(denoise_weight=0.1, denoise_sigma=0.005, **kwargs)
    record = RecordLogged()
    trainer = quiet_trainer(tmp_path, max_steps=2, limit_val_batches=1, callbacks=[record])
    trainer.fit(module, data)
    assert "train/denoise_loss" in record.train
    assert not any("denoise" in key for key in record.val)
    assert "train/denoise_loss" in module.metric_names("train")

    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    module.train()
    torch.manual_seed(5)
    loss, parts, _ = module.compute_loss(batch, train=True)
    assert set(parts) >= {"denoise_loss"}
    # The total is the task loss on the noised conformer plus 0.1 x the denoising MSE.
    torch.manual_seed(5)
    noisy = module.denoising.noised(batch)
    plain = module.denoising
    module.denoising = None
    task_loss, _, _ = module.compute_loss(noisy, train=True)
    module.denoising = plain
    torch.testing.assert_close(loss, task_loss + 0.1 * parts["denoise_loss"])
    assert noisy.pos is not batch.pos and float((noisy.pos - batch.pos).abs().max()) < 0.05
    # Gradients reach the noise head; validation uses the clean positions (no noise drawn).
    module.zero_grad()
    loss.backward()
    assert all(p.grad is not None for p in module.denoising.parameters())
    evaluation, eval_parts, _ = module.compute_loss(batch, train=False)
    assert "denoise_loss" not in eval_parts
    again, _, _ = module.compute_loss(batch, train=False)
    torch.testing.assert_close(evaluation, again)


@pytest.mark.parametrize("head_init", ["zero", "xavier"])
def test_equivariant_fine_tuning_starts_at_the_training_mean(
    qm9_root: Path, tmp_path: Path, head_init: str
) -> None:
    """``head_init="zero"`` (the default): before any step the model predicts every molecule's
    targets as the training split's mean; TorchMD-NET's Xavier start does not."""
    module = tiny_module(num_tasks=2, head="equivariant", head_init=head_init)
    data = qm9_data(qm9_root, tmp_path, ["homo", "gap"])
    data.setup("fit")
    module._set_statistics(data)
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        prediction = module(batch)
    mean = module.target_mean.expand_as(prediction)
    if head_init == "zero":
        torch.testing.assert_close(prediction, mean, rtol=0, atol=0)  # 0 * std + mean, exactly
    else:
        assert (prediction - mean).abs().max() > 0.1 * float(module.target_std.min())
