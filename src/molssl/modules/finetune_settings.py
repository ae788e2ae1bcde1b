"""Checks of :class:`~molssl.modules.FinetuneModule`'s task settings, each naming the setting.

Kept apart from the module so that its constructor reads as what it builds; every check runs
before anything is built, so a bad config fails at once with the setting to change.
"""

from __future__ import annotations

import math

__all__ = ["ATOMREF_MODES", "TASKS", "atomref_mode", "check_task_settings"]

#: The task types of fine-tuning (the datamodules' ``task_type``).
TASKS: tuple[str, ...] = ("classification", "regression", "energy_forces")
#: Where per-element references come from: none, the datamodule's fit, QM9's free atoms.
ATOMREF_MODES: tuple[str, ...] = ("none", "data", "qm9")
#: Heads that compute one physical property from positions (regression, one target).
_PROPERTY_HEADS = ("dipole", "spatial_extent")


def atomref_mode(atomref: bool | str) -> str:
    """``False`` → ``"none"``, ``True`` → ``"data"`` (the datamodule's), ``"qm9"`` as is.

    Raises:
        ValueError: Any other value.
    """
    if atomref is False or atomref is None:
        return "none"
    if atomref is True:
        return "data"
    if atomref == "qm9":
        return "qm9"
    raise ValueError(f"atomref must be false, true or 'qm9', got {atomref!r}")


def check_task_settings(
    task: str,
    num_tasks: int,
    head: str | None,
    atomref: bool | str,
    regression_metric: str,
    energy_weight: float,
    force_weight: float,
    denoise_weight: float,
) -> str:
    """Checks the task, head, reference and loss settings together; returns the head kind
    (``head``, or the task's default when ``None``).

    Raises:
        ValueError: Naming the first setting out of range or the combination that cannot work.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if num_tasks < 1 or (task == "energy_forces" and num_tasks != 1):
        raise ValueError(f"num_tasks must be >= 1 (exactly 1 for energy_forces), got {num_tasks}")
    head = head or ("equivariant" if task == "energy_forces" else "mlp")
    if task == "energy_forces" and head != "equivariant":
        raise ValueError("energy_forces needs head='equivariant' (forces are -dE/dpos)")
    mode = atomref_mode(atomref)
    if task == "classification" and mode != "none":
        raise ValueError("atomref applies to regression and energy_forces, not classification")
    if mode == "qm9" and task != "regression":
        raise ValueError("atomref='qm9' holds QM9's free-atom energies: a regression setting")
    if head in _PROPERTY_HEADS:
        if task != "regression" or num_tasks != 1:
            raise ValueError(
                f"head={head!r} predicts one QM9 property: it needs task='regression' and "
                f"num_tasks=1, got {task!r} and {num_tasks}"
            )
        if mode != "none":
            raise ValueError(f"head={head!r} sums no atomic energies: set atomref=false")
    if regression_metric not in ("rmse", "mae"):
        raise ValueError(f"regression_metric must be 'rmse' or 'mae', got {regression_metric!r}")
    if energy_weight < 0 or force_weight < 0 or energy_weight + force_weight == 0:
        raise ValueError("energy_weight and force_weight must be >= 0, not both 0")
    if not (math.isfinite(denoise_weight) and denoise_weight >= 0):
        raise ValueError(f"denoise_weight must be a finite number >= 0, got {denoise_weight}")
    return head
