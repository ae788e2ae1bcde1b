"""FinetuneModule on real molecules: statistics, losses, metrics by hand, forces, checks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch_geometric.data import Batch

from molssl.checkpoints import CheckpointError
from molssl.encoders import EquivariantTransformer, Graphormer
from molssl.modules.finetune import FinetuneModule
from tests.modules.finetune_fixtures import (
    TINY_ET_ARGS,
    DescriptorData,
    ForceFieldFrames,
    brute_force_auroc,
    mmff_frames,
)
from tests.modules.pretrain_fixtures import quiet_trainer


def tiny_et() -> EquivariantTransformer:
    return EquivariantTransformer(**TINY_ET_ARGS)


def collect(module: FinetuneModule, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions and targets over a loader, computed directly (the by-hand reference)."""
    module.eval()
    preds, targets = [], []
    with torch.no_grad():
        for batch in loader:
            preds.append(module(batch))
            targets.append(batch.y)
    return torch.cat(preds), torch.cat(targets)


# --- construction and data checks ---------------------------------------------------------------


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="task must be one of"):
        FinetuneModule(tiny_et(), task="ranking")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="head='equivariant'"):
        FinetuneModule(tiny_et(), task="energy_forces", head="mlp")
    with pytest.raises(ValueError, match="exactly 1 for energy_forces"):
        FinetuneModule(tiny_et(), task="energy_forces", num_tasks=2)
    with pytest.raises(ValueError, match="atomref"):
        FinetuneModule(tiny_et(), task="classification", atomref=True)
    with pytest.raises(ValueError, match="min_lr"):
        FinetuneModule(tiny_et(), lr=1e-4, min_lr=1e-3)
    with pytest.raises(ValueError, match="schedule"):
        FinetuneModule(tiny_et(), schedule="step")  # type: ignore[arg-type]


def test_num_tasks_and_task_type_must_match_the_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"2 task\(s\) \(logp, tpsa\).*num_tasks=1"):
        quiet_trainer(tmp_path, max_steps=1).fit(
            FinetuneModule(tiny_et(), num_tasks=1), DescriptorData(batch_size=8)
        )
    with pytest.raises(ValueError, match=r"task type is 'classification'.*'regression'"):
        quiet_trainer(tmp_path, max_steps=1).fit(
            FinetuneModule(tiny_et(), num_tasks=2),
            DescriptorData(task="classification", batch_size=8),
        )


# --- regression ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[FinetuneModule, Path]:
    root = tmp_path_factory.mktemp("regression")
    module = FinetuneModule(tiny_et(), num_tasks=2, lr=1e-3, warmup_steps=2)
    checkpoint = ModelCheckpoint(dirpath=root, monitor="val/rmse", mode="min", save_last=True)
    trainer = quiet_trainer(root, max_epochs=3, callbacks=[checkpoint], enable_checkpointing=True)
    trainer.fit(module, DescriptorData(batch_size=8))
    return module, root


def test_statistics_come_from_the_train_split(regression_run: tuple[FinetuneModule, Path]) -> None:
    module, _ = regression_run
    data = DescriptorData(batch_size=8)
    data.setup("fit")
    train = data.train_targets()
    for task in range(2):
        labelled = train[:, task][~torch.isnan(train[:, task])]
        assert module.target_mean[task].item() == pytest.approx(labelled.mean().item(), rel=1e-5)
        assert module.target_std[task].item() == pytest.approx(
            labelled.std(unbiased=False).item(), rel=1e-5
        )
    assert module.task_names == ["logp", "tpsa"]


def test_regression_loss_is_masked_mse_on_standardised_targets(
    regression_run: tuple[FinetuneModule, Path],
) -> None:
    module, _ = regression_run
    data = DescriptorData(batch_size=8)
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    module.eval()
    with torch.no_grad():
        loss, _, (pred, _) = module.compute_loss(batch, train=False)
        raw = module.head(module.encoder(batch), batch)
    assert torch.isnan(batch.y).any(), "the check needs a missing label"
    standardised = (batch.y - module.target_mean) / module.target_std
    mask = ~torch.isnan(standardised)
    assert loss.item() == pytest.approx(((raw - standardised)[mask] ** 2).mean().item(), rel=1e-5)
    torch.testing.assert_close(pred, raw * module.target_std + module.target_mean)


