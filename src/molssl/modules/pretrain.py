"""``PretrainModule``: encoders + a list of objectives, trained on their weighted sum.

One module serves UniCorn (3D + 2D encoders; fragment masking, denoising, cross-modal
distillation), MoleBLEND (the blended encoder), Frad, Coord and the AttrMask baseline: a config
names the encoders and lists the objectives by ``class_path``, and the module

* checks at construction that every encoder role an objective :attr:`~Objective.requires` has
  an encoder, that objective names are unique, and that the objectives' views fit in one data
  pipeline (equal views are merged, conflicting ones are an error);
* hands the data pipeline its views through :meth:`PretrainModule.pipeline_views` (the
  datamodule asks for them in ``setup``);
* runs each encoder that some objective reads once per batch -- twice where one objective
  reads its view of the masked batch and another its view of the unmasked one (UniCorn: fragment
  masking reads the masked graph, the 2D->3D distillation the whole graph; see
  :meth:`PretrainModule.forward`) -- lets every objective compute its loss from those outputs,
  and optimises ``sum(weight * loss)`` with AdamW under a linear warm-up + cosine schedule
  stepped per optimiser step;
* logs ``<stage>/loss`` (on the progress bar), ``<stage>/<objective>/loss`` and
  ``<stage>/<objective>/<metric>`` for ``train``, ``val`` and ``test``, each averaged over what
  its objective says it averages over (masked atoms, atoms, molecules), plus ``train/lr``.

**Checkpoints.** Trained through ``molssl fit``, the saved hyper-parameters are the config's
``class_path``/``init_args`` entries (LightningCLI records them), so
``PretrainModule.load_from_checkpoint(path)`` and ``molssl test --ckpt path`` rebuild the
encoders and the objective list, user-defined subclasses included. A module built in Python
has no such description of its components: they are left out of its hyper-parameters (never
pickled into the checkpoint) and must be passed again,
``PretrainModule.load_from_checkpoint(path, objectives=[...], encoder_3d=...)``.

The checkpoint also carries ``checkpoint["molssl"]`` (molssl's version, the module class, the
objective names in order and the encoder classes by role; see
:mod:`molssl.modules.checkpoint_metadata`), checked before the weights are loaded: a
checkpoint of another objective list or other encoders fails with a
:class:`~molssl.checkpoints.CheckpointError` naming both, one from another molssl version
loads with a warning. Everything stored is a plain value, so checkpoints load with
``torch.load(weights_only=True)``.

**Numerical faults.** A training batch whose total loss or some objective's loss is not finite
on any process is skipped on every process, with a warning naming the objective and the
counter ``train/nonfinite_skipped``; ``max_consecutive_nonfinite`` in a row stop the run with a
:class:`~molssl.modules.guards.NonFiniteLossError`. Optimiser steps whose gradients are not
finite are dropped too. See :mod:`molssl.modules.guards`.

**Test stage.** Pre-training has no labelled test set: ``molssl test`` reports the same losses
on the datamodule's ``test_dataloader`` (for :class:`~molssl.datamodules.PretrainDataModule`,
the held-out validation split with its fixed views) under ``test/...``.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch_geometric.data import Batch

from molssl.encoders.base import Encoder, EncoderOutput
from molssl.modules.checkpoint_metadata import (
    check_checkpoint_metadata,
    class_path,
    write_checkpoint_metadata,
)
from molssl.modules.guards import NonFiniteLossGuard
from molssl.modules.optimization import CosineAdamWModule, check_adamw_settings
from molssl.modules.schedules import warmup_cosine_scheduler
from molssl.objectives.base import (
    ENCODER_ROLES,
    MASK_KEYS,
    Objective,
    ObjectiveResult,
    View,
    unmasked,
)

__all__ = ["PretrainModule", "merge_views", "without_masks"]

#: Constructor arguments holding built components rather than plain values.
COMPONENT_ARGUMENTS = ("objectives", "encoder_3d", "encoder_2d", "encoder_blend", "views")


def encoder_argument(role: str) -> str:
    """Constructor argument holding the encoder of ``role``: ``"3d"`` → ``encoder_3d``."""
    return f"encoder_{role}"


def merge_views(sources: Sequence[tuple[str, View]]) -> list[View]:
    """One pipeline from the views of several sources, in ``order``.

    Equal views (e.g. the same ``CoordNoise`` sigma asked for by two objectives) are kept once,
    so they share one draw. Two unequal views of the same kind (one an instance of the other's
    class) would apply the same transform twice with different settings: a configuration error.

    Args:
        sources: ``(who asked, view)`` pairs; ``who asked`` only appears in error messages.

    Returns:
        The distinct views sorted by :attr:`View.order` (stable for equal orders).

    Raises:
        TypeError: If an entry is not a :class:`View`.
        ValueError: If two views conflict.
    """
    merged: list[tuple[str, View]] = []
    for source, view in sources:
        if not isinstance(view, View):
            raise TypeError(
                f"{source} gave a view of type {type(view).__name__}; views must subclass "
                "molssl.objectives.View"
            )
        if any(view == kept for _, kept in merged):
            continue
        for kept_source, kept in merged:
            if isinstance(view, type(kept)) or isinstance(kept, type(view)):
                raise ValueError(
                    f"conflicting views: {kept!r} from {kept_source} and {view!r} from {source}; "
                    "one data pipeline applies each kind of view once, so their settings must "
                    "agree (or one of them must go)"
                )
        merged.append((source, view))
    return sorted((view for _, view in merged), key=lambda view: view.order)


def _hparams_come_from_config() -> bool:
    """Whether LightningCLI is instantiating this module from a config right now.

    LightningCLI hands ``save_hyperparameters`` the config's ``class_path``/``init_args`` through
    a context variable; the module needs to know because otherwise its hyper-parameters would be
    the built encoders and objectives themselves (pickled nn.Modules in the checkpoint).
    Lightning versions without the variable never record class paths, which is the same as not
    coming from a config.
    """
    try:
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
    except ImportError:
        return False
    return _given_hyperparameters.get() is not None


class PretrainModule(CosineAdamWModule):
    """Self-supervised pre-training of molecular encoders on a weighted sum of objectives.

    Args:
        objectives: The losses, each with its own heads, weight and views.
        encoder_3d: Encoder of conformers (UniCorn: TorchMD-NET's equivariant transformer).
        encoder_2d: Encoder of molecular graphs (UniCorn: Graphormer).
        encoder_blend: MoleBLEND's blended-relation transformer.
        views: Per-sample augmentations that are not objectives (UniCorn's and Frad's
            :class:`~molssl.objectives.TorsionAugment`).
        lr: Peak learning rate of AdamW (UniCorn: 4e-4).
        betas: AdamW's betas (UniCorn: (0.9, 0.999)).
        weight_decay: AdamW's decoupled weight decay, not applied to biases and normalisation
            layers (UniCorn: 0).
        warmup_steps: Optimiser steps of linear warm-up (UniCorn: 10,000).
        max_steps: Step at which the cosine decay reaches its floor; ``None`` takes the run's
            length (``trainer.estimated_stepping_batches``).
        min_lr_ratio: Floor of the learning rate after the decay, as a fraction of ``lr``.
        max_consecutive_nonfinite: Training batches in a row with a non-finite loss (each one
            skipped) after which training stops with an error naming the objective.

    Raises:
        ValueError: No objective, a required encoder missing, duplicate objective names,
            conflicting views, or an out-of-range optimiser setting.
        TypeError: An objective or view of the wrong type.
    """

    def __init__(
        self,
        objectives: list[Objective],
        encoder_3d: Encoder | None = None,
        encoder_2d: Encoder | None = None,
        encoder_blend: Encoder | None = None,
        views: list[View] | None = None,
        lr: float = 4e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        warmup_steps: int = 10_000,
        max_steps: int | None = None,
        min_lr_ratio: float = 0.0,
        max_consecutive_nonfinite: int = 10,
    ) -> None:
        super().__init__()
        if _hparams_come_from_config():
            self.save_hyperparameters()
        else:
            self.save_hyperparameters(ignore=list(COMPONENT_ARGUMENTS))
        _check_optimizer_settings(lr, betas, weight_decay, warmup_steps, max_steps, min_lr_ratio)
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.weight_decay = float(weight_decay)
        self.warmup_steps = int(warmup_steps)
        self.max_steps = None if max_steps is None else int(max_steps)
        self.min_lr_ratio = float(min_lr_ratio)
        self.nonfinite_guard = NonFiniteLossGuard(max_consecutive_nonfinite)

        self.encoder_3d = encoder_3d
        self.encoder_2d = encoder_2d
        self.encoder_blend = encoder_blend
        self.objectives = nn.ModuleList(_checked_objectives(objectives))
        self.required_roles = self._check_encoders()
        self.masked_roles, self.unmasked_roles = self._encodings_read()
        # Roles whose unmasked encoding some objective back-propagates through.
        self.unmasked_grad_roles = frozenset(
            role
            for objective in self.objectives
            if objective.unmasked_needs_grad()
            for role in objective.unmasked_roles()
        )
        widths = {
            role: int(self.encoder(role).out_dim)
            for role in self.required_roles
            if isinstance(getattr(self.encoder(role), "out_dim", None), int)
        }
        for objective in self.objectives:
            objective.bind_encoders(widths)
        self.module_views = list(views or [])
        # Building the pipeline once here reports conflicting views before any data is loaded.
        self.pipeline_views()

    # -- construction checks ---------------------------------------------------------------

    def encoder(self, role: str) -> nn.Module | None:
        """The encoder playing ``role`` (one of ``"3d"``, ``"2d"``, ``"blend"``), or ``None``."""
        if role not in ENCODER_ROLES:
            raise ValueError(f"unknown encoder role {role!r}; roles are {ENCODER_ROLES}")
        return getattr(self, encoder_argument(role))

    def _check_encoders(self) -> tuple[str, ...]:
        """The roles some objective reads, in :data:`ENCODER_ROLES` order; errors for gaps."""
        required: set[str] = set()
        for objective in self.objectives:
            for role in objective.requires:
                if role not in ENCODER_ROLES:
                    raise ValueError(
                        f"objective {objective.name!r} ({type(objective).__name__}) requires "
                        f"the unknown encoder role {role!r}; roles are {ENCODER_ROLES}"
                    )
                if self.encoder(role) is None:
                    raise ValueError(
                        f"objective {objective.name!r} ({type(objective).__name__}) requires "
                        f"the {role!r} encoder, but {encoder_argument(role)} is not set; give "
                        f"one (model.init_args.{encoder_argument(role)} in a config)"
                    )
                required.add(role)
        for role in ENCODER_ROLES:
            encoder = self.encoder(role)
            if encoder is not None and not isinstance(encoder, nn.Module):
                raise TypeError(
                    f"{encoder_argument(role)} must be a torch.nn.Module, got "
                    f"{type(encoder).__name__}"
                )
            if encoder is not None and role not in required:
                rank_zero_warn(
                    f"{encoder_argument(role)} is set but no objective reads the {role!r} "
                    "encoder: it will not be trained; remove it to save memory",
                    category=UserWarning,
                )
        return tuple(role for role in ENCODER_ROLES if role in required)

    def _encodings_read(self) -> tuple[frozenset[str], frozenset[str]]:
        """The roles read on the batch as the views left it, and those read unmasked."""
        masked: set[str] = set()
        unmasked_roles: set[str] = set()
        for objective in self.objectives:
            wanted = tuple(objective.unmasked_roles())
            for role in wanted:
                if role not in objective.requires:
                    raise ValueError(
                        f"objective {objective.name!r} ({type(objective).__name__}) reads the "
                        f"unmasked {role!r} encoding but does not require the {role!r} encoder; "
                        f"add it to `requires` (it requires {objective.requires})"
                    )
            unmasked_roles.update(wanted)
            masked.update(role for role in objective.requires if role not in wanted)
        return frozenset(masked), frozenset(unmasked_roles)

    def pipeline_views(self) -> list[View]:
        """The per-sample views of the data pipeline: this module's and every objective's.

        Equal views are kept once and the result is sorted by :attr:`View.order` (torsion
        augmentation → coordinate noise → masks); see :func:`merge_views`.
        """
        sources = [("the module's views", view) for view in self.module_views]
        for objective in self.objectives:
            sources += [(f"objective {objective.name!r}", view) for view in objective.views()]
        return merge_views(sources)

    # -- forward and losses ----------------------------------------------------------------

    def forward(self, batch: Batch) -> dict[str, EncoderOutput]:
        """Runs every encoder that some objective reads on ``batch``.

        An encoder runs once on the batch as the views left it (``outputs[role]``). Where an
        objective reads a role's unmasked encoding (:meth:`Objective.unmasked_roles`), that
        comes from a second pass on the batch without its masks (:data:`MASK_KEYS`) when the
        batch has one and another objective reads the masked encoding; with no mask on the
        batch the one pass serves both keys, and with no reader of the masked encoding only the
        unmasked pass runs. That pass runs without autograd when no objective reading it
        back-propagates through it (:meth:`Objective.unmasked_needs_grad`).

        Returns:
            Encoder outputs by role (``"3d"``, ``"2d"``, ``"blend"``) and, for the roles read
            unmasked, by ``unmasked(role)`` (e.g. ``"2d/unmasked"``).
        """
        outputs: dict[str, EncoderOutput] = {}
        masked = any(getattr(batch, key, None) is not None for key in MASK_KEYS)
        plain = without_masks(batch) if masked and self.unmasked_roles else batch
        for role in self.required_roles:
            with self._shared_inputs(role):
                self._encode_role(role, batch, plain, masked, outputs)
        return outputs

    def _shared_inputs(self, role: str) -> contextlib.AbstractContextManager[None]:
        """The scope of a role's masked and unmasked passes: they share every tensor but the
        masks, so the encoder may compute what depends on those once
        (:meth:`~molssl.encoders.base.Encoder.shared_inputs`)."""
        encoder = self.encoder(role)
        if isinstance(encoder, Encoder):
            return encoder.shared_inputs()
        return contextlib.nullcontext()

    def _encode_role(
        self,
        role: str,
        batch: Batch,
        plain: Batch,
        masked: bool,
        outputs: dict[str, EncoderOutput],
    ) -> None:
        """``outputs[role]`` and ``outputs[unmasked(role)]`` as :meth:`forward` describes."""
        if role in self.masked_roles or not masked:
            outputs[role] = self._encode(role, batch)
        if role not in self.unmasked_roles:
            return
        if not masked:
            outputs[unmasked(role)] = outputs[role]
            return
        with torch.set_grad_enabled(torch.is_grad_enabled() and role in self.unmasked_grad_roles):
            outputs[unmasked(role)] = self._encode(role, plain)

    def _encode(self, role: str, batch: Batch) -> EncoderOutput:
        encoder = self.encoder(role)
        output = encoder(batch)
        if not isinstance(output, EncoderOutput):
            raise TypeError(
                f"{encoder_argument(role)} ({type(encoder).__name__}) returned a "
                f"{type(output).__name__}; encoders must return molssl EncoderOutput"
            )
        return output

    def objective_results(self, batch: Batch) -> tuple[Tensor, dict[str, ObjectiveResult]]:
        """The weighted total loss and every objective's result on one batch.

        Returns:
            ``(sum(weight * loss), {objective name: ObjectiveResult})``.
        """
        outputs = self(batch)
        results = {objective.name: objective.loss(batch, outputs) for objective in self.objectives}
        total = torch.stack(
            [objective.weight * results[objective.name].loss for objective in self.objectives]
        ).sum()
        return total, results

    def _shared_step(self, batch: Batch, stage: str) -> Tensor:
        total, results = self.objective_results(batch)
        self._log_results(batch, stage, total, results)
        return total

    def _log_results(
        self, batch: Batch, stage: str, total: Tensor, results: dict[str, ObjectiveResult]
    ) -> None:
        num_graphs = int(batch.num_graphs)
        # Epoch-level values of val/test are averaged across processes; per-step training
        # values stay local, which saves a collective per metric and step.
        sync = stage != "train"
        for name, result in results.items():
            batch_size = result.batch_size or num_graphs
            self.log(
                f"{stage}/{name}/loss", result.loss.detach(), batch_size=batch_size, sync_dist=sync
            )
            for key, value in result.metrics.items():
                self.log(f"{stage}/{name}/{key}", value, batch_size=batch_size, sync_dist=sync)
        self.log(
            f"{stage}/loss", total.detach(), batch_size=num_graphs, prog_bar=True, sync_dist=sync
        )

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Weighted total loss of one training batch; logs it, its parts and the LR.

        A batch with a non-finite loss on any process is skipped on all of them (see
        :mod:`molssl.modules.guards`): its losses are not logged and the returned loss has
        zero gradients, which :meth:`on_before_optimizer_step` then drops.
        """
        total, results = self.objective_results(batch)
        optimizers = self.trainer.optimizers
        if optimizers:
            self.log("train/lr", optimizers[0].param_groups[0]["lr"], batch_size=batch.num_graphs)
        parts = {name: result.loss for name, result in results.items()}
        if not self.nonfinite_guard.check(self, total, parts):
            return self.nonfinite_guard.skip_loss(self)
        self._log_results(batch, "train", total, results)
        return total

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Drops the gradients of a step with no finite batch or non-finite gradients."""
        self.nonfinite_guard.check_gradients(self)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Logs the held-out losses and metrics (epoch averages)."""
        self._shared_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        """Logs the losses and metrics on the test loader (see the module docstring)."""
        self._shared_step(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, EncoderOutput]:
        """The encoders' outputs on one batch."""
        return self(batch)

    # -- checkpoints -----------------------------------------------------------------------

    def checkpoint_description(self) -> dict[str, Any]:
        """What a checkpoint of this module must match: objective names, encoder classes."""
        return {
            "objectives": [objective.name for objective in self.objectives],
            "encoders": {
                role: class_path(self.encoder(role))
                for role in ENCODER_ROLES
                if self.encoder(role) is not None
            },
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Records molssl's metadata and the non-finite counters in the checkpoint."""
        write_checkpoint_metadata(
            checkpoint,
            self,
            **self.checkpoint_description(),
            objective_classes=[class_path(objective) for objective in self.objectives],
            nonfinite=self.nonfinite_guard.state_dict(),
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checks the checkpoint's objectives and encoders before its weights are loaded.

        Raises:
            CheckpointError: If they differ from this module's, or the checkpoint's format is
                newer than this molssl reads.
        """
        entry = check_checkpoint_metadata(checkpoint, self, self.checkpoint_description())
        if entry is not None and isinstance(entry.get("nonfinite"), dict):
            self.nonfinite_guard.load_state_dict(entry["nonfinite"])

    # -- optimisation ----------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW with a per-step linear warm-up + cosine schedule."""
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=self.lr, betas=self.betas)
        horizon = self.schedule_horizon()
        if horizon < self.warmup_steps and not self.trainer.fast_dev_run:
            rank_zero_warn(
                f"the run ({horizon} steps) is shorter than the warm-up ({self.warmup_steps} "
                "steps): the learning rate never reaches its peak; lower model.init_args."
                "warmup_steps",
                category=UserWarning,
            )
        scheduler = warmup_cosine_scheduler(
            optimizer, self.warmup_steps, max(horizon, self.warmup_steps), self.min_lr_ratio
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }


def without_masks(batch: Batch) -> Batch:
    """A shallow copy of ``batch`` without the masking views' keys (:data:`MASK_KEYS`); the
    tensors are shared, ``batch`` itself keeps its masks."""
    plain = copy.copy(batch)
    for key in MASK_KEYS:
        if key in plain:
            del plain[key]
    return plain


def _checked_objectives(objectives: Sequence[Objective]) -> list[Objective]:
    objectives = list(objectives)
    if not objectives:
        raise ValueError("PretrainModule needs at least one objective")
    for objective in objectives:
        if not isinstance(objective, Objective):
            raise TypeError(
                f"objectives must subclass molssl.objectives.Objective, got "
                f"{type(objective).__name__}"
            )
    seen: dict[str, Objective] = {}
    for objective in objectives:
        if objective.name in seen:
            first = type(seen[objective.name]).__name__
            raise ValueError(
                f"two objectives are named {objective.name!r} ({first} and "
                f"{type(objective).__name__}); their metrics would collide, so give one of them "
                "another `name`"
            )
        seen[objective.name] = objective
    return objectives


def _check_optimizer_settings(
    lr: float,
    betas: Sequence[float],
    weight_decay: float,
    warmup_steps: int,
    max_steps: int | None,
    min_lr_ratio: float,
) -> None:
    check_adamw_settings(lr, betas, weight_decay, warmup_steps, max_steps)
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
