"""Encoder training-step throughput and peak memory: ET, Graphormer and MoleBLEND.

For every (encoder, size, batch size) this times forward + backward of one training step,
``loss = node.sum() + graph.sum()`` in ``train()`` mode (dropout on, gradients kept, no
optimiser step, so no optimiser state in the memory figures), and reports molecules per second,
milliseconds per step, parameters and peak memory.

* Encoders: ``et`` (:class:`~molssl.encoders.et.EquivariantTransformer`, 3D), ``graphormer``
  (:class:`~molssl.encoders.graphormer.Graphormer`, 2D), ``blend``
  (:class:`~molssl.encoders.blend.MoleBlendTransformer`; ``relation_mode="blend"``, one drawn
  relation per atom pair as in pre-training, or ``--blend-relation-mode all``, every relation
  on every pair as in fine-tuning).
* Sizes: ``paper`` (ET 8 layers / 8 heads / 256 channels / 64 RBF / 5 Å cutoff, UniCorn;
  Graphormer 12 / 32 / 512, UniCorn; MoleBLEND 12 / 32 / 768, MoleBLEND) and ``small``
  (4 layers / 8 heads / 128 channels for all three, other settings as at paper size).
* Molecules: RDKit's bundled NCI set, drug-like size (at most ``--max-heavy-atoms`` heavy
  atoms), through molssl's own pipeline: ``mol_from_smiles`` (explicit H) -> seeded
  ``embed_conformers`` (ETKDGv3 + MMFF94) -> ``mol_to_data(conf_id=0)``, plus the 2D relations
  (``spd`` / ``path_edges``) precomputed per molecule by ``AddGraphRelations`` as a data
  pipeline would (``--no-precompute-relations`` leaves the shortest-path search inside the
  step). All of it happens once, before any timing; consecutive molecules form the batches,
  and each step takes the next batch (cycling), so every configuration sees the same molecules.
* Timing: ``--warmup`` untimed steps, then the timed steps (CUDA synchronised around them).
  Defaults on CPU: 1 warm-up, 3 timed steps at small size and 2 at paper size (paper size at
  batch 128 takes tens of seconds per step on a 2-core CPU); on CUDA 3 warm-up and 20 timed.
  ``x et`` is the step time relative to ET at the same size and batch in the same run.
  On a shared CPU also try ``--threads 1``: torch's multi-threaded ``index_add_`` /
  ``scatter_add_`` (ET's message passing) slows down many times over when its threads compete
  with other processes, which makes ET's figures swing far more than the dense encoders'.
* Memory: every configuration runs in a fresh subprocess (this script re-invoked with a hidden
  ``--one``), so configurations do not pollute each other. ``step peak`` is what the training
  step adds over the model and the batches: on CUDA ``torch.cuda.max_memory_allocated`` minus
  the allocation before the first step; on CPU ``ru_maxrss`` minus the resident set size before
  the first step. ``total peak`` is ``max_memory_allocated`` (CUDA) or the whole process's
  ``ru_maxrss`` (CPU, Python and libraries included). On CPU each subprocess's data segment is
  capped (``--memory-limit-gb``, default 75% of the memory available at start), so a
  configuration that does not fit is reported as out of memory instead of pushing a shared
  machine into the OOM killer.

* Precision: float32 (``fp32``) or bfloat16 autocast (``bf16``; ``--bf16`` for bf16 alone,
  ``--precisions fp32,bf16`` for both in one run, sharing the prepared molecules). ``x et`` and
  ``x fp32`` compare configurations of the same run.

Run: ``.venv/bin/python benchmarks/encoders.py [--device cuda] [--bf16 | --precisions fp32,bf16]
[--steps N]
    [--sizes small,paper] [--batches 32,128] [--encoders et,graphormer,blend] [--threads T]``
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import itertools
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from rdkit import RDConfig
from torch import nn
from torch_geometric.data import Batch, Data

from machine_info import (
    available_bytes,
    device_name,
    is_out_of_memory,
    load_average,
    peak_resident_bytes,
    resident_bytes,
)
from molssl.chem.conformers import ConformerOptions, embed_conformers
from molssl.chem.errors import MoleculeError
from molssl.chem.features import mol_from_smiles, mol_to_data
from molssl.chem.graph import AddGraphRelations
from molssl.encoders.blend import MoleBlendTransformer
from molssl.encoders.et import EquivariantTransformer
from molssl.encoders.graphormer import Graphormer

NCI_SMILES_PATH = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"

ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "et": EquivariantTransformer,
    "graphormer": Graphormer,
    "blend": MoleBlendTransformer,
}

_SMALL = {"num_layers": 4, "num_heads": 8, "hidden_channels": 128}
SIZES: dict[str, dict[str, dict[str, object]]] = {
    "small": {"et": _SMALL, "graphormer": _SMALL, "blend": _SMALL},
    "paper": {
        "et": {"num_layers": 8, "num_heads": 8, "hidden_channels": 256, "num_rbf": 64},
        "graphormer": {"num_layers": 12, "num_heads": 32, "hidden_channels": 512},
        "blend": {"num_layers": 12, "num_heads": 32, "hidden_channels": 768},
    },
}
# ET's cutoff (5 Å) and RBF count (64) are its constructor defaults at both sizes.

# Printed by a ``--one`` subprocess in front of its JSON result, so that stray output from
# libraries on stdout cannot be mistaken for it.
_RESULT_MARKER = "ENCODER_BENCHMARK_RESULT "


@dataclass(frozen=True)
class Config:
    """One measured configuration, as handed to a ``--one`` subprocess."""

    encoder: str
    size: str
    batch_size: int
    device: str
    bf16: bool
    threads: int
    warmup: int
    steps: int
    data_path: str
    memory_limit_bytes: int | None
    blend_relation_mode: str = "blend"


@dataclass
class Result:
    """What one configuration measured; ``error`` is set instead when it could not run."""

    config: Config
    parameters: int = 0
    seconds: float = 0.0
    molecules: int = 0
    step_peak_bytes: int = 0
    total_peak_bytes: int = 0
    error: str | None = None

    @property
    def ms_per_step(self) -> float:
        return 1000.0 * self.seconds / self.config.steps

    @property
    def molecules_per_s(self) -> float:
        return self.molecules / self.seconds


def prepare_molecules(
    num_molecules: int, max_heavy_atoms: int, seed: int, precompute_relations: bool
) -> tuple[list[Data], Counter[str]]:
    """The first ``num_molecules`` NCI molecules that featurize and embed; failures by reason."""
    options = ConformerOptions(num_conformers=1, seed=seed)
    relations = AddGraphRelations(max_hops=5)
    molecules: list[Data] = []
    failures: Counter[str] = Counter()
    with open(NCI_SMILES_PATH) as handle:
        for line in handle:
            if len(molecules) == num_molecules:
                break
            fields = line.split()
            if not fields:
                continue
            try:
                mol = mol_from_smiles(fields[0], max_heavy_atoms=max_heavy_atoms)
                mol = embed_conformers(mol, options)
            except MoleculeError as error:
                failures[error.reason] += 1
                continue
            data = mol_to_data(mol, conf_id=0)
            molecules.append(relations(data) if precompute_relations else data)
    if len(molecules) < num_molecules:
        raise SystemExit(f"only {len(molecules)} of {num_molecules} NCI molecules could be used")
    return molecules, failures


def step_batches(molecules: list[Data], batch_size: int, count: int) -> list[Batch]:
    """``count`` batches of consecutive molecules, wrapping around the list."""
    if batch_size > len(molecules):
        raise SystemExit(f"batch size {batch_size} exceeds the {len(molecules)} molecules")
    out = []
    for step in range(count):
        start = step * batch_size % len(molecules)
        chosen = [molecules[(start + k) % len(molecules)] for k in range(batch_size)]
        out.append(Batch.from_data_list(chosen))
    return out


def measure(config: Config) -> Result:
    """Build one encoder and its batches, then time the training steps (in this process)."""
    if config.memory_limit_bytes is not None:
        limit = config.memory_limit_bytes
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    # A pickle of Data objects, written by the parent into its own private temporary directory.
    molecules = torch.load(config.data_path, weights_only=False)
    batches = [
        batch.to(device)
        for batch in step_batches(molecules, config.batch_size, config.warmup + config.steps)
    ]
    torch.manual_seed(0)
    kwargs = dict(SIZES[config.size][config.encoder])
    if config.encoder == "blend":
        kwargs["relation_mode"] = config.blend_relation_mode
    model = ENCODERS[config.encoder](**kwargs).to(device)
    model.train()
    result = Result(config, parameters=sum(p.numel() for p in model.parameters()))
    del molecules
    gc.collect()

    def step(batch: Batch) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
            out = model(batch)
            loss = out.node.float().sum() + out.graph.float().sum()
        loss.backward()
        model.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        baseline = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        baseline = resident_bytes()
    try:
        for batch in batches[: config.warmup]:
            step(batch)
        timed = batches[config.warmup :]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for batch in timed:
            step(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        result.seconds = time.perf_counter() - start
    except (RuntimeError, MemoryError) as error:
        if not is_out_of_memory(error):
            raise
        cap = config.memory_limit_bytes
        result.error = "out of memory" + (f" (cap {cap / 2**30:.1f} GB)" if cap else "")
        return result
    result.molecules = sum(batch.num_graphs for batch in timed)
    if device.type == "cuda":
        result.total_peak_bytes = torch.cuda.max_memory_allocated(device)
    else:
        result.total_peak_bytes = peak_resident_bytes()
    result.step_peak_bytes = max(0, result.total_peak_bytes - baseline)
    return result


def run_one(argument: str) -> None:
    """The ``--one`` subprocess: measure one configuration and print its result."""
    config = Config(**json.loads(argument))
    try:
        result = measure(config)
    except Exception as error:  # reported in the table rather than as a traceback
        message = str(error).strip().splitlines()
        result = Result(config, error=f"{type(error).__name__}: {message[0] if message else ''}")
    print(_RESULT_MARKER + json.dumps(dataclasses.asdict(result)), flush=True)


def run_in_subprocess(config: Config, timeout_s: float) -> Result:
    """Measure ``config`` in a fresh Python process; a crash or timeout becomes ``error``."""
    command = [sys.executable, __file__, "--one", json.dumps(dataclasses.asdict(config))]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return Result(config, error=f"timed out after {timeout_s:.0f} s")
    for line in done.stdout.splitlines():
        if line.startswith(_RESULT_MARKER):
            fields = json.loads(line[len(_RESULT_MARKER) :])
            fields["config"] = config
            return Result(**fields)
    if done.returncode < 0:
        return Result(config, error=f"killed by signal {-done.returncode}")
    last = done.stderr.strip().splitlines()
    return Result(config, error=f"exit {done.returncode}: {last[-1] if last else 'no output'}")


def print_table(results: list[Result]) -> None:
    header = (
        f"{'encoder':<11}{'size':<7}{'batch':>6}{'dtype':>6}{'params':>9}{'steps':>6}"
        f"{'ms/step':>10}{'mol/s':>9}{'x et':>7}{'x fp32':>7}{'step peak':>11}{'total peak':>12}"
    )
    print(header)
    print("-" * len(header))
    ok = [r for r in results if r.error is None]
    et_ms = {
        (r.config.size, r.config.batch_size, r.config.bf16): r.ms_per_step
        for r in ok
        if r.config.encoder == "et"
    }
    fp32_ms = {
        (r.config.encoder, r.config.size, r.config.batch_size): r.ms_per_step
        for r in ok
        if not r.config.bf16
    }
    for r in results:
        c = r.config
        dtype = "bf16" if c.bf16 else "fp32"
        start = f"{c.encoder:<11}{c.size:<7}{c.batch_size:>6}{dtype:>6}"
        params = f"{r.parameters / 1e6:>8.2f}M" if r.parameters else f"{'':>9}"
        if r.error is not None:
            print(f"{start}{params}{c.steps:>6}  {r.error}")
            continue
        et = et_ms.get((c.size, c.batch_size, c.bf16))
        fp32 = fp32_ms.get((c.encoder, c.size, c.batch_size))
        x_et = f"{r.ms_per_step / et:>7.2f}" if et else f"{'-':>7}"
        x_fp32 = f"{r.ms_per_step / fp32:>7.2f}" if fp32 and c.bf16 else f"{'-':>7}"
        print(
            f"{start}{params}{c.steps:>6}{r.ms_per_step:>10.1f}{r.molecules_per_s:>9.1f}{x_et}"
            f"{x_fp32}{r.step_peak_bytes / 2**20:>8.0f} MB{r.total_peak_bytes / 2**20:>9.0f} MB"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:index]")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast in the step")
    parser.add_argument(
        "--precisions", default=None, help="comma-separated fp32,bf16 (default: --bf16 or fp32)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps (default: CPU 3 small / 2 paper)"
    )
    parser.add_argument("--warmup", type=int, default=None, help="default: CPU 1, CUDA 3")
    parser.add_argument("--sizes", default="small,paper")
    parser.add_argument("--batches", default="32,128")
    parser.add_argument("--encoders", default="et,graphormer,blend")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--molecules", type=int, default=512, help="NCI molecules prepared")
    parser.add_argument("--max-heavy-atoms", type=int, default=50)
    parser.add_argument("--seed", type=int, default=42, help="conformer seed")
    parser.add_argument("--no-precompute-relations", action="store_true")
    parser.add_argument(
        "--blend-relation-mode",
        choices=("blend", "all"),
        default="blend",
        help="MoleBLEND: one relation per pair (pre-training) or all three (fine-tuning)",
    )
    parser.add_argument(
        "--memory-limit-gb",
        type=float,
        default=None,
        help="cap per CPU subprocess (default 75%% of available memory; 0 for none)",
    )
    parser.add_argument("--timeout-s", type=float, default=900.0, help="per configuration")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.encoders = [name.strip() for name in args.encoders.split(",") if name.strip()]
    args.sizes = [name.strip() for name in args.sizes.split(",") if name.strip()]
    args.batches = [int(size) for size in args.batches.split(",") if size.strip()]
    if args.precisions is None:
        args.precisions = ["bf16" if args.bf16 else "fp32"]
    else:
        if args.bf16:
            parser.error("give either --bf16 or --precisions")
        args.precisions = [name.strip() for name in args.precisions.split(",") if name.strip()]
        for name in args.precisions:
            if name not in ("fp32", "bf16"):
                parser.error(f"unknown precision {name!r}; choose from fp32, bf16")
    for name in args.encoders:
        if name not in ENCODERS:
            parser.error(f"unknown encoder {name!r}; choose from {', '.join(ENCODERS)}")
    for name in args.sizes:
        if name not in SIZES:
            parser.error(f"unknown size {name!r}; choose from {', '.join(SIZES)}")
    if any(size < 1 for size in args.batches) or (args.steps is not None and args.steps < 1):
        parser.error("batch sizes and --steps must be at least 1")
    if args.warmup is not None and args.warmup < 0:
        parser.error("--warmup must be at least 0")
    return args


def main() -> None:
    args = parse_args()
    if args.one is not None:
        run_one(args.one)
        return
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
    on_cuda = device.type == "cuda"
    warmup = args.warmup if args.warmup is not None else (3 if on_cuda else 1)
    memory_limit: int | None = None
    if not on_cuda:
        if args.memory_limit_gb is None:
            available = available_bytes()
            memory_limit = int(0.75 * available) if available else None
        elif args.memory_limit_gb > 0:
            memory_limit = int(args.memory_limit_gb * 2**30)

    wall_start = time.perf_counter()
    molecules, failures = prepare_molecules(
        args.molecules, args.max_heavy_atoms, args.seed, not args.no_precompute_relations
    )
    atoms = [data.num_nodes for data in molecules]
    workdir = Path(tempfile.mkdtemp(prefix="molssl_encoders_"))
    data_path = workdir / "molecules.pt"
    torch.save(molecules, data_path)
    prep_seconds = time.perf_counter() - wall_start

    names = {"fp32": "float32", "bf16": "bfloat16 autocast"}
    dtype = ", ".join(names[name] for name in args.precisions)
    print(f"device: {device_name(device)}, torch {torch.__version__}, {args.threads} threads")
    if not on_cuda:
        print("note: CPU figures; for GPU figures run with --device cuda [--precisions fp32,bf16]")
    print(
        f"dtype: {dtype}; step: forward + backward of node.sum() + graph.sum(), train mode, "
        "no optimiser"
    )
    skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(failures.items())) or "none"
    print(
        f"molecules: {len(molecules)} NCI, <= {args.max_heavy_atoms} heavy atoms, "
        f"ETKDGv3+MMFF94 seed {args.seed} (skipped: {skipped}); atoms with H per molecule: "
        f"mean {sum(atoms) / len(atoms):.1f}, max {max(atoms)}; prepared in {prep_seconds:.0f} s"
    )
    relations = "off" if args.no_precompute_relations else "precomputed per molecule"
    limit = f"{memory_limit / 2**30:.1f} GB per subprocess" if memory_limit else "none"
    print(
        f"2D relations: {relations}; MoleBLEND relation_mode={args.blend_relation_mode!r}; "
        f"warm-up steps: {warmup}; memory cap: {limit}"
    )
    print(f"load average at start: {load_average()}")
    print(flush=True)

    results: list[Result] = []
    try:
        for precision, size, batch_size, encoder in itertools.product(
            args.precisions, args.sizes, args.batches, args.encoders
        ):
            if args.steps is not None:
                steps = args.steps
            else:
                steps = 20 if on_cuda else (3 if size == "small" else 2)
            config = Config(
                encoder=encoder,
                size=size,
                batch_size=batch_size,
                device=args.device,
                bf16=precision == "bf16",
                threads=args.threads,
                warmup=warmup,
                steps=steps,
                data_path=str(data_path),
                memory_limit_bytes=memory_limit,
                blend_relation_mode=args.blend_relation_mode,
            )
            result = run_in_subprocess(config, args.timeout_s)
            results.append(result)
            outcome = result.error or f"{result.ms_per_step:.0f} ms/step"
            label = f"{encoder} {size} batch {batch_size} {precision}"
            print(f"  {label}: {outcome}", file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(results)
    print(f"\nload average at end: {load_average()} (figures scale with other load)")
    print(f"wall time: {time.perf_counter() - wall_start:.0f} s")


if __name__ == "__main__":
    main()
