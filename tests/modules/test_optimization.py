"""AdamW parameter groups and the cosine horizon shared by pre-training and fine-tuning."""

from __future__ import annotations

import pytest
from lightning.pytorch import Trainer
from torch import nn

from molssl.modules.optimization import cosine_horizon, decay_parameter_groups


def test_decay_groups_exempt_biases_and_normalisation_and_skip_frozen() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2, bias=False))
    model[2].weight.requires_grad_(False)
    decay, no_decay = decay_parameter_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [id(p) for p in decay["params"]] == [id(model[0].weight)]
    assert {id(p) for p in no_decay["params"]} == {
        id(model[0].bias),
        id(model[1].weight),
        id(model[1].bias),
    }
    (single,) = decay_parameter_groups(model, 0.0)
    assert len(single["params"]) == 4 and single["weight_decay"] == 0.0


def test_cosine_horizon_prefers_max_steps_and_rejects_unbounded_runs() -> None:
    trainer = Trainer(max_epochs=-1, max_steps=-1, logger=False, enable_checkpointing=False)
    assert cosine_horizon(123, trainer) == 123
    with pytest.raises(ValueError, match="unbounded"):
        cosine_horizon(None, trainer)
