"""Pre-training throughput of the UniCorn module, and whether the loader or the model limits it.

Measures, on real molecules (RDKit's bundled NCI set as pre-training records: explicit H, one
seeded ETKDGv3 + MMFF94 conformer each, ``record_from_smiles``), with samples built as a loader
worker builds them (``view_sample``: the record's arrays, the module's views in order,
per-sample torsion keys dropped; ``collate_samples``) -- without the data module's loader
classes:

* the model: full training steps of ``PretrainModule`` with UniCorn's objectives (fragment
  masking, torsion-augmented denoising, cross-modal InfoNCE) -- forward of both encoders, every
  loss, backward, gradient clipping at 5, AdamW step -- at the paper size (ET 256/8 layers/8
  heads, Graphormer 512/12/32) and at the demo's small size (64 wide, 3 layers, 4 heads), in
  steps/s and molecules/s after warm-up steps. Each size runs twice on the same batches: with
  the InfoNCE key from the unmasked graph (``view_2d="unmasked"``, configs/unicorn.yaml: a
  second Graphormer pass) and from the masked graph (``"masked"``, one pass; the ablation),
  whose ratio is the cost of the unmasked key (``--views`` picks; ``unmasked_stop_grad``
  adds ``stop_grad_2d=True``, under which the second pass runs without autograd). Each key
  also runs as several *code variants* (``--code``): ``today`` (the ET's plain edge path with
  the first layer's zero vectors computed, and the transformer on the padded batch: the code
  before issue #18's CPU work, reproduced by switches whose paths the tests compare with the
  new ones), ``new`` (the defaults: ET edges as undirected pairs, or in chunks where the edge
  tensors are large, the zero-vector shortcut, packed tokens and size-bucketed attention in
  the transformer, the Graphormer's relations and bias shared by the two 2D passes) and
  ``new+compile`` (also ``compile_layers=True`` on the ET). All variants take turns step by
  step, so that a busy shared machine slows them alike; each gets its ratio to ``today`` in
  wall time and in CPU time (this process's user + system seconds, which other processes
  disturb much less);
* the data pipeline: samples/s of one loader worker (sample building with all views on:
  torsion augmentation, coordinate noise, fragment mask, plus collation, through the
  functions the streaming loader uses), against the same without views as the in-run
  baseline, and with ``AddGraphRelations`` added per sample.

Records carry ``spd`` but not ``path_edges``, so by default Graphormer's 2D relations are
searched per molecule on the CPU inside every step (``dense_graph_relations``), as in training
today; ``--precompute-relations`` adds them per sample in the loader instead.

It then prints, per size, how many loader workers the model's rate needs and whether the loader
(with ``--workers`` workers; default: ``configs/unicorn.yaml``'s ``num_workers``) or the model
is the bottleneck.

Usage::

    .venv/bin/python benchmarks/pretrain_step.py                 # CPU, batch 32, both sizes
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pretrain_step.py --threads 1 \
        --views unmasked --code today,new,new+compile            # issue #18's figures
    .venv/bin/python benchmarks/pretrain_step.py --device cuda --batch 256 --paper-steps 10
    .venv/bin/python benchmarks/pretrain_step.py --device cuda --precision bf16-mixed ...

``--precision bf16-mixed`` runs forward and losses under bfloat16 autocast with float32 weights,
gradients and optimiser state, as Lightning's ``precision="bf16-mixed"`` does. On CUDA the table
also gives the peak GPU memory of the training steps (``torch.cuda.max_memory_allocated``:
weights, AdamW state, activations and batches).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from rdkit import RDConfig
from torch_geometric.data import Batch, Data

from machine_info import device_name
from molssl.chem.conformers import ConformerOptions
from molssl.chem.errors import MoleculeError
from molssl.chem.graph import AddGraphRelations
from molssl.datamodules.collate import collate_samples
from molssl.datamodules.records import MoleculeRecord, record_from_smiles
from molssl.datamodules.stream import view_sample
from molssl.encoders import EquivariantTransformer, Graphormer
from molssl.modules import PretrainModule
from molssl.objectives import CoordDenoise, CrossModalInfoNCE, FragmentMask, TorsionAugment
from molssl.objectives.base import View

NCI_SMILES_PATH = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
UNICORN_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "unicorn.yaml"

SIZES = {
    "paper": {
        "et": {"hidden_channels": 256, "num_layers": 8, "num_heads": 8, "num_rbf": 64},
        "graphormer": {"hidden_channels": 512, "num_layers": 12, "num_heads": 32},
    },
    "small": {
        "et": {"hidden_channels": 64, "num_layers": 3, "num_heads": 4, "num_rbf": 32},
        "graphormer": {"hidden_channels": 64, "num_layers": 3, "num_heads": 4},
    },
}


@dataclass
class ModelTiming:
    """Timed training steps of one model size, InfoNCE key view and code variant: total wall
    seconds, and the medians per step of wall and CPU seconds."""

    size: str
    view_2d: str
    code: str
    parameters: int
    steps: int
    seconds: float
    median_wall: float
    median_cpu: float
    molecules: int
    peak_gpu_bytes: int | None = None

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds

    @property
    def molecules_per_s(self) -> float:
        return self.molecules / self.seconds


#: The InfoNCE key variants ``--views`` may time, as CrossModalInfoNCE arguments.
KEY_VARIANTS = {
    "unmasked": {"view_2d": "unmasked"},
    "masked": {"view_2d": "masked"},
    "unmasked_stop_grad": {"view_2d": "unmasked", "stop_grad_2d": True},
}


#: The code paths ``--code`` may time (see the module docstring).
CODE_VARIANTS = ("today", "new", "new+compile")


def set_code(module: PretrainModule, code: str) -> PretrainModule:
    """Switch ``module``'s encoders to the code path ``code`` (:data:`CODE_VARIANTS`)."""
    if code not in CODE_VARIANTS:
        raise ValueError(f"unknown code variant {code!r}; choose from {CODE_VARIANTS}")
    et, transformer = module.encoder_3d, module.encoder_2d.transformer
    if code == "today":
        for layer in et.attention_layers:
            layer.edge_chunk = None
        et.skip_zero_vectors = False
        et.pair_edges = False
        transformer.packed = False
        module.encoder_2d.share_graph_bias = False
    et.compile_layers = code == "new+compile"
    return module