def test_test_metrics_equal_rmse_and_mae_by_hand(
    regression_run: tuple[FinetuneModule, Path], tmp_path: Path
) -> None:
    module, _ = regression_run
    data = DescriptorData(batch_size=3)
    (logged,) = quiet_trainer(tmp_path).test(module, data, verbose=False)
    preds, targets = collect(module, data.test_dataloader())
    rmse, mae = [], []
    for task, name in enumerate(["logp", "tpsa"]):
        mask = ~torch.isnan(targets[:, task])
        error = preds[mask, task] - targets[mask, task]
        rmse.append(error.pow(2).mean().sqrt().item())
        mae.append(error.abs().mean().item())
        assert logged[f"test/rmse/{name}"] == pytest.approx(rmse[-1], rel=1e-4)
        assert logged[f"test/mae/{name}"] == pytest.approx(mae[-1], rel=1e-4)
    assert logged["test/rmse"] == pytest.approx(sum(rmse) / 2, rel=1e-4)
    assert logged["test/mae"] == pytest.approx(sum(mae) / 2, rel=1e-4)


def test_checkpoint_carries_statistics_and_task_names(
    regression_run: tuple[FinetuneModule, Path],
) -> None:
    module, root = regression_run
    best = [p for p in root.glob("*.ckpt") if p.name != "last.ckpt"]
    assert len(best) == 1
    restored = FinetuneModule.load_from_checkpoint(best[0], encoder=tiny_et())
    torch.testing.assert_close(restored.target_mean, module.target_mean)
    torch.testing.assert_close(restored.target_std, module.target_std)
    assert restored.task_names == ["logp", "tpsa"]
    saved = torch.load(best[0], weights_only=True)
    assert saved["molssl"]["task"] == "regression" and saved["molssl"]["num_tasks"] == 2


def test_checkpoint_of_another_task_is_refused(
    regression_run: tuple[FinetuneModule, Path],
) -> None:
    _, root = regression_run
    with pytest.raises(CheckpointError, match="task"):
        FinetuneModule.load_from_checkpoint(
            root / "last.ckpt", encoder=tiny_et(), task="classification"
        )


# --- classification -----------------------------------------------------------------------------


def test_classification_masks_missing_labels_and_scores_auroc(tmp_path: Path) -> None:
    module = FinetuneModule(tiny_et(), task="classification", num_tasks=2, lr=1e-3)
    data = DescriptorData(task="classification", batch_size=8, split_fractions=(0.5, 0.25, 0.25))
    trainer = quiet_trainer(tmp_path, max_epochs=2)
    trainer.fit(module, data)
    batch = next(iter(data.val_dataloader()))
    module.eval()
    with torch.no_grad():
        loss, _, (logits, target) = module.compute_loss(batch, train=False)
    mask = ~torch.isnan(target)
    assert not mask.all()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[mask], target[mask])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)

    (logged,) = trainer.test(module, data, verbose=False)
    preds, targets = collect(module, data.test_dataloader())
    scores = [brute_force_auroc(preds[:, t], targets[:, t]) for t in range(2)]
    scored = [s for s in scores if not math.isnan(s)]
    assert scored, "the test split needs a task with both classes"
    assert logged["test/auroc"] == pytest.approx(sum(scored) / len(scored), rel=1e-5)
    assert logged["test/auroc_tasks"] == len(scored)


def test_a_2d_encoder_fine_tunes_with_the_mlp_head(tmp_path: Path) -> None:
    encoder = Graphormer(hidden_channels=16, num_layers=1, num_heads=2)
    module = FinetuneModule(encoder, task="classification", num_tasks=2, pool="encoder")
    trainer = quiet_trainer(tmp_path, max_steps=2, limit_val_batches=1)
    trainer.fit(module, DescriptorData(task="classification", batch_size=8))
    assert math.isfinite(trainer.callback_metrics["train/loss"].item())


# --- energies and forces ------------------------------------------------------------------------


def test_forces_are_minus_the_energy_gradient_and_rotate_with_the_molecule() -> None:
    torch.manual_seed(0)
    module = FinetuneModule(tiny_et(), task="energy_forces").double()
    batch = Batch.from_data_list(mmff_frames("CC(=O)O", num_frames=2, noise=0.05, seed=0))
    batch.pos = batch.pos.double()
    energy, forces = module.energy_and_forces(batch)
    assert not batch.pos.requires_grad, "the caller's batch is left as it was"
    step = 1e-5
    for atom, axis in [(0, 0), (3, 2), (9, 1)]:
        shifted = []
        for sign in (1, -1):
            moved = batch.clone()
            moved.pos[atom, axis] += sign * step
            shifted.append(module(moved).sum().item())
        numeric = -(shifted[0] - shifted[1]) / (2 * step)
        assert forces[atom, axis].item() == pytest.approx(numeric, rel=1e-5, abs=1e-7)
    rotation = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0]
    rotated = batch.clone()
    rotated.pos = batch.pos @ rotation.T
    energy_r, forces_r = module.energy_and_forces(rotated)
    torch.testing.assert_close(energy_r, energy)
    torch.testing.assert_close(forces_r, forces @ rotation.T)


