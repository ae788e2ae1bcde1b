"""``FinetuneModule``: one encoder + a task head, trained on labelled molecules.

UniCorn's fine-tuning protocol (paper Section 4 and Appendix C.3): keep the pre-trained 3D
encoder, put a head on it, and train everything on the downstream task.

* ``task="classification"`` (MoleculeNet BBBP, Tox21, ...): a 2-layer MLP on the pooled molecule
  embedding gives one logit per task; binary cross-entropy over the labelled entries only (NaN
  labels are masked); metric ROC-AUC averaged over the tasks with both classes in the split.
* ``task="regression"`` (ESOL, FreeSolv, Lipophilicity with the MLP head; QM9 with
  ``head="equivariant"``, TorchMD-NET's output network, and for QM9's mu and <R^2> the heads
  ``"dipole"`` and ``"spatial_extent"`` that build them from positions, see
  :mod:`molssl.encoders.property_heads`): MSE on standardised targets ``(y - mean) / std``;
  predictions and metrics (RMSE, MAE per target) in the targets' units. The dipole head's
  output is a length, so its targets are scaled by their root mean square and not shifted.
* ``task="energy_forces"`` (MD17, MD22): an equivariant energy head, forces
  ``F = -dE/dpos`` (with ``create_graph`` in training so the force loss trains the weights);
  loss ``energy_weight * MSE(E) + force_weight * MSE(F)`` in the data's units (0.2 / 0.8 in
  the paper); metrics energy MAE and force MAE.

**Target statistics** come from ``trainer.datamodule.target_statistics()`` (train split only) in
``setup("fit")`` and are stored as buffers, so a checkpoint carries them and ``molssl test
--ckpt`` de-standardises with the training statistics. For ``energy_forces`` they are the mean
and std of the energy per atom: ``E = sum_i (std * s_i + mean)``. With ``atomref=True`` the
datamodule's per-element reference values (``"atomref"``, e.g. QM9's train-split fit) are added
per atom, and its mean and std are those of the residual; ``atomref="qm9"`` adds QM9's
free-atom energies instead (U0, U, H, G; TorchMD-NET's ``Atomref`` prior, see
:mod:`molssl.modules.atomref`), with the residual's statistics computed here over the
datamodule's ``train_dataset``.

**Denoising while fine-tuning** (Frad): ``denoise_weight > 0`` noises the training conformers by
``denoise_sigma`` Å and adds ``denoise_weight`` times the MSE of a noise-predicting head
(:mod:`molssl.modules.finetune_denoise`), logged as ``train/denoise_loss``.

**Initialisation** from pre-training: ``init_from: PATH`` loads the encoder's tensors from a
:class:`~molssl.modules.PretrainModule` checkpoint (prefix ``init_from_prefix``, default
``encoder_3d.``) at the start of fitting, and logs what was loaded, what is new and what was
unused (:mod:`molssl.modules.init_from`). It is not re-read by ``validate``/``test``, so a
fine-tuned checkpoint evaluates without the pre-training file.

**Model selection**: :attr:`FinetuneModule.monitor` names the validation metric and its mode
(``val/auroc`` max; ``val/rmse`` or ``val/mae`` min; ``val/force_mae`` min); configs set
``checkpoint.monitor``/``checkpoint.mode`` to it, and fitting stops at once with a clear error
when a ``ModelCheckpoint`` monitors a metric this module does not log or uses the wrong mode.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch_geometric.data import Batch

from molssl.encoders.base import Encoder, EncoderOutput
from molssl.modules.energy_forces import energy_and_forces, energy_force_losses, per_molecule_sum
from molssl.modules.finetune_checkpoints import FinetuneCheckpoints
from molssl.modules.finetune_denoise import FinetuneDenoising
from molssl.modules.finetune_logging import FinetuneLogging
from molssl.modules.finetune_losses import masked_bce, masked_mse
from molssl.modules.finetune_metrics import TaskMetrics
from molssl.modules.finetune_optim import FinetuneOptimization, Schedule
from molssl.modules.finetune_settings import TASKS, atomref_mode, check_task_settings
from molssl.modules.finetune_stats import checked_task_names, read_task_statistics
from molssl.modules.guards import NonFiniteLossGuard
from molssl.modules.init_from import DEFAULT_PREFIX, InitReport, load_encoder_weights
from molssl.modules.pretrain import _hparams_come_from_config
from molssl.modules.task_heads import build_task_head

__all__ = ["TASKS", "FinetuneModule"]

Task = Literal["classification", "regression", "energy_forces"]
_DEFAULT_MAX_Z = 100


class FinetuneModule(FinetuneCheckpoints, FinetuneLogging, FinetuneOptimization):
    """Fine-tuning of an encoder on a labelled task (see the module docstring).

    Args:
        encoder: Any molssl encoder (UniCorn: :class:`~molssl.encoders.EquivariantTransformer`).
        task: ``"classification"``, ``"regression"`` or ``"energy_forces"``; must match the
            datamodule's ``task_type``. ``None``: the data's, when ``molssl fit`` builds the
            module from a config (:mod:`molssl.task_link`), else ``"regression"``.
        num_tasks: Number of targets ``T``; must match the datamodule's ``task_names``
            (1 for ``energy_forces``). ``None``: the data's under ``molssl fit``, else 1.
        init_from: Pre-training checkpoint to initialise the encoder from (``None``: scratch).
        init_from_prefix: Where the encoder's tensors sit in that checkpoint.
        head: ``"mlp"`` (2-layer MLP on the pooled embedding), ``"equivariant"``
            (TorchMD-NET's output network), or for one regression target ``"dipole"`` (QM9
            mu) or ``"spatial_extent"`` (QM9 <R^2>); default ``"mlp"``, and ``"equivariant"``
            (the only choice) for ``energy_forces``.
        pool: Pooling of atom features: ``"sum"``, ``"mean"`` or ``"encoder"`` (the encoder's
            own ``graph``; MLP head only); default ``"mean"`` for the MLP head, ``"sum"`` for
            the equivariant one.
        head_hidden_dim: Hidden width of the MLP head (default the encoder's ``out_dim``).
        head_dropout: Dropout of the MLP head.
        head_activation: Activation of the head.
        head_init: The equivariant head's last layer: ``"zero"`` (the model starts as the
            training mean) or ``"xavier"`` (TorchMD-NET's; see
            :class:`~molssl.modules.task_heads.EquivariantScalarsHead`).
        standardize: Use the training targets' mean and std (regression, energy_forces).
        atomref: Add per-element reference values: ``True`` the datamodule's (its
            statistics' ``"atomref"``), ``"qm9"`` QM9's free-atom energies, ``False`` none.
        energy_weight: Weight of the energy MSE (``energy_forces``; paper 0.2).
        force_weight: Weight of the force MSE (``energy_forces``; paper 0.8).
        regression_metric: ``"rmse"`` (MoleculeNet) or ``"mae"`` (QM9): the regression metric
            that :attr:`monitor` selects checkpoints by.
        denoise_weight: Weight of the denoising term in training (0: none; Frad 0.1 on MD17,
            0.2 on QM9).
        denoise_sigma: Standard deviation of its coordinate noise in Å (Frad: 0.005).
        lr, betas, weight_decay, schedule, warmup_steps, max_steps, min_lr, plateau_factor,
            plateau_patience: The optimiser and its schedule; see
            :class:`~molssl.modules.finetune_optim.FinetuneOptimization`.
        encoder_lr_scale: The encoder's learning rate as a fraction of ``lr`` (the head's);
            values below 1 move pre-trained weights less than the new head. It scales the
            whole schedule (warm-up, cosine, plateau reductions) of the encoder's parameters.
        max_consecutive_nonfinite: Non-finite training losses in a row that stop the run
            (:class:`~molssl.modules.guards.NonFiniteLossGuard`).

    Raises:
        ValueError: An unknown task, head or pool, a head the task cannot use, ``num_tasks``
            out of range, or bad optimiser settings.
    """

    target_mean: Tensor
    target_std: Tensor
    atomref_table: Tensor

    def __init__(
        self,
        encoder: Encoder,
        task: Task | None = None,
        num_tasks: int | None = None,
        init_from: str | None = None,
        init_from_prefix: str = DEFAULT_PREFIX,
        head: Literal["mlp", "equivariant", "dipole", "spatial_extent"] | None = None,
        pool: Literal["sum", "mean", "encoder"] | None = None,
        head_hidden_dim: int | None = None,
        head_dropout: float = 0.0,
        head_activation: str = "silu",
        head_init: Literal["zero", "xavier"] = "zero",
        standardize: bool = True,
        atomref: bool | Literal["qm9"] = False,
        energy_weight: float = 0.2,
        force_weight: float = 0.8,
        regression_metric: Literal["rmse", "mae"] = "rmse",
        denoise_weight: float = 0.0,
        denoise_sigma: float = 0.005,
        lr: float = 1e-4,
        encoder_lr_scale: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        schedule: Schedule = "cosine",
        warmup_steps: int = 0,
        max_steps: int | None = None,
        min_lr: float = 0.0,
        plateau_factor: float = 0.8,
        plateau_patience: int = 30,
        max_consecutive_nonfinite: int = 10,
    ) -> None:
        super().__init__()
        if _hparams_come_from_config():
            self.save_hyperparameters()
        else:
            self.save_hyperparameters(ignore=["encoder"])
        task = task or "regression"
        num_tasks = 1 if num_tasks is None else num_tasks
        # The checkpoint records what was built, so that it rebuilds without the data.
        self.hparams.update(task=task, num_tasks=num_tasks)
        if not isinstance(encoder, nn.Module) or not isinstance(
            getattr(encoder, "out_dim", None), int
        ):
            raise TypeError("encoder must be a molssl encoder (an nn.Module with an int out_dim)")
        head = check_task_settings(
            task, num_tasks, head, atomref, regression_metric, energy_weight, force_weight,
            denoise_weight,
        )  # fmt: skip
        self.configure_optimization(
            lr, betas, weight_decay, schedule, warmup_steps, max_steps, min_lr,
            plateau_factor, plateau_patience, encoder_lr_scale,
        )  # fmt: skip
        self.task: str = task
        self.num_tasks = int(num_tasks)
        self.head_kind = head
        self.init_from = init_from
        self.init_from_prefix = init_from_prefix
        self.standardize = bool(standardize)
        self.atomref_mode = atomref_mode(atomref)
        self.use_atomref = self.atomref_mode != "none"
        self.energy_weight = float(energy_weight)
        self.force_weight = float(force_weight)
        self.regression_metric = regression_metric
        self.encoder = encoder
        self.head = build_task_head(
            head,
            encoder.out_dim,
            self.num_tasks,
            pool or ("sum" if head == "equivariant" else "mean"),
            head_hidden_dim,
            head_dropout,
            head_activation,
            head_init,
        )
        self.denoising = (
            FinetuneDenoising(denoise_weight, denoise_sigma, encoder.out_dim)
            if denoise_weight > 0
            else None
        )
        self.register_buffer("target_mean", torch.zeros(self.num_tasks))
        self.register_buffer("target_std", torch.ones(self.num_tasks))
        max_z = int(getattr(encoder, "max_z", _DEFAULT_MAX_Z))
        self.register_buffer("atomref_table", torch.zeros(self.num_tasks, max_z))
        self.task_names = [f"task{i}" for i in range(self.num_tasks)]
        self.metrics = TaskMetrics(task, self.num_tasks)
        self.nonfinite_guard = NonFiniteLossGuard(max_consecutive_nonfinite)
        self.init_report: InitReport | None = None

    # -- set-up from the data ----------------------------------------------------------------

    @property
    def monitor(self) -> tuple[str, Literal["min", "max"]]:
        """The validation metric that selects checkpoints, and whether higher is better."""
        if self.task == "classification":
            return "val/auroc", "max"
        if self.task == "regression":
            return f"val/{self.regression_metric}", "min"
        return "val/force_mae", "min"

    def setup(self, stage: str) -> None:
        """Reads task names (every stage); statistics and ``init_from`` weights (fit only).

        Raises:
            ValueError: The datamodule's task type or number of tasks differs from this
                module's, or it lacks the fine-tuning interface.
        """
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if datamodule is not None and hasattr(datamodule, "task_names"):
            self.task_names = checked_task_names(datamodule, self.task, self.num_tasks)
        if stage != "fit":
            return
        if datamodule is None or not hasattr(datamodule, "target_statistics"):
            raise ValueError(
                "FinetuneModule needs a fine-tuning datamodule (task_type, task_names, "
                "target_statistics()) to fit; pass one as `data` (e.g. "
                "molssl.datamodules.moleculenet.MoleculeNetDataModule)"
            )
        self._set_statistics(datamodule)
        if self.init_from is not None:
            self.load_init_weights()

    def _set_statistics(self, datamodule: Any) -> None:
        stats = read_task_statistics(
            datamodule, self.task, self.num_tasks, self.standardize, self.atomref_mode,
            self.atomref_table.size(1), self.task_names,
        )  # fmt: skip
        if not getattr(self.head, "shift_by_mean", True):
            # A length (the dipole moment) is scaled by the targets' root mean square only.
            stats.std = (stats.mean.square() + stats.std.square()).sqrt()
            stats.mean = torch.zeros_like(stats.mean)
        device = self.target_mean.device
        self.atomref_table.copy_(stats.atomref.to(device))
        self.target_mean.copy_(stats.mean.to(device))
        self.target_std.copy_(stats.std.to(device))

    def load_init_weights(self) -> InitReport:
        """Loads ``init_from`` into the encoder now and logs what was loaded (rank zero).

        Raises:
            InitFromError: Unreadable file, no encoder tensors, or shapes that differ.
        """
        if self.init_from is None:
            raise ValueError("init_from is not set")
        report = load_encoder_weights(self.encoder, self.init_from, self.init_from_prefix)
        head = [f"head.{name}" for name, _ in self.head.named_parameters()]
        rank_zero_info(report.summary(head_tensors=head))
        self.init_report = report
        return report

    # -- forward -------------------------------------------------------------------------------

    def encode(self, batch: Batch) -> EncoderOutput:
        """The encoder's output, checked to be an :class:`EncoderOutput`."""
        output = self.encoder(batch)
        if not isinstance(output, EncoderOutput):
            raise TypeError(
                f"the encoder ({type(self.encoder).__name__}) returned a "
                f"{type(output).__name__}; encoders must return molssl EncoderOutput"
            )
        return output

    def atom_reference(self, batch: Batch, num_graphs: int) -> Tensor:
        """Sum of the atoms' reference values per molecule and task, ``(B, T)`` (0 without)."""
        if not self.use_atomref:
            return self.target_mean.new_zeros(num_graphs, self.num_tasks)
        return per_molecule_sum(self.atomref_table[:, batch.z].transpose(0, 1), batch, num_graphs)

    def forward(self, batch: Batch) -> Tensor:
        """Predictions ``(B, T)``: logits (classification), values in target units
        (regression), energies (energy_forces; use :meth:`energy_and_forces` for forces)."""
        if self.task == "energy_forces":
            return self.energy(batch)
        raw = self.head(self.encode(batch), batch)
        if self.task == "classification":
            return raw
        return raw * self.target_std + self.target_mean + self.atom_reference(batch, raw.size(0))

    def energy(self, batch: Batch, output: EncoderOutput | None = None) -> Tensor:
        """Energies ``(B, 1)``: ``sum_i (std * s_i + mean) (+ atom references)``, where mean and
        std are the training frames' per-atom statistics; ``output`` is the encoder's on
        ``batch`` when already computed."""
        raw = self.head(self.encode(batch) if output is None else output, batch)
        atoms = per_molecule_sum(torch.ones_like(batch.z, dtype=raw.dtype), batch, raw.size(0))
        offset = self.target_mean * atoms.unsqueeze(-1) + self.atom_reference(batch, raw.size(0))
        return raw * self.target_std + offset

    def energy_and_forces(self, batch: Batch, create_graph: bool = False) -> tuple[Tensor, Tensor]:
        """Energies ``(B, 1)`` and forces ``-dE/dpos`` ``(N, 3)``, also under inference mode
        (see :func:`molssl.modules.energy_forces.energy_and_forces`)."""
        return energy_and_forces(self.energy, batch, create_graph)

    # -- losses and steps ----------------------------------------------------------------------

    def compute_loss(
        self, batch: Batch, train: bool
    ) -> tuple[Tensor, dict[str, Tensor], tuple[Tensor, ...]]:
        """Total loss, its parts (for logging) and what the metrics need.

        Returns:
            ``(loss, parts, metric inputs)`` where the metric inputs are ``(preds, targets)``
            (classification, regression) or ``(energy, energy target, forces, force target)``.
        """
        parts: dict[str, Tensor] = {}
        denoise = train and self.denoising is not None
        if denoise:
            batch = self.denoising.noised(batch)
        if self.task == "energy_forces":
            outputs: list[EncoderOutput] = []

            def energy_of(inputs: Batch) -> Tensor:
                outputs.append(self.encode(inputs))
                return self.energy(inputs, outputs[-1])

            loss, parts, metric_inputs = energy_force_losses(
                energy_of, batch, train, self.energy_weight, self.force_weight
            )
            output = outputs[-1]
        else:
            output = self.encode(batch)
            loss, metric_inputs = self._task_loss(batch, output)
        if denoise:
            assert self.denoising is not None
            parts["denoise_loss"] = self.denoising.loss(batch, output)
            loss = loss + self.denoising.weight * parts["denoise_loss"]
        return loss, parts, metric_inputs

    def _task_loss(self, batch: Batch, output: EncoderOutput) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Classification or regression loss and the metric inputs ``(preds, targets)``."""
        raw = self.head(output, batch)
        target = batch.y.reshape(raw.size(0), -1).to(raw.dtype)
        if target.size(1) != self.num_tasks:
            raise ValueError(
                f"the batch has {target.size(1)} target column(s), the model {self.num_tasks}"
            )
        if self.task == "classification":
            return masked_bce(raw, target), (raw, target)
        offset = self.target_mean + self.atom_reference(batch, raw.size(0))
        loss = masked_mse(raw, (target - offset) / self.target_std)
        return loss, (raw.detach() * self.target_std + offset, target)

    def _num_graphs(self, batch: Batch) -> int:
        return int(getattr(batch, "num_graphs", 1))

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Loss of one training batch (skipped on every process when not finite)."""
        loss, parts, metric_inputs = self.compute_loss(batch, train=True)
        size = self._num_graphs(batch)
        optimizers = self.trainer.optimizers
        if optimizers:
            self.log("train/lr", optimizers[0].param_groups[0]["lr"], batch_size=size)
        if not self.nonfinite_guard.check(self, loss, parts):
            return self.nonfinite_guard.skip_loss(self)
        self._log_losses("train", loss, parts, size)
        self.metrics.update("train", *metric_inputs)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Drops the gradients of a step whose batches were all skipped, or not finite."""
        self.nonfinite_guard.check_gradients(self)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Validation loss and metric states."""
        self._evaluation_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        """Test loss and metric states."""
        self._evaluation_step(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        """``{"pred": (B, T)}`` in target units (probabilities for classification), plus
        ``"forces"`` for ``energy_forces``; ``"mol_id"`` when the batch has it."""
        result: dict[str, Tensor] = {}
        if self.task == "energy_forces":
            result["pred"], result["forces"] = self.energy_and_forces(batch)
        else:
            pred = self(batch)
            result["pred"] = torch.sigmoid(pred) if self.task == "classification" else pred
        if getattr(batch, "mol_id", None) is not None:
            result["mol_id"] = batch.mol_id
        return result

    def _evaluation_step(self, batch: Batch, stage: str) -> None:
        loss, parts, metric_inputs = self.compute_loss(batch, train=False)
        self._log_losses(stage, loss, parts, self._num_graphs(batch))
        self.metrics.update(stage, *metric_inputs)
