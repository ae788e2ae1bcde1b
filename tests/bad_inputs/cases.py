"""The bad-input cases: what is given to which entry point, and what must come out.

Each case's function builds the bad input in a fresh folder, runs the entry point, checks
that no record was lost or shifted where molecules are kept, and returns what it observed as
one line. ``expect`` is ``error`` (a typed exception or exit status 2 with a message),
``recorded`` (the run goes on; the entry is dropped and listed with a reason) or ``kept``
(nothing is wrong with the data for the pipeline; it goes on as the table says). ``match`` is a
regular expression the observed line must contain. ``python -m tests.bad_inputs.table`` runs
them all and prints the table of docs/RELIABILITY.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.bad_inputs import cli_cases, finetune_cases, prepare_cases
from tests.bad_inputs.shared import SharedInputs


@dataclass(frozen=True)
class BadInput:
    """One case of the suite."""

    id: str
    entry: str
    given: str
    expect: str
    match: str
    run: Callable[[Path, SharedInputs], str]


PREPARE = "`molssl prepare`"
CSV = "`MoleculeNetDataModule.setup`"
QM9 = "`QM9DataModule.setup`"
MD = "`MD22DataModule.setup` (MD17 alike)"

CASES: tuple[BadInput, ...] = (
    BadInput("prepare-invalid-smiles", PREPARE, "two unparsable SMILES among valid ones",
             "recorded", r"invalid_smiles \(line 2, mol_id 1\), invalid_smiles \(line 4",
             prepare_cases.invalid_smiles),
    BadInput("prepare-unknown-element", PREPARE, "a dummy atom `*` (no element)",
             "recorded", r"unsupported_element \(line 2, mol_id 1\)",
             prepare_cases.unknown_element),
    BadInput("prepare-empty-file", PREPARE, "an empty .smi file", "error",
             r"exit 2: .*no entry was read.*no usable molecule", prepare_cases.empty_file),
    BadInput("prepare-truncated-gz", PREPARE, "a .smi.gz cut in half", "recorded",
             r"truncated_file", prepare_cases.truncated_gzip),
    BadInput("prepare-truncated-sdf", PREPARE, "an SDF whose last record is cut", "recorded",
             r"truncated_record \(line \d+, mol_id 2\)", prepare_cases.truncated_sdf),
    BadInput("prepare-invalid-json", PREPARE, "a PubChemQC .json cut mid-object", "error",
             r"exit 2: .*invalid_json 1.*invalid_json \(line 1, mol_id 0\)",
             prepare_cases.invalid_json),
    BadInput("prepare-unsupported-suffix", PREPARE, "a .xyz file", "error",
             r"exit 2: .*unknown input type \.xyz", prepare_cases.unsupported_suffix),
    BadInput("prepare-missing-file", PREPARE, "a path that does not exist", "error",
             r"exit 2: .*no such file", prepare_cases.missing_file),
    BadInput("csv-missing-column", CSV, "the label column absent from the header", "error",
             r"missing_column.*line 1, column 'y'", finetune_cases.csv_missing_column),
    BadInput("csv-blank-labels", CSV, "blank label cells", "kept", r"NaN",
             finetune_cases.csv_blank_labels),
    BadInput("csv-non-numeric-label", CSV, "a label `n/a`", "error",
             r"non_numeric_label.*line 5, column 'y'", finetune_cases.csv_non_numeric_label),
    BadInput("csv-truncated-row", CSV, "the last row cut mid-field (no final newline)",
             "error", r"truncated_file.*line 9", finetune_cases.csv_truncated_row),
    BadInput("csv-invalid-smiles-rows", CSV, "two rows with invalid SMILES", "recorded",
             r"2 of 10 dropped.*invalid_smiles.*\[4, 5\]", finetune_cases.csv_invalid_smiles_rows),
    BadInput("qm9-label-row-missing", QM9, "an SDF molecule without a row in the label CSV",
             "recorded", r"missing_label", finetune_cases.qm9_label_row_missing),
    BadInput("qm9-label-rows-reordered", QM9, "label rows in another order than the SDF",
             "kept", r"11 of 12 kept", finetune_cases.qm9_label_rows_reordered),
    BadInput("qm9-label-for-absent-molecule", QM9, "a label row for a molecule not in the SDF",
             "kept", r"extra label unused", finetune_cases.qm9_label_for_absent_molecule),
    BadInput("qm9-duplicate-label-row", QM9, "two label rows for one molecule", "error",
             r"duplicate_id", finetune_cases.qm9_duplicate_label_row),
    BadInput("qm9-truncated-sdf", QM9, "gdb9.sdf cut inside its last record", "recorded",
             r"truncated_record", finetune_cases.qm9_truncated_sdf),
    BadInput("md-missing-key", MD, "an sGDML .npz without `F`", "error", r"missing_key",
             finetune_cases.md_missing_key),
    BadInput("md-shape-mismatch", MD, "positions with one atom fewer than `z`", "error",
             r"shape_mismatch", finetune_cases.md_shape_mismatch),
    BadInput("md-nan-frame", MD, "one frame with a NaN force", "recorded",
             r"non_finite_frame", finetune_cases.md_nan_frame),
    BadInput("md-not-npz", MD, "a text file named .npz", "error", r"not_npz",
             finetune_cases.md_not_npz),
    BadInput("cli-missing-checkpoint", "`molssl test --ckpt`", "a checkpoint path that does "
             "not exist", "error", r"exit 2: .*checkpoint not found",
             cli_cases.missing_checkpoint),
    BadInput("cli-truncated-checkpoint-test", "`molssl test --ckpt`", "a checkpoint cut in half",
             "error", r"exit 2: .*cannot read checkpoint", cli_cases.truncated_checkpoint_test),
    BadInput("cli-truncated-checkpoint-fit", "`molssl fit --ckpt_path`",
             "a checkpoint cut in half", "error", r"exit 2: .*cannot resume from .*truncated",
             cli_cases.truncated_checkpoint_fit),
    BadInput("cli-other-objectives", "`molssl fit --ckpt_path`", "a UniCorn checkpoint, a "
             "config with two of its three objectives", "error",
             r"exit 2: molssl fit: error: the checkpoint was trained with objectives",
             cli_cases.other_objectives),
    BadInput("cli-other-module", "`molssl test --ckpt`", "a pre-training checkpoint with the "
             "FreeSolv fine-tuning config", "error", r"exit 2: .*error: .*PretrainModule",
             cli_cases.other_module),
    BadInput("cli-unknown-config-key", "`molssl fit --config`", "a misspelt objective "
             "argument `mask_ratoi`", "error", r"exit 2: .*mask_ratoi",
             cli_cases.unknown_config_key),
)  # fmt: skip