def test_energy_forces_loss_weights_and_metrics_under_inference_mode(tmp_path: Path) -> None:
    module = FinetuneModule(tiny_et(), task="energy_forces", lr=1e-3)
    data = ForceFieldFrames(num_frames=30, batch_size=4)
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(module, data)
    # energy = sum_i (std * s_i + mean) with the per-atom statistics of the train frames.
    stats = data.target_statistics()
    torch.testing.assert_close(module.target_mean, stats["mean"])
    batch = next(iter(data.val_dataloader()))
    loss, parts, _ = module.compute_loss(batch, train=False)
    energy, forces = module.energy_and_forces(batch)
    e_mse = (energy.reshape(-1) - batch.energy.reshape(-1)).pow(2).mean()
    f_mse = (forces - batch.forces).pow(2).mean()
    assert parts["energy_loss"].item() == pytest.approx(e_mse.item(), rel=1e-5)
    assert loss.item() == pytest.approx((0.2 * e_mse + 0.8 * f_mse).item(), rel=1e-5)

    # Lightning evaluates under torch.inference_mode; forces still come out.
    (logged,) = trainer.test(module, data, verbose=False)
    e_err, f_err = [], []
    for batch in data.test_dataloader():
        energy, forces = module.energy_and_forces(batch)
        e_err.append((energy.reshape(-1) - batch.energy.reshape(-1)).abs())
        f_err.append((forces - batch.forces).abs().reshape(-1))
    assert logged["test/energy_mae"] == pytest.approx(torch.cat(e_err).mean().item(), rel=1e-4)
    assert logged["test/force_mae"] == pytest.approx(torch.cat(f_err).mean().item(), rel=1e-4)


# --- schedules, model selection and numerical faults --------------------------------------------


class RecordLR(Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        # The learning rate this optimiser step uses.
        self.lrs.append(optimizer.param_groups[0]["lr"])


@pytest.mark.parametrize("schedule", ["plateau", "constant", "cosine"])
def test_warm_up_then_schedule(schedule: str, tmp_path: Path) -> None:
    module = FinetuneModule(tiny_et(), num_tasks=2, lr=1e-3, warmup_steps=3, schedule=schedule)
    record = RecordLR()
    trainer = quiet_trainer(tmp_path, max_steps=6, callbacks=[record], limit_val_batches=1)
    trainer.fit(module, DescriptorData(batch_size=8))
    assert record.lrs[:2] == pytest.approx([1e-3 / 3, 2e-3 / 3])
    if schedule == "cosine":
        assert record.lrs[3] > record.lrs[4] > record.lrs[5]
    else:
        assert record.lrs[3:] == pytest.approx([1e-3] * 3)


class RecordGroupLRs(Callback):
    """Each step's learning rate of the encoder's and of the head's parameters."""

    def __init__(self) -> None:
        self.encoder: list[float] = []
        self.head: list[float] = []

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        encoder_ids = {id(p) for p in pl_module.encoder.parameters()}
        for group in optimizer.param_groups:
            in_encoder = {id(p) in encoder_ids for p in group["params"]}
            assert len(in_encoder) == 1, "a group mixes encoder and head parameters"
            (self.encoder if in_encoder.pop() else self.head).append(group["lr"])


@pytest.mark.parametrize("schedule", ["plateau", "constant", "cosine"])
def test_encoder_lr_scale_scales_the_whole_schedule_of_the_encoder(
    schedule: str, tmp_path: Path
) -> None:
    module = FinetuneModule(
        tiny_et(), num_tasks=2, lr=1e-3, encoder_lr_scale=0.1, warmup_steps=3,
        schedule=schedule, weight_decay=1e-5,
    )  # fmt: skip
    record = RecordGroupLRs()
    trainer = quiet_trainer(tmp_path, max_steps=6, callbacks=[record], limit_val_batches=1)
    trainer.fit(module, DescriptorData(batch_size=8))
    # Two groups each (decayed and exempt), every step; the encoder's always a tenth.
    assert len(record.encoder) == len(record.head) == 12
    assert record.encoder == pytest.approx([0.1 * lr for lr in record.head])
    assert record.head[:4] == pytest.approx([1e-3 / 3] * 2 + [2e-3 / 3] * 2)
    optimised = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert optimised == {id(p) for p in module.parameters() if p.requires_grad}
    with pytest.raises(ValueError, match="encoder_lr_scale"):
        FinetuneModule(tiny_et(), encoder_lr_scale=0.0)


def test_checkpoint_monitor_must_be_logged_and_its_mode_right(tmp_path: Path) -> None:
    for monitor, mode, match in [
        ("val/accuracy", "max", "does not log; use 'val/auroc'"),
        ("val/auroc", "min", "needs checkpoint.mode 'max'"),
    ]:
        module = FinetuneModule(tiny_et(), task="classification", num_tasks=2)
        checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor=monitor, mode=mode)
        trainer = quiet_trainer(
            tmp_path, max_steps=1, callbacks=[checkpoint], enable_checkpointing=True
        )
        with pytest.raises(ValueError, match=match):
            trainer.fit(module, DescriptorData(task="classification", batch_size=8))
    assert FinetuneModule(tiny_et(), task="classification").monitor == ("val/auroc", "max")
    assert FinetuneModule(tiny_et(), regression_metric="mae").monitor == ("val/mae", "min")


