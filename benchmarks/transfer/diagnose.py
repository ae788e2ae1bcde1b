"""What pre-training did to the ET: weight norms and the vector features before and after whitening.

For each checkpoint given (pre-training or fine-tuning runs, or ``random`` for a fresh encoder of
the same sizes), prints and writes:

* the Frobenius norm of every parameter group of the 3D encoder (embedding, neighbour
  embedding, each attention layer's projections, output norms, the whitening's scale), next to
  the same encoder at its random initialisation, so growth during pre-training shows as a ratio;
* on a fixed batch of QM9 molecules (the first 256 of the validation subset of the
  label-efficiency experiment), the per-atom scale of the equivariant vector features going
  into the whitening (root mean square over channels and axes), its smallest-to-largest
  eigenvalue ratio (how planar the channels are: whitening divides by the square root of the
  smallest), the per-atom scale coming out of it, and the scale of the scalar features.

    python benchmarks/transfer/diagnose.py random \\
        runs/qm9_label/pretrain/frad/version_0/checkpoints/last.ckpt --output diagnose.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch_geometric.data import Batch

from molssl.datamodules.qm9 import QM9DataModule
from molssl.encoders import EquivariantTransformer
from molssl.modules.init_from import read_state_dict

__all__ = ["encoder_from", "parameter_norms", "relative_change", "vector_statistics"]

_PREFIXES = ("encoder_3d.", "encoder.")


def encoder_from(path: str, sizes: dict[str, int]) -> tuple[EquivariantTransformer, int | None]:
    """The checkpoint's 3D encoder (or a fresh one for ``random``) and its training step."""
    torch.manual_seed(0)
    encoder = EquivariantTransformer(
        hidden_channels=sizes["hidden"],
        num_layers=sizes["layers"],
        num_heads=sizes["heads"],
        num_rbf=sizes["rbf"],
        rbf_trainable=False,
        layernorm_on_vec="whitened",
    )
    if path == "random":
        return encoder, 0
    state = read_state_dict(path)
    prefix = next(p for p in _PREFIXES if any(k.startswith(p) for k in state))
    encoder.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    step = torch.load(path, map_location="cpu", weights_only=True).get("global_step")
    return encoder, step


def _group(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "attention_layers":
        return f"layer{parts[1]}.{parts[2]}"
    return parts[0]


def parameter_norms(encoder: nn.Module) -> dict[str, float]:
    """Frobenius norm of each parameter group (a layer's projection, an embedding, ...)."""
    squares: dict[str, float] = defaultdict(float)
    for name, parameter in encoder.named_parameters():
        squares[_group(name)] += float(parameter.detach().double().pow(2).sum())
    return {group: value**0.5 for group, value in squares.items()}


def relative_change(after: nn.Module, before: nn.Module) -> float:
    """``||after - before|| / ||before||`` over all encoder parameters (how far training moved
    them: fine-tuning from a pre-trained encoder, or from the same random initialisation)."""
    before_state = dict(before.named_parameters())
    diff = total = 0.0
    for name, parameter in after.named_parameters():
        reference = before_state[name].detach().double()
        diff += float((parameter.detach().double() - reference).pow(2).sum())
        total += float(reference.pow(2).sum())
    return (diff / total) ** 0.5


@torch.no_grad()
def vector_statistics(encoder: EquivariantTransformer, batch: Batch) -> dict[str, float]:
    """Scales of the features around the whitening on one batch (medians over atoms)."""
    captured: dict[str, torch.Tensor] = {}
    norm = encoder.out_norm_vec
    assert norm is not None
    handle = norm.register_forward_hook(lambda m, i, o: captured.update(inp=i[0], out=o))
    output = encoder(batch)
    handle.remove()
    vec_in, vec_out = captured["inp"].double(), captured["out"].double()
    centred = vec_in - vec_in.mean(-1, keepdim=True)
    covariance = centred @ centred.transpose(-1, -2) / centred.size(-1)
    eig = torch.linalg.eigvalsh(covariance).clamp(min=0)
    return {
        "vec_in_rms": float(vec_in.pow(2).mean((1, 2)).sqrt().median()),
        "vec_in_min_over_max_eigenvalue": float((eig[:, 0] / eig[:, 2].clamp(min=1e-30)).median()),
        "vec_out_rms": float(vec_out.pow(2).mean((1, 2)).sqrt().median()),
        "vec_out_rms_max": float(vec_out.pow(2).mean((1, 2)).sqrt().max()),
        "whitening_weight_rms": float(norm.weight.pow(2).mean().sqrt())
        if norm.weight is not None
        else 1.0,
        "node_rms": float(output.node.double().pow(2).mean(1).sqrt().median()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoint paths, or 'random'")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--rbf", type=int, default=32)
    parser.add_argument(
        "--moved",
        nargs=2,
        action="append",
        default=[],
        metavar=("AFTER", "BEFORE"),
        help="also report ||AFTER - BEFORE|| / ||BEFORE|| of the encoder parameters",
    )
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = {"hidden": args.hidden, "layers": args.layers, "heads": args.heads, "rbf": args.rbf}
    data = QM9DataModule(
        root="qm9pack", targets=["homo"], split_seed=0, train_size=1000, val_size=500
    )
    data.setup("fit")
    assert data.val_dataset is not None
    batch = Batch.from_data_list([data.val_dataset[i] for i in range(256)])
    reference = parameter_norms(encoder_from("random", sizes)[0])
    results: dict[str, Any] = {}
    for path in args.checkpoints:
        encoder, step = encoder_from(path, sizes)
        norms = parameter_norms(encoder)
        results[path] = {
            "step": step,
            "vectors": vector_statistics(encoder, batch),
            "norm_over_init": {group: norms[group] / reference[group] for group in norms},
            "norms": norms,
        }
        ratios = results[path]["norm_over_init"]
        print(f"{path} (step {step})")
        print("  " + json.dumps(results[path]["vectors"]))
        print("  norm / init: " + ", ".join(f"{g} {r:.2f}" for g, r in ratios.items()))
    for after, before in args.moved:
        change = relative_change(encoder_from(after, sizes)[0], encoder_from(before, sizes)[0])
        results[f"moved: {after} from {before}"] = change
        print(f"moved {change:.3f}: {after} from {before}")
    if args.output is not None:
        args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
