"""Report stages of the transfer experiment: the ridge probe of the embeddings and the tables.

:func:`stage_probe` runs :mod:`probe` on every ``embed/<encoder>`` folder and pairs each
pre-trained encoder with the random-init one; :func:`report` prints the fine-tuning and probe
tables and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from probe import probe_embeddings, probe_splits, summarise_probes

__all__ = ["print_probe_table", "report", "result_rows", "stage_probe"]


def stage_probe(output: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Ridge probe (:mod:`probe`) of every embedded encoder; paired against random init."""
    folders = sorted(p.parent for p in (output / "embed").glob("*/embeddings.npy"))
    if not folders:
        return {}
    splits = probe_splits(args.freesolv)
    by_encoder = {
        folder.name: {name: probe_embeddings(folder, ids) for name, ids in splits.items()}
        for folder in folders
    }
    results: dict[str, Any] = {}
    reference = by_encoder.get("random_init")
    for name, by_split in by_encoder.items():
        summary = summarise_probes(by_split)
        if reference is not None and name != "random_init":
            names = [k for k in by_split if k.startswith("balanced_scaffold")]
            diffs = [by_split[k]["test_rmse"] - reference[k]["test_rmse"] for k in names]
            summary["balanced_minus_random_mean"] = sum(diffs) / len(diffs)
            summary["balanced_lower_than_random"] = sum(d < 0 for d in diffs)
        results[name] = {"summary": summary, "splits": by_split}
    return results


def print_probe_table(probe: dict[str, Any]) -> None:
    """The probe's summary table (test RMSE of ridge on frozen embeddings)."""
    print("\nRidge probe on frozen mean-pooled embeddings, FreeSolv test RMSE (kcal/mol)")
    print("| encoder | scaffold split | 10 balanced scaffold splits | minus random init (paired) |")
    print("| --- | --- | --- | --- |")
    for name, entry in probe.items():
        summary = entry["summary"]
        paired = ""
        if "balanced_minus_random_mean" in summary:
            paired = (
                f"{summary['balanced_minus_random_mean']:+.3f} "
                f"(lower on {summary['balanced_lower_than_random']}/{summary['balanced_n']})"
            )
        print(
            f"| {name} | {summary['scaffold_test_rmse']:.3f} | "
            f"{summary['balanced_test_rmse_mean']:.3f} ± {summary['balanced_test_rmse_std']:.3f}"
            f" | {paired} |"
        )


def report(
    results_file: Path, finetune: dict[str, Any], baseline: float, probe: dict[str, Any]
) -> None:
    """Prints the tables and writes them to ``results_file``."""
    scratch = finetune.get("scratch")
    scratch_mean = scratch["by_lr"][scratch["chosen_lr"]]["test"]["mean"] if scratch else None
    print(f"\nFreeSolv test RMSE (kcal/mol), scaffold split; train-mean baseline {baseline:.3f}")
    print("| variant | lr (chosen on val) | test RMSE mean ± std | per seed | vs scratch |")
    print("| --- | --- | --- | --- | --- |")
    for variant, entry in finetune.items():
        test = entry["by_lr"][entry["chosen_lr"]]["test"]
        change = ""
        if scratch_mean is not None and variant != "scratch":
            change = f"{100.0 * (test['mean'] - scratch_mean) / scratch_mean:+.1f}%"
        values = ", ".join(f"{v:.3f}" for v in test["values"])
        print(
            f"| {variant} | {entry['chosen_lr']} | {test['mean']:.3f} ± {test['std']:.3f} "
            f"(n={test['n']}) | {values} | {change} |"
        )
    if probe:
        print_probe_table(probe)
    results = {"finetune": finetune, "train_mean_baseline_rmse": baseline, "probe": probe}
    results_file.write_text(json.dumps(results, indent=2) + "\n")


def result_rows(finetune: dict[str, Any], names: dict[str, str]) -> list[dict[str, Any]]:
    """The chosen grid point's runs, one object per run, in the schema of
    ``docs/results/freesolv_transfer.json``: ``pretraining``, ``seed``, ``test_rmse``.

    ``names`` maps a variant to the name written (e.g. ``unicorn_no_mask_contrast``).
    """
    rows = []
    for variant, entry in finetune.items():
        test = entry["by_lr"][entry["chosen_lr"]]["test"]
        seeds = entry["by_lr"][entry["chosen_lr"]]["seeds"]
        for seed, value in zip(seeds, test["values"], strict=True):
            name = names.get(variant, variant)
            rows.append({"pretraining": name, "seed": seed, "test_rmse": round(value, 4)})
    return rows