def configured_workers() -> int:
    """``num_workers`` of the shipped UniCorn config (4 if it cannot be read)."""
    import yaml

    try:
        config = yaml.safe_load(UNICORN_CONFIG.read_text())
        return int(config["data"]["init_args"]["num_workers"])
    except (OSError, KeyError, TypeError, ValueError):
        return 4


def unicorn_module(size: str, view_2d: str = "unmasked") -> PretrainModule:
    """The UniCorn objectives on encoders of the given size (paper hyper-parameters otherwise);
    ``view_2d`` names the InfoNCE key variant (:data:`KEY_VARIANTS`)."""
    sizes = SIZES[size]
    return PretrainModule(
        objectives=[
            FragmentMask(),
            CoordDenoise(sigma=0.04),
            CrossModalInfoNCE(temperature=0.5, **KEY_VARIANTS[view_2d]),
        ],
        encoder_3d=EquivariantTransformer(
            **sizes["et"], rbf_trainable=False, layernorm_on_vec="whitened"
        ),
        encoder_2d=Graphormer(**sizes["graphormer"]),
        views=[TorsionAugment(2.0, unit="deg")],
    )


def prepare_records(num_molecules: int, seed: int) -> tuple[list[MoleculeRecord], Counter[str]]:
    """The first ``num_molecules`` NCI molecules as pre-training records (one seeded conformer
    each, as the embedded default prepares them); failures counted by reason."""
    options = ConformerOptions(num_conformers=1, seed=seed)
    records: list[MoleculeRecord] = []
    failures: Counter[str] = Counter()
    with open(NCI_SMILES_PATH) as handle:
        for line in handle:
            if len(records) == num_molecules:
                break
            fields = line.split()
            if not fields:
                continue
            try:
                records.append(record_from_smiles(fields[0], len(records), options))
            except MoleculeError as error:
                failures[error.reason] += 1
    return records, failures


