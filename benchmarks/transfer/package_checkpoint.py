"""The file that ships in ``molssl/pretrained``: a pre-training checkpoint cut to its 3D encoder.

A Lightning pre-training checkpoint carries the optimiser's moments, the objectives' heads and
(for UniCorn) the 2D encoder, none of which fine-tuning reads: ``init_from`` loads only the
``encoder_3d.*`` tensors. Keeping those, the global step (``init_from`` reports it) and the
encoder's ``init_args`` (so that a reader can check the sizes) makes the file a quarter of the
checkpoint, with the same tensors bit for bit::

    python benchmarks/transfer/package_checkpoint.py \\
        runs/freesolv_moses/pretrain/unicorn_no_mask_contrast/version_0/checkpoints/last.ckpt \\
        src/molssl/pretrained/NAME.ckpt
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch

PREFIX = "encoder_3d."


def package(source: Path, target: Path) -> dict[str, object]:
    """Writes ``target`` from the checkpoint ``source``; returns what it wrote (without tensors)."""
    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    state = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith(PREFIX)}
    if not state:
        raise SystemExit(f"{source}: no {PREFIX}* tensors")
    model = checkpoint.get("hyper_parameters", {})
    encoder = model.get("encoder_3d")
    # Saved as the CLI's dict ({"class_path", "init_args"}) or as the encoder object.
    if isinstance(encoder, dict):
        init_args = dict(encoder.get("init_args") or {})
    else:
        init_args = dict(getattr(encoder, "init_args", None) or {})
    record = {"state_dict": state, "global_step": int(checkpoint["global_step"])}
    record["encoder_init_args"] = init_args
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(record, target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    return {"tensors": len(state), "global_step": record["global_step"], "sha256": digest,
            "bytes": target.stat().st_size, "encoder_init_args": init_args}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a pre-training checkpoint (last.ckpt)")
    parser.add_argument("target", type=Path, help="the packaged file to write")
    args = parser.parse_args()
    print(package(args.source, args.target))


if __name__ == "__main__":
    main()
