"""QM9 label efficiency through TorchMD-NET's own fine-tuning path: a cross-check of molssl's.

Pre-training did not beat scratch in ``qm9_label_efficiency.py``. Is molssl's fine-tuning path
(``FinetuneModule``, its head, standardisation, loss) the cause? This script fine-tunes the same
pre-trained ET weights on the same molecules through the official TorchMD-NET code instead:

* model: ``torchmdnet.models.model.create_model`` with the equivariant transformer (64 channels,
  3 layers, 4 heads, 32 expnorm RBFs, cutoff 5 Å unless told otherwise), its ``Scalar`` output
  model (``EquivariantScalar`` for the ET) with ``reduce_op`` add, and ``mean`` / ``std`` of
  the training labels (``standardize``: per-atom outputs times ``std``, summed, plus ``mean``,
  the statistics computed as ``torchmdnet.data`` does: torch ``mean`` and ``std`` of the
  training labels; no prior: QM9 has no atom references for orbital energies);
* representation: ``TorchMD_ET``, its weights mapped from molssl's encoder by
  ``benchmarks/torchmd_reference.py`` (the parity test's mapping), and molssl's edges
  (``SharedEdges``: TorchMD-NET's neighbour kernel is compiled code this CPU checkout lacks);
  the pre-trained encoders have the whitened output vector norm of the Coord/Frad/UniCorn fork
  of TorchMD-NET, which upstream lacks, so a copy of it follows the layers (``WithVectorNorm``).
  Before training, the mapped representation's outputs are checked against molssl's encoder
  in float64 on a validation batch. Scratch is ``TorchMD_ET.reset_parameters()``: TorchMD-NET's
  own initialisation;
* three targets at once (as molssl's runs): the last ``GatedEquivariantBlock`` of the output
  model has 3 outputs instead of 1; ``mean`` and ``std`` are 3-vectors. That block is built
  anew after ``create_model``, and TorchMD-NET's ``GatedEquivariantBlock.__init__`` does not
  call its ``reset_parameters``: by default (``--last-block-init pytorch``, the recorded runs)
  it keeps PyTorch's default ``nn.Linear`` initialisation (uniform in ±1/sqrt(fan_in), non-zero
  biases), about 0.6 of the Xavier scale TorchMD-NET gives a one-target block. This, not the
  path, was most of the cross-check's advantage over molssl (docs/RESULTS.md, "The head's
  initialisation"); ``--last-block-init xavier`` resets it as TorchMD-NET would;
* loss and optimiser: TorchMD-NET's ``mse_loss`` on the labels in their units (meV; its
  ``LNNP.step``), ``torch.optim.AdamW`` on all parameters with weight decay 0 (``LNNP``), no
  gradient clipping (its default); the schedule is molssl's linear warm-up and cosine (50 and 600
  steps, floor 1e-7), not TorchMD-NET's plateau, so that only the path differs;
* data: ``QM9DataModule`` with the runner's settings (``split_seed`` 0, 1,000 / 500 / 3,000,
  the training draw and batch order by the seed), so the molecules are those of molssl's runs;
* selection: validation MAE (mean over the targets) every 3 epochs; the best state is tested;
  with several ``--lrs``, seed 0 runs each and the one with the lowest validation MAE (per arm)
  runs the ``--seeds``.

    export TORCHMD_NET_SRC=/path/to/torchmd-net     # see benchmarks/torchmd_reference.py
    OMP_NUM_THREADS=1 python benchmarks/transfer/torchmdnet_finetune.py \\
        --init unicorn=runs/qm9_label/pretrain/unicorn/version_0/checkpoints/last.ckpt \\
        --lrs 3e-3 6e-3 1.2e-2 2.4e-2 --output runs/qm9_torchmdnet \\
        --results-json docs/results/qm9_torchmdnet_crosscheck.json

Ablations, each putting one piece of molssl's path back: ``--loss standardized`` (MSE of the
standardised labels), ``--scratch-init molssl``, ``--head molssl`` (molssl's
``EquivariantScalarsHead`` with ``per_task=True``, one gated network per target: the form
molssl used before ``26b8055``).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import open_output

from molssl.datamodules.qm9 import QM9DataModule
from molssl.encoders.base import EncoderOutput
from molssl.encoders.et import EquivariantTransformer
from molssl.modules.init_from import load_encoder_weights
from molssl.modules.schedules import warmup_cosine_scheduler
from molssl.modules.task_heads import EquivariantScalarsHead
from torchmd_reference import load_torchmd_et, reference_with_vector_norm

PARITY_TOLERANCE = 1e-9


def data_module(args: argparse.Namespace, seed: int) -> QM9DataModule:
    """The runner's fine-tuning data (``qm9_label_efficiency.finetune_overrides``)."""
    data = QM9DataModule(
        root="qm9pack",
        targets=args.targets,
        split_seed=0,
        train_size=args.train_size,
        val_size=args.val_size,
        test_size=args.test_size,
        batch_size=args.batch,
        eval_batch_size=128,
        num_workers=0,
        seed=seed,
    )
    data.setup("fit")
    return data


