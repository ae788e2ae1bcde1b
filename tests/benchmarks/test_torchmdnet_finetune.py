"""The TorchMD-NET cross-check of QM9 fine-tuning computes molssl's encoder through TorchMD-NET.

Skipped unless TorchMD-NET is importable (``TORCHMD_NET_SRC``, see
``benchmarks/torchmd_reference.py``); it is never a dependency of molssl.
"""

from __future__ import annotations

from types import ModuleType

import pytest
import torch

from molssl.encoders.et import EquivariantTransformer
from tests.benchmarks.scripts import load_script
from tests.encoders.molecules_3d import as_batch, nci_molecules


@pytest.fixture(scope="module")
def script() -> ModuleType:
    reference = load_script("torchmd_reference.py", "torchmd_reference")
    try:
        reference.load_torchmd_et()
    except ImportError as error:
        pytest.skip(str(error))
    return load_script("transfer/torchmdnet_finetune.py", "torchmdnet_finetune")


def tiny_args(script: ModuleType, *extra: str) -> object:
    sizes = ["--hidden", "16", "--layers", "2", "--heads", "2", "--rbf", "8"]
    return script.build_parser().parse_args([*sizes, *extra])


def test_whitened_encoder_maps_onto_torchmd_et(script: ModuleType) -> None:
    """The vector norm of the pre-trained encoders follows TorchMD_ET's layers: same outputs."""
    torch.manual_seed(0)
    encoder = script.molssl_encoder(tiny_args(script), None)
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    batch = as_batch(nci_molecules(), torch.float32)
    assert encoder.out_norm_vec is not None
    assert script.check_parity(encoder, batch) < script.PARITY_TOLERANCE


@pytest.mark.parametrize("head", ["torchmdnet", "molssl"])
def test_model_predicts_every_target_in_label_units(script: ModuleType, head: str) -> None:
    """Three outputs per molecule; with the output model's weights zeroed it gives 0 and
    TorchMD_Net's standardisation leaves ``mean`` (TorchMD-NET's output model or molssl's)."""
    args = tiny_args(script, "--head", head)
    torch.manual_seed(0)
    representation = script.reference_with_vector_norm(script.molssl_encoder(args, None))
    mean, std = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([10.0, 20.0, 30.0])
    model = script.torchmdnet_model(args, representation, mean, std)
    batch = as_batch(nci_molecules(), torch.float32)
    y, _ = model(batch.z, batch.pos, batch=batch.batch)
    assert y.shape == (batch.num_graphs, 3)
    with torch.no_grad():
        for parameter in model.output_model.parameters():
            parameter.zero_()
    y, _ = model(batch.z, batch.pos, batch=batch.batch)
    torch.testing.assert_close(y, mean.expand_as(y))
    assert isinstance(representation.reference.embedding, torch.nn.Embedding)
    assert not isinstance(representation, EquivariantTransformer)


@pytest.mark.parametrize("init", ["pytorch", "xavier"])
def test_last_block_initialisation(script: ModuleType, init: str) -> None:
    """The rebuilt 3-output block keeps PyTorch's Linear default (non-zero biases: the recorded
    runs) unless ``--last-block-init xavier`` resets it as TorchMD-NET resets its blocks."""
    args = tiny_args(script, "--last-block-init", init)
    torch.manual_seed(0)
    representation = script.reference_with_vector_norm(script.molssl_encoder(args, None))
    model = script.torchmdnet_model(args, representation, torch.zeros(3), torch.ones(3))
    last = model.output_model.output_network[-1]
    biases = [
        m.bias for m in last.modules() if isinstance(m, torch.nn.Linear) and m.bias is not None
    ]
    # Exact: reset_parameters sets the biases to 0.0, PyTorch's default draws them uniformly.
    assert biases and all(bool((b == 0).all()) == (init == "xavier") for b in biases)