def make_sample(
    record: MoleculeRecord, views: list[View], relations: AddGraphRelations | None
) -> Data:
    """One training sample as a loader worker builds it (:func:`view_sample`: the record's
    arrays, the views in order, the per-sample torsion keys dropped); ``relations`` adds
    ``spd``/``path_edges`` when given."""
    data = view_sample(record, views)
    return relations(data) if relations is not None else data


def training_batches(
    records: list[MoleculeRecord],
    views: list[View],
    relations: AddGraphRelations | None,
    batch_size: int,
    count: int,
) -> list[Batch]:
    """``count`` batches of consecutive records (cycling), each sample with fresh views."""
    batches = []
    for step in range(count):
        first = step * batch_size
        chosen = [records[(first + k) % len(records)] for k in range(batch_size)]
        batches.append(collate_samples([make_sample(r, views, relations) for r in chosen]))
    return batches


def time_models(
    size: str,
    variants: list[str],
    codes: list[str],
    records: list[MoleculeRecord],
    batch_size: int,
    relations: bool,
    warmup: int,
    steps: int,
    device: torch.device,
    precision: str = "32",
    profile_rows: int = 0,
) -> list[ModelTiming]:
    """Warm-up steps, then ``steps`` timed training steps of every key variant and code
    variant on the same pre-built batches, from the same initial weights. The variants take
    turns step by step, so that a change of load on a shared machine falls on all of them
    alike."""

    def autocast() -> torch.autocast | nullcontext:
        if precision == "bf16-mixed":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return nullcontext()

    def make_step(module: PretrainModule) -> Callable[[Batch], None]:
        optimizer = torch.optim.AdamW(module.parameters(), lr=4e-4, betas=(0.9, 0.999))

        def step(batch: Batch) -> None:
            with autocast():
                total, _ = module.objective_results(batch)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 5.0)
            optimizer.step()

        return step

    pairs = [(variant, code) for variant in variants for code in codes]
    modules = []
    for variant, code in pairs:
        torch.manual_seed(0)
        modules.append(set_code(unicorn_module(size, variant), code).to(device).train())
    views = sorted(modules[0].pipeline_views(), key=lambda view: view.order)
    relation_transform = graph_relations(modules[0]) if relations else None
    torch.manual_seed(1)
    batches = training_batches(records, views, relation_transform, batch_size, warmup + steps)
    batches = [b.to(device) for b in batches]
    step_fns = [make_step(module) for module in modules]
    wall: list[list[float]] = [[] for _ in pairs]
    cpu: list[list[float]] = [[] for _ in pairs]
    peaks = [0] * len(pairs)
    for index, batch in enumerate(batches):
        for k, step in enumerate(step_fns):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            synchronize(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            step(batch)
            synchronize(device)
            if index >= warmup:
                wall[k].append(time.perf_counter() - start)
                cpu[k].append(time.process_time() - start_cpu)
            if device.type == "cuda":
                peaks[k] = max(peaks[k], torch.cuda.max_memory_allocated(device))
    molecules = sum(int(b.num_graphs) for b in batches[warmup:])
    if profile_rows:
        print(f"\nprofile of the {pairs[-1]} key and code variant:")
        print_profile(step_fns[-1], batches[warmup], device, profile_rows)
    return [
        ModelTiming(
            size,
            variant,
            code,
            sum(p.numel() for p in module.parameters()),
            steps,
            sum(wall[k]),
            statistics.median(wall[k]),
            statistics.median(cpu[k]),
            molecules,
            peaks[k] if device.type == "cuda" else None,
        )
        for k, ((variant, code), module) in enumerate(zip(pairs, modules, strict=True))
    ]


def print_profile(
    step: Callable[[Batch], None], batch: Batch, device: torch.device, rows: int
) -> None:
    """One more step under ``torch.profiler``: the operators that take the most host time and,
    on CUDA, the most device time (where a slow step spends it)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        step(batch)
        synchronize(device)
    averages = profiler.key_averages()
    print(f"\nprofile of one step, top {rows} by host time (self):")
    print(averages.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60))
    if device.type == "cuda":
        print(f"\nprofile of one step, top {rows} by device time (self):")
        print(
            averages.table(
                sort_by="self_device_time_total", row_limit=rows, max_name_column_width=60
            )
        )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def graph_relations(module: PretrainModule) -> AddGraphRelations:
    """The per-sample 2D relations transform matching the module's Graphormer."""
    return AddGraphRelations(max_hops=module.encoder_2d.attention_bias.max_hops)


def loader_samples_per_s(
    records: list[MoleculeRecord],
    views: list[View],
    relations: AddGraphRelations | None,
    batch_size: int,
    repeats: int,
) -> float:
    """Samples/s of one worker: sample building (``to_data``, views) and collation."""
    torch.manual_seed(0)
    count = 0
    start = time.perf_counter()
    for _ in range(repeats):
        for first in range(0, len(records), batch_size):
            chosen = records[first : first + batch_size]
            collate_samples([make_sample(r, views, relations) for r in chosen])
            count += len(chosen)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", type=int, default=300, help="NCI molecules prepared")
    parser.add_argument("--seed", type=int, default=0, help="conformer seed")
    parser.add_argument(
        "--precompute-relations",
        action="store_true",
        help="add spd/path_edges per sample (loader) instead of computing them in the step",
    )
    parser.add_argument("--batch", type=int, default=32, help="molecules per batch")
    parser.add_argument("--sizes", default="small,paper", help="comma-separated: small,paper")
    parser.add_argument(
        "--views",
        default="unmasked,masked",
        help="InfoNCE key variants to time, comma-separated: unmasked (the default), masked "
        "(ablation), unmasked_stop_grad",
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per size")
    parser.add_argument("--small-steps", type=int, default=10, help="timed steps, small size")
    parser.add_argument("--paper-steps", type=int, default=3, help="timed steps, paper size")
    parser.add_argument(
        "--code",
        default="new",
        help=f"code variants to time, comma-separated: {', '.join(CODE_VARIANTS)}",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="loader workers to judge with (default: configs/unicorn.yaml's num_workers)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:index]")
    parser.add_argument(
        "--precision",
        choices=("32", "bf16-mixed"),
        default="32",
        help="float32, or bfloat16 autocast with float32 weights (as Lightning's bf16-mixed)",
    )
    parser.add_argument(
        "--profile", type=int, default=0, help="print this many profiler rows of one step"
    )
    args = parser.parse_args()
    if args.workers is None:
        args.workers = configured_workers()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")

    prep_start = time.perf_counter()
    records, failures = prepare_records(args.molecules, args.seed)
    prep_seconds = time.perf_counter() - prep_start
    atoms = [record.num_atoms for record in records]
    dtype = "float32" if args.precision == "32" else "bfloat16 autocast (bf16-mixed)"
    skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(failures.items())) or "none"
    print(
        f"device {device_name(device)}, torch {torch.__version__} "
        f"({torch.get_num_threads()} torch threads, {os.cpu_count()} cores), "
        f"{dtype}, batch {args.batch}; {len(records)} molecules of RDKit's NCI set "
        f"(skipped: {skipped}; prepared in {prep_seconds:.0f} s), "
        f"{sum(atoms) / len(atoms):.1f} atoms per molecule with H; load average "
        + " ".join(f"{value:.2f}" for value in os.getloadavg())
    )

    # Data pipeline: one worker, all UniCorn views vs none (baseline), and with the 2D
    # relations precomputed per sample (what --precompute-relations moves into the workers).
    module = unicorn_module("small")
    views = sorted(module.pipeline_views(), key=lambda view: view.order)
    bare_rate = loader_samples_per_s(records, [], None, args.batch, repeats=2)
    view_rate = loader_samples_per_s(records, views, None, args.batch, repeats=2)
    relations = graph_relations(module)
    relation_rate = loader_samples_per_s(records, views, relations, args.batch, repeats=2)
    names = ", ".join(type(view).__name__ for view in views)
    print("\ndata pipeline, one worker (sample + collate):")
    print(f"  no views           {bare_rate:9.0f} samples/s")
    print(
        f"  all views          {view_rate:9.0f} samples/s  ({view_rate / bare_rate:.2f}x; {names})"
    )
    print(
        f"  + 2D relations     {relation_rate:9.0f} samples/s  ({relation_rate / bare_rate:.2f}x; "
        f"AddGraphRelations(max_hops={relations.max_hops}))"
    )
    supply_rate = relation_rate if args.precompute_relations else view_rate

    steps = {"small": args.small_steps, "paper": args.paper_steps}
    timings = [
        timing
        for size in args.sizes.split(",")
        for timing in time_models(
            size,
            args.views.split(","),
            args.code.split(","),
            records,
            args.batch,
            args.precompute_relations,
            args.warmup,
            steps[size],
            device,
            args.precision,
            args.profile,
        )
    ]
    where = "in the loader" if args.precompute_relations else "in the step (on the CPU)"
    print(
        f"\nUniCorn training step (forward, 3 losses, backward, clip, AdamW), batch {args.batch}, "
        f"2D relations {where}:"
    )
    print(
        f"  {'size':<6} {'key':<18} {'code':<12} {'params':>8} {'steps':>5} {'ms/step':>9}"
        f" {'x today':>7} {'CPU ms':>8} {'x today':>7} {'mol/s':>7} {'peak GPU':>9}"
        f"  {'workers needed':>14}  bottleneck ({args.workers} workers)"
    )
    today = {(t.size, t.view_2d): t for t in timings if t.code == "today"}
    for t in timings:
        needed = t.molecules_per_s / supply_rate
        supply = args.workers * supply_rate
        verdict = "loader" if supply < t.molecules_per_s else "model"
        peak = f"{t.peak_gpu_bytes / 2**30:6.2f} GB" if t.peak_gpu_bytes is not None else "-"
        base = today.get((t.size, t.view_2d))
        wall_ratio = f"{t.median_wall / base.median_wall:7.2f}" if base else f"{'-':>7}"
        cpu_ratio = f"{t.median_cpu / base.median_cpu:7.2f}" if base else f"{'-':>7}"
        print(
            f"  {t.size:<6} {t.view_2d:<18} {t.code:<12} {t.parameters / 1e6:7.2f}M {t.steps:>5}"
            f" {1000 * t.median_wall:9.1f} {wall_ratio} {1000 * t.median_cpu:8.1f} {cpu_ratio}"
            f" {t.molecules_per_s:7.1f} {peak:>9}"
            f"  {needed:14.2f}  {verdict} (loader {supply:.0f} vs model "
            f"{t.molecules_per_s:.0f} mol/s, {supply / t.molecules_per_s:.1f}x)"
        )
    print_key_cost(timings)
    print("load average after: " + " ".join(f"{value:.2f}" for value in os.getloadavg()))


def print_key_cost(timings: list[ModelTiming]) -> None:
    """Per size and code variant, the step time of each unmasked key variant over the masked
    key's (same batches)."""
    by_size: dict[str, dict[str, ModelTiming]] = {}
    for timing in timings:
        by_size.setdefault(f"{timing.size} ({timing.code})", {})[timing.view_2d] = timing
    for size, views in by_size.items():
        if "masked" not in views:
            continue
        masked_ms = 1000 * views["masked"].seconds / views["masked"].steps
        for name, timing in views.items():
            if name == "masked":
                continue
            ms = 1000 * timing.seconds / timing.steps
            print(
                f"  {size}: the {name} key (second Graphormer pass) costs {ms - masked_ms:+.1f} "
                f"ms/step, {ms / masked_ms:.2f}x the masked key's step time"
            )


if __name__ == "__main__":
    main()