def molssl_encoder(args: argparse.Namespace, init_from: Path | None) -> EquivariantTransformer:
    """molssl's ET of the runs (whitened vector norm), with ``init_from``'s ``encoder_3d``."""
    encoder = EquivariantTransformer(
        hidden_channels=args.hidden,
        num_layers=args.layers,
        num_heads=args.heads,
        num_rbf=args.rbf,
        cutoff_upper=args.cutoff,
        rbf_trainable=False,
        layernorm_on_vec="whitened",
    )
    if init_from is not None:
        load_encoder_weights(encoder, init_from, "encoder_3d.")
    return encoder


def torchmdnet_model(
    args: argparse.Namespace, representation: nn.Module, mean: Tensor, std: Tensor
) -> nn.Module:
    """``create_model`` as TorchMD-NET's training script calls it, the representation swapped
    for the mapped one and the output model's last block widened to the number of targets."""
    from torchmdnet.models.model import create_model
    from torchmdnet.models.utils import GatedEquivariantBlock

    hparams = {
        "model": "equivariant-transformer",
        "embedding_dimension": args.hidden,
        "num_layers": args.layers,
        "num_rbf": args.rbf,
        "rbf_type": "expnorm",
        "trainable_rbf": False,
        "activation": "silu",
        "attn_activation": "silu",
        "num_heads": args.heads,
        "distance_influence": "both",
        "neighbor_embedding": True,
        "cutoff_lower": 0.0,
        "cutoff_upper": args.cutoff,
        "max_z": 100,
        "max_num_neighbors": 32,
        "precision": 32,
        "derivative": False,
        "atom_filter": -1,
        "prior_model": None,
        "output_model": "Scalar",
        "reduce_op": "add",
    }
    model = create_model(hparams, mean=mean, std=std)
    model.representation_model = representation
    if args.head == "molssl":
        model.output_model = MolsslHeads(args.hidden, len(args.targets), model.output_model)
        return model
    blocks = model.output_model.output_network
    blocks[-1] = GatedEquivariantBlock(args.hidden // 2, len(args.targets), activation="silu")
    if args.last_block_init == "xavier":
        blocks[-1].reset_parameters()
    return model


class MolsslHeads(nn.Module):
    """molssl's ``EquivariantScalarsHead`` in its per-target form (``per_task=True``, one full
    gated network per target: molssl's default before ``26b8055``, what the ablation measured)
    in the place of TorchMD-NET's output model: its per-atom scalars go through
    ``TorchMD_Net``'s ``std``, reduction and ``mean`` as TorchMD-NET's would (``--head molssl``)."""

    def __init__(self, hidden: int, num_targets: int, torchmd_output: nn.Module) -> None:
        super().__init__()
        self.heads = EquivariantScalarsHead(hidden, num_targets, "sum", "silu", per_task=True)
        self.torchmd_output = [torchmd_output]  # its reduce only: a list keeps it unregistered

    def pre_reduce(self, x: Tensor, v: Tensor, z: Tensor, pos: Tensor, batch: Tensor,
                   box: Tensor | None = None) -> Tensor:  # fmt: skip
        output = EncoderOutput(node=x, graph=x.new_zeros(0), vec=v)
        return torch.stack([head.per_atom(output) for head in self.heads.heads], dim=-1)

    def reduce(self, x: Tensor, batch: Tensor, num_systems: int | None = None) -> Tensor:
        return self.torchmd_output[0].reduce(x, batch, num_systems=num_systems)

    def post_reduce(self, x: Tensor) -> Tensor:
        return self.torchmd_output[0].post_reduce(x)


def check_parity(encoder: EquivariantTransformer, batch: object) -> float:
    """Largest difference between molssl's encoder and its TorchMD-NET mapping, float64."""
    ours = copy.deepcopy(encoder).double()
    reference = reference_with_vector_norm(ours)
    double = batch.clone()
    double.pos = batch.pos.double()
    with torch.no_grad():
        out = ours(double)
        x, vec, *_ = reference(double.z, double.pos, double.batch)
    return max(float((out.node - x).abs().max()), float((out.vec - vec).abs().max()))


def split_ids(data: QM9DataModule) -> dict[str, str]:
    """Per split, a digest of its QM9 molecule ids (``mol_id``): equal digests, same molecules."""
    digests = {}
    for name in ("train", "val", "test"):
        dataset = getattr(data, f"{name}_dataset")
        ids = sorted(int(dataset[i].mol_id) for i in range(len(dataset)))
        digests[name] = (
            f"{len(ids)} ids, sha256 " + hashlib.sha256(str(ids).encode()).hexdigest()[:16]
        )
    return digests


@torch.no_grad()
def mae(model: nn.Module, loader: object) -> Tensor:
    """Per-target MAE over ``loader`` (the labels' units)."""
    model.eval()
    total, count = None, 0
    for batch in loader:
        y, _ = model(batch.z, batch.pos, batch=batch.batch)
        error = (y - batch.y).abs().sum(0)
        total = error if total is None else total + error
        count += batch.y.size(0)
    model.train()
    return total / count


def fine_tune(
    arm: str, init_from: Path | None, seed: int, lr: float, args: argparse.Namespace
) -> dict:
    """One run: build, check parity, train ``--steps`` steps, test the best validation state.

    A batch whose loss is not finite is skipped (no step), and 10 in a row end the run as
    failed, as molssl's fine-tuning does (``FinetuneModule``'s non-finite guard)."""
    from torchmdnet.loss import loss_class_mapping

    start = time.perf_counter()
    torch.manual_seed(seed)
    data = data_module(args, seed)
    labels = data.train_targets()
    mean, std = labels.mean(0).float(), labels.std(0).float()
    encoder = molssl_encoder(args, init_from)
    parity = check_parity(encoder, next(iter(data.val_dataloader())))
    if parity > PARITY_TOLERANCE:
        raise SystemExit(f"{arm}: mapped representation differs from molssl's by {parity:.1e}")
    representation = reference_with_vector_norm(encoder)
    if init_from is None and args.scratch_init == "torchmdnet":
        representation.reset_parameters()  # TorchMD-NET's own initialisation
    model = torchmdnet_model(args, representation, mean, std)
    loss_fn = loss_class_mapping["mse_loss"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    scheduler = warmup_cosine_scheduler(optimizer, args.warmup, args.steps, args.min_lr / lr)
    step, epoch, bad, best = 0, 0, 0, (math.inf, None, -1, -1)
    history = []
    while step < args.steps:
        for batch in data.train_dataloader():
            y, _ = model(batch.z, batch.pos, batch=batch.batch)
            if args.loss == "standardized":  # molssl's: MSE of the standardised labels
                loss = loss_fn((y - mean) / std, (batch.y - mean) / std)
            else:
                loss = loss_fn(y, batch.y)
            bad = 0 if torch.isfinite(loss) else bad + 1
            if bad >= 10:
                error = f"10 non-finite losses in a row at step {step}"
                return {"arm": arm, "seed": seed, "lr": lr, "error": error, "history": history}
            if bad:
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step >= args.steps:
                break
        epoch += 1
        if epoch % args.val_every_epochs == 0:
            val = float(mae(model, data.val_dataloader()).mean())
            history.append({"epoch": epoch, "step": step, "val_mae_mev": val})
            if val < best[0]:
                best = (val, copy.deepcopy(model.state_dict()), epoch, step)
    model.load_state_dict(best[1])
    test = mae(model, data.test_dataloader())
    return {
        "arm": arm,
        "seed": seed,
        "lr": lr,
        "loss": args.loss,
        "head": args.head,
        "scratch_init": args.scratch_init if init_from is None else None,
        "parity_max_abs_diff": parity,
        "mol_ids": split_ids(data),
        "val_mae_mev": best[0],
        "best_epoch": best[2],
        "best_step": best[3],
        "test_mae_mev": dict(zip(args.targets, (float(v) for v in test), strict=True)),
        "history": history,
        "wall_s": round(time.perf_counter() - start, 1),
    }


def summary(runs: list[dict], targets: list[str]) -> None:
    """Mean ± population std of test MAE per arm and target; change against scratch."""
    by_arm: dict[str, list[dict]] = {}
    for result in runs:
        if "error" not in result:
            by_arm.setdefault(result["arm"], []).append(result)

    def mean_of(rows: list[dict], target: str) -> float:
        return statistics.mean(r["test_mae_mev"][target] for r in rows)

    base = {t: mean_of(by_arm["scratch"], t) for t in targets} if "scratch" in by_arm else {}
    for arm, rows in by_arm.items():
        cells = []
        for target in targets:
            values = [r["test_mae_mev"][target] for r in rows]
            cell = f"{target} {mean_of(rows, target):.1f} ± {statistics.pstdev(values):.1f}"
            if base and arm != "scratch":
                cell += f" ({100 * (mean_of(rows, target) / base[target] - 1):+.1f}%)"
            cells.append(cell)
        val = statistics.mean(r["val_mae_mev"] for r in rows)
        print(f"{arm}: seeds {[r['seed'] for r in rows]}, val {val:.1f}; " + "; ".join(cells))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--output", type=Path, default=Path("runs/qm9_torchmdnet"))
    add("--init", nargs="*", default=[], help="ARM=CHECKPOINT pre-trained arms (scratch always)")
    add("--arms", nargs="*", default=None, help="run only these arms (default all)")
    add("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the chosen lr")
    add("--lrs", type=float, nargs="+", default=[2.4e-2], help="searched with seed 0")
    add("--min-lr", type=float, default=1e-7)
    add("--steps", type=int, default=600)
    add("--warmup", type=int, default=50)
    add("--val-every-epochs", type=int, default=3)
    add("--batch", type=int, default=32)
    add("--hidden", type=int, default=64)
    add("--layers", type=int, default=3)
    add("--heads", type=int, default=4)
    add("--rbf", type=int, default=32)
    add("--cutoff", type=float, default=5.0)
    add("--targets", nargs="+", default=["homo", "lumo", "gap"])
    add("--train-size", type=int, default=1000)
    add("--val-size", type=int, default=500)
    add("--test-size", type=int, default=3000)
    add(
        "--loss",
        choices=["mse", "standardized"],
        default="mse",
        help="TorchMD-NET's MSE in the labels' units, or molssl's on standardised labels",
    )
    add(
        "--scratch-init",
        choices=["torchmdnet", "molssl"],
        default="torchmdnet",
        help="scratch's representation: TorchMD-NET's initialisation or molssl's",
    )
    add(
        "--head",
        choices=["torchmdnet", "molssl"],
        default="torchmdnet",
        help="TorchMD-NET's output model (3 outputs) or molssl's one network per target",
    )
    add(
        "--last-block-init",
        choices=["pytorch", "xavier"],
        default="pytorch",
        help="the 3-output block: PyTorch's Linear default (the recorded runs) or TorchMD-NET's",
    )
    add("--results-json", type=Path, default=None, help="rows in the results schema here")
    add("--torchmd-net-src", default=None, help="TorchMD-NET checkout (default $TORCHMD_NET_SRC)")
    return parser


def run(arm: str, init_from: Path | None, seed: int, lr: float, args: argparse.Namespace) -> dict:
    """One run, read from ``--output`` when done before."""
    # The ablations' runs under their own names: _standardized, _molssl (scratch's init),
    # _head-molssl.
    variant = "".join(
        suffix for suffix, active in (
            ("_standardized", args.loss == "standardized"),
            ("_molssl", args.scratch_init == "molssl"),
            ("_head-molssl", args.head == "molssl"),
        ) if active
    )  # fmt: skip
    path = args.output / f"{arm}_lr{lr:g}_seed{seed}{variant}.json"
    if not path.is_file():
        path.write_text(json.dumps(fine_tune(arm, init_from, seed, lr, args), indent=1) + "\n")
    result = json.loads(path.read_text())
    keys = ("val_mae_mev", "best_step", "test_mae_mev", "wall_s", "parity_max_abs_diff", "error")
    shown = json.dumps({k: result.get(k) for k in keys})
    print(f"{arm} lr {lr:g} seed {seed}: {shown}", flush=True)
    return result


def chosen_lr(results: list[dict]) -> float:
    """The learning rate with the lowest validation MAE of the search runs (failed runs lose)."""
    finished = [r for r in results if "error" not in r]
    if not finished:
        raise SystemExit(f"every search run of {results[0]['arm']} failed")
    return min(finished, key=lambda r: r["val_mae_mev"])["lr"]


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.output = open_output(args.output)
    load_torchmd_et(args.torchmd_net_src)
    arms: dict[str, Path | None] = {"scratch": None}
    arms.update({k: Path(v) for k, v in (item.split("=", 1) for item in args.init)})
    if args.arms is not None:
        arms = {arm: init for arm, init in arms.items() if arm in args.arms}
    search = {arm: [run(arm, init, 0, lr, args) for lr in args.lrs] for arm, init in arms.items()}
    runs = []
    for arm, init_from in arms.items():
        lr = chosen_lr(search[arm])
        print(f"{arm}: lr {lr:g} chosen on validation (seed 0)")
        runs += [run(arm, init_from, seed, lr, args) for seed in args.seeds]
    summary(runs, args.targets)
    if args.results_json is not None:
        rows = [
            {"pretraining": run["arm"], "path": "torchmd-net", "target": target,
             "train_size": args.train_size, "seed": run["seed"], "lr": run["lr"],
             "val_mae_mev": run.get("val_mae_mev"),
             "test_mae_mev": run["test_mae_mev"][target] if "error" not in run else None,
             "loss": args.loss, "head": args.head,
             "scratch_init": args.scratch_init if run["arm"] == "scratch" else None,
             "role": "chosen point"}
            for run in runs for target in args.targets
        ]  # fmt: skip
        args.results_json.parent.mkdir(parents=True, exist_ok=True)
        args.results_json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
