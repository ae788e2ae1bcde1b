"""The encoders and a UniCorn pre-training step on CUDA: same numbers as on the CPU.

Every test here needs a CUDA device and skips without one (CI has none; run them on a GPU
machine). The CPU result of the same weights on the same real molecules is the reference:
float32 on both sides (TF32 matmuls off, PyTorch's default), so the only differences are the
order of floating-point reductions in the CUDA kernels. Under ``bf16-mixed`` autocast only
finiteness is required, plus a loss close to float32 within bfloat16's precision.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from molssl.chem.conformers import ConformerOptions, embed_conformers
from molssl.chem.features import mol_from_smiles, mol_to_data
from molssl.chem.graph import AddGraphRelations
from molssl.encoders.blend import MoleBlendTransformer
from molssl.encoders.et import EquivariantTransformer
from molssl.encoders.graphormer import Graphormer
from molssl.modules import PretrainModule
from molssl.objectives import CoordDenoise, CrossModalInfoNCE, FragmentMask, TorsionAugment
from tests.conftest import read_nci_smiles
from tests.encoders.molecules_3d import TINY_BLEND, fixed_rotation, moved, rotate_vectors
from tests.modules.pretrain_fixtures import (
    prepare_small_cache,
    small_datamodule,
    tiny_et,
    tiny_graphormer,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")
# float32 on CPU vs CUDA: reductions in another order, nothing else. Measured differences on an
# H100 are around 1e-6 relative; 1e-4 leaves room for other GPUs without hiding a real bug
# (a wrong index or dropped term moves outputs by O(1)).
FLOAT32 = {"rtol": 1e-4, "atol": 1e-4}
TINY_ET = {"hidden_channels": 32, "num_layers": 2, "num_heads": 4, "num_rbf": 16}
TINY_GRAPHORMER = {"hidden_channels": 32, "num_layers": 2, "num_heads": 4, "max_hops": 3}
# NCI lines: molecules of 10 to 45 atoms with hydrogens, rings, heteroatoms and one salt.
NCI_LINES = (0, 3, 8, 15, 18, 25, 40)


def relative_error(actual: Tensor, expected: Tensor) -> float:
    """``||actual - expected|| / ||expected||`` in float64 on the CPU."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    return float((actual - expected).norm() / expected.norm())


@pytest.fixture(scope="module")
def molecules() -> list[Data]:
    """Real NCI molecules with explicit hydrogens, one seeded conformer each and the 2D
    relations precomputed (``spd``/``path_edges``), positions in float32."""
    smiles = read_nci_smiles(max(NCI_LINES) + 1)
    relations = AddGraphRelations(max_hops=TINY_GRAPHORMER["max_hops"])
    out = []
    for line in NCI_LINES:
        mol = embed_conformers(mol_from_smiles(smiles[line]), ConformerOptions(seed=7))
        data = mol_to_data(mol, conf_id=0)
        data.pos = data.pos.float()
        out.append(relations(data))
    return out


def on_cuda(batch: Batch) -> Batch:
    """A CUDA copy of ``batch`` (PyG's ``Batch.to`` moves the tensors in place)."""
    return batch.clone().to(CUDA)