class InfiniteLabel(DescriptorData):
    """The descriptor data with every first label overflowed to +inf."""

    def _load(self):
        loaded = super()._load()
        for sample in loaded.data:
            sample.y[0, 0] = float("inf")
        return loaded


def test_a_non_finite_loss_is_skipped_and_counted(tmp_path: Path) -> None:
    module = FinetuneModule(tiny_et(), num_tasks=2, standardize=False, lr=1e-3)
    data = InfiniteLabel(batch_size=8)
    trainer = quiet_trainer(tmp_path, max_steps=2, limit_val_batches=0)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer.fit(module, data)
    assert trainer.callback_metrics["train/nonfinite_skipped"].item() == 2
    for name, value in module.state_dict().items():
        assert torch.equal(value, before[name]), name


class AtomrefData(DescriptorData):
    """Descriptor targets with per-element references for logP (QM9's (Z, T) layout)."""

    REFERENCE = {1: 0.1, 6: 0.3, 7: -0.5, 8: -0.4}

    def target_statistics(self) -> dict[str, torch.Tensor]:
        table = torch.zeros(10, 2)
        for z, value in self.REFERENCE.items():
            table[z, 0] = value
        stats = super().target_statistics()
        return {**stats, "mean": torch.tensor([0.5, 40.0]), "atomref": table}


def test_atomref_adds_per_element_references(tmp_path: Path) -> None:
    module = FinetuneModule(tiny_et(), num_tasks=2, head="equivariant", atomref=True)
    data = AtomrefData(batch_size=8)
    quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(module, data)
    batch = next(iter(data.val_dataloader()))
    module.eval()
    with torch.no_grad():
        raw = module.head(module.encoder(batch), batch)
        pred = module(batch)
    reference = torch.zeros(batch.num_graphs)
    for atom, graph in zip(batch.z.tolist(), batch.batch.tolist(), strict=True):
        reference[graph] += AtomrefData.REFERENCE.get(atom, 0.0)
    expected = raw * module.target_std + torch.tensor([0.5, 40.0])
    expected[:, 0] += reference
    torch.testing.assert_close(pred, expected)
    assert reference.abs().sum() > 0


def test_atomref_without_references_in_the_data_is_a_clear_error(tmp_path: Path) -> None:
    module = FinetuneModule(tiny_et(), num_tasks=2, atomref=True)
    with pytest.raises(ValueError, match="no 'atomref'"):
        quiet_trainer(tmp_path, max_steps=1).fit(module, DescriptorData(batch_size=8))


def test_predict_gives_probabilities_with_molecule_ids(tmp_path: Path) -> None:
    module = FinetuneModule(tiny_et(), task="classification", num_tasks=2)
    data = DescriptorData(task="classification", batch_size=8)
    data.setup("predict")
    outputs = quiet_trainer(tmp_path).predict(module, dataloaders=data.test_dataloader())
    batch = next(iter(data.test_dataloader()))
    module.eval()
    with torch.no_grad():
        expected = torch.sigmoid(module(batch))
    torch.testing.assert_close(outputs[0]["pred"], expected)
    assert torch.equal(outputs[0]["mol_id"], batch.mol_id)
