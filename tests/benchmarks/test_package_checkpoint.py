"""``benchmarks/transfer/package_checkpoint.py``: a pre-training checkpoint cut to its 3D
encoder keeps those tensors bit for bit, the step and the sizes, and fine-tuning starts from
the cut file."""

from __future__ import annotations

from pathlib import Path

import torch

from molssl.encoders import EquivariantTransformer, Graphormer
from molssl.modules.finetune import FinetuneModule
from molssl.modules.init_from import read_state_dict
from tests.benchmarks.scripts import load_script

package_checkpoint = load_script("transfer/package_checkpoint.py", "package_checkpoint")

TINY_ET = {"hidden_channels": 16, "num_layers": 1, "num_heads": 2, "num_rbf": 8}


def pretraining_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A file laid out as Lightning saves a UniCorn run: both encoders, an objective's head,
    optimiser state, the step and the CLI's hyper-parameters."""
    torch.manual_seed(0)
    encoder = EquivariantTransformer(**TINY_ET)
    state = {f"encoder_3d.{k}": v for k, v in encoder.state_dict().items()}
    other = {f"encoder_2d.{k}": v for k, v in Graphormer(1, 2, 16).state_dict().items()}
    head = {"objectives.0.head.weight": torch.randn(3, 16)}
    torch.save(
        {
            "state_dict": {**state, **other, **head},
            "global_step": 1500,
            "optimizer_states": [{"state": {0: {"exp_avg": torch.randn(100)}}}],
            "hyper_parameters": {
                "encoder_3d": {"class_path": "molssl.encoders.EquivariantTransformer",
                               "init_args": TINY_ET},
            },
        },
        path,
    )  # fmt: skip
    return state


def test_cut_keeps_the_encoder_the_step_and_the_sizes(tmp_path: Path) -> None:
    source, target = tmp_path / "last.ckpt", tmp_path / "packaged" / "tiny.ckpt"
    state = pretraining_checkpoint(source)
    summary = package_checkpoint.package(source, target)
    assert summary["tensors"] == len(state) and summary["global_step"] == 1500
    assert summary["encoder_init_args"] == TINY_ET
    assert target.stat().st_size < source.stat().st_size
    cut = read_state_dict(target)
    assert cut.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(cut[key], value), key  # a copy: bit for bit
    module = FinetuneModule(EquivariantTransformer(**TINY_ET), num_tasks=1, init_from=str(target))
    module.load_init_weights()  # what setup("fit") does with a fine-tuning data module
    loaded = module.encoder.state_dict()
    for key, value in state.items():
        # Loaded into the encoder, still a copy: bit-identity is the promise.
        assert torch.equal(loaded[key.removeprefix("encoder_3d.")], value), key
    assert module.init_report is not None and module.init_report.step == 1500