def cpu_and_cuda(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The model in evaluation mode and an identical copy on CUDA."""
    model = model.float().eval()
    return model, copy.deepcopy(model).to(CUDA)


def assert_encoder_outputs_match(cpu_out: object, gpu_out: object) -> None:
    for name in ("node", "graph", "vec"):
        expected, actual = getattr(cpu_out, name), getattr(gpu_out, name)
        if expected is None:
            assert actual is None, name
            continue
        assert actual.device.type == "cuda", name
        assert torch.isfinite(actual).all(), name
        torch.testing.assert_close(actual.cpu(), expected, **FLOAT32, msg=name)


@pytest.mark.parametrize("layernorm_on_vec", [None, "whitened"])
def test_et_on_cuda_equals_cpu(molecules: list[Data], layernorm_on_vec: str | None) -> None:
    torch.manual_seed(0)
    cpu, gpu = cpu_and_cuda(EquivariantTransformer(**TINY_ET, layernorm_on_vec=layernorm_on_vec))
    batch = Batch.from_data_list(molecules)
    with torch.no_grad():
        assert_encoder_outputs_match(cpu(batch), gpu(on_cuda(batch)))


@pytest.mark.parametrize("precomputed", [True, False], ids=["precomputed", "on_the_fly"])
def test_graphormer_on_cuda_equals_cpu(molecules: list[Data], precomputed: bool) -> None:
    torch.manual_seed(0)
    model = Graphormer(**TINY_GRAPHORMER)
    # Non-zero attention biases, so that a bias routed to the wrong pair on CUDA shows.
    with torch.no_grad():
        for parameter in model.attention_bias.parameters():
            parameter.normal_(0.0, 0.5)
    cpu, gpu = cpu_and_cuda(model)
    data = molecules if precomputed else [strip_relations(d) for d in molecules]
    batch = Batch.from_data_list(data)
    with torch.no_grad():
        assert_encoder_outputs_match(cpu(batch), gpu(on_cuda(batch)))


def strip_relations(data: Data) -> Data:
    out = data.clone()
    del out.spd, out.path_edges
    return out


@pytest.mark.parametrize("mode", ["blend", "all"])
def test_moleblend_on_cuda_equals_cpu(molecules: list[Data], mode: str) -> None:
    torch.manual_seed(0)
    cpu, gpu = cpu_and_cuda(MoleBlendTransformer(**TINY_BLEND, relation_mode=mode))
    batch = Batch.from_data_list(molecules)
    with torch.no_grad():
        # Evaluation draws come from a CPU generator seeded with eval_seed: the same blend
        # choice on both devices.
        cpu_out, gpu_out = cpu(batch), gpu(on_cuda(batch))
    assert_encoder_outputs_match(cpu_out, gpu_out)
    assert set(gpu_out.extras) == set(cpu_out.extras)
    for key, value in cpu_out.extras.items():
        actual = gpu_out.extras[key].cpu()
        if value.is_floating_point():
            torch.testing.assert_close(actual, value, **FLOAT32, msg=key)
        else:  # the blend choice and masks: identical
            assert torch.equal(actual, value), key


@pytest.mark.parametrize("improper", [False, True], ids=["rotation", "rotoreflection"])
def test_et_rigid_motion_on_cuda(molecules: list[Data], improper: bool) -> None:
    torch.manual_seed(0)
    model = EquivariantTransformer(**TINY_ET, layernorm_on_vec="whitened").to(CUDA).eval()
    rotation = fixed_rotation(torch.float32)
    rotation = -rotation if improper else rotation
    batch = Batch.from_data_list(molecules)
    with torch.no_grad():
        out = model(on_cuda(batch))
        out_moved = model(on_cuda(moved(batch, rotation)))
    tol = {"rtol": 1e-3, "atol": 1e-3}  # float32 with rotated coordinates, as on the CPU
    torch.testing.assert_close(out_moved.node, out.node, **tol)
    torch.testing.assert_close(out_moved.graph, out.graph, **tol)
    expected_vec = rotate_vectors(out.vec, rotation.to(CUDA))
    torch.testing.assert_close(out_moved.vec, expected_vec, **tol)
    # The vectors must carry geometry, or equivariance of zeros would pass.
    assert out.vec.abs().max() > 1e-2


def test_moleblend_rigid_motion_on_cuda(molecules: list[Data]) -> None:
    torch.manual_seed(0)
    model = MoleBlendTransformer(**TINY_BLEND, relation_mode="all").to(CUDA).eval()
    batch = Batch.from_data_list(molecules)
    rotation = fixed_rotation(torch.float32)
    with torch.no_grad():
        out = model(on_cuda(batch))
        out_moved = model(on_cuda(moved(batch, rotation)))
        bent = batch.clone()
        bent.pos = batch.pos * torch.tensor([1.0, 1.3, 1.0])
        out_bent = model(on_cuda(bent))
    torch.testing.assert_close(out_moved.node, out.node, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(out_moved.graph, out.graph, rtol=1e-3, atol=1e-3)
    # Control: a non-rigid change of the coordinates changes the output.
    assert relative_error(out_bent.node, out.node) > 1e-3


# --- UniCorn pre-training step -----------------------------------------------------------------


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_small_cache(tmp_path_factory.getbasetemp() / "molssl_cache")


def unicorn() -> PretrainModule:
    """UniCorn's three objectives and its torsion view on tiny encoders."""
    torch.manual_seed(0)
    return PretrainModule(
        objectives=[FragmentMask(), CoordDenoise(sigma=0.04), CrossModalInfoNCE(temperature=0.5)],
        encoder_3d=tiny_et(),
        encoder_2d=tiny_graphormer(),
        views=[TorsionAugment(2.0, unit="deg")],
        lr=1e-3,
        warmup_steps=1,
    )


def first_batch(cache_dir: Path, module: PretrainModule) -> Batch:
    data = small_datamodule(cache_dir)
    data.set_views(module.pipeline_views())
    data.setup("fit")
    torch.manual_seed(0)
    return next(iter(data.train_dataloader()))


def test_unicorn_float32_loss_on_cuda_equals_cpu(cache_dir: Path) -> None:
    cpu = unicorn().eval()
    gpu = copy.deepcopy(cpu).to(CUDA)
    batch = first_batch(cache_dir, cpu)
    with torch.no_grad():
        cpu_total, cpu_results = cpu.objective_results(batch)
        gpu_total, gpu_results = gpu.objective_results(on_cuda(batch))
    assert gpu_total.device.type == "cuda"
    assert set(gpu_results) == {"fragment_mask", "coord_denoise", "cross_modal_info_nce"}
    assert gpu_total.item() == pytest.approx(cpu_total.item(), rel=1e-4)
    for name, result in cpu_results.items():
        assert gpu_results[name].loss.item() == pytest.approx(result.loss.item(), rel=1e-4), name


def test_unicorn_bf16_autocast_step_gives_finite_losses_and_gradients(cache_dir: Path) -> None:
    module = unicorn().to(CUDA).train()
    batch = on_cuda(first_batch(cache_dir, module))
    with torch.no_grad():
        reference, _ = module.eval().objective_results(batch)
    module.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        total, results = module.objective_results(batch)
    assert torch.isfinite(total)
    for name, result in results.items():
        assert torch.isfinite(result.loss), name
    total.backward()
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert module.encoder_3d.embedding.weight.grad.abs().sum() > 0
    assert module.encoder_2d.mask_embedding.grad.abs().sum() > 0
    # bfloat16 keeps 8 bits of mantissa; the train-mode loss also has dropout on, so only a
    # loose agreement with the float32 evaluation loss is expected.
    assert total.item() == pytest.approx(reference.item(), rel=0.1)


def test_unicorn_fit_under_bf16_mixed_on_gpu(cache_dir: Path, tmp_path: Path) -> None:
    module = unicorn()
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    trainer = Trainer(
        accelerator="gpu",
        devices=1,
        precision="bf16-mixed",
        max_steps=4,
        default_root_dir=str(tmp_path),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        num_sanity_val_steps=0,
        limit_val_batches=1,
        val_check_interval=2,
    )
    trainer.fit(module, small_datamodule(cache_dir))
    assert trainer.global_step == 4
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for key in ("train/loss", "val/loss", "val/cross_modal_info_nce/loss"):
        assert key in metrics and torch.isfinite(torch.tensor(metrics[key])), key
    after = module.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    changed = [
        k for k, v in before.items() if v.is_floating_point() and not torch.equal(v, after[k].cpu())
    ]
    assert any(k.startswith("encoder_3d.") for k in changed)
    assert any(k.startswith("encoder_2d.") for k in changed)
