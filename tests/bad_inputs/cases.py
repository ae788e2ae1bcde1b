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

from tests.bad_inputs import (
    cli_cases,
    finetune_cases,
    finetune_cli_cases,
    prepare_cases,
    stream_cases,
)
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
FIT = "`molssl fit` (pre-training)"
TUNE = "`molssl fit` (fine-tuning config)"

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
    # -- issue #17: label shifts, lost or doubled records, dead workers, one line per error --
    BadInput("prepare-whitespace-in-csv-cell", PREPARE, "CSV cells `c1ccccc1 O` and a quoted "
             "`\"CC\\nO\"`", "recorded", r"invalid_smiles \(line 3, mol_id 1\), invalid_smiles "
             r"\(line 4, mol_id 2\)", prepare_cases.whitespace_in_csv_cell),
    BadInput("prepare-sdf-missing-terminator", PREPARE, "4 molecules, one `$$$$` missing",
             "recorded", r"4 read, 3 prepared; failed: missing_terminator \(line \d+, mol_id 1\)",
             prepare_cases.sdf_missing_terminator),
    BadInput("prepare-same-file-twice", PREPARE, "`--input a.smi a.smi`", "recorded",
             r"3 read, 3 prepared.*duplicate input files not read: 1",
             prepare_cases.same_file_twice),
    BadInput("prepare-identical-files-in-folder", PREPARE, "a folder with a file and its copy",
             "recorded", r"3 read, 3 prepared.*not read: b_copy\.smi",
             prepare_cases.identical_files_in_folder),
    BadInput("prepare-duplicate-molecule", PREPARE, "one molecule in two files, spelt two ways",
             "recorded", r"duplicate_molecule \(line 2, mol_id 3\)",
             prepare_cases.duplicate_molecule_across_inputs),
    BadInput("prepare-ragged-csv-row", PREPARE, "a CSV row with a field too many", "recorded",
             r"ragged_row \(line 3, mol_id 1\)", prepare_cases.ragged_csv_row),
    BadInput("prepare-all-smiles-invalid", PREPARE, "a .smi whose every SMILES is invalid",
             "error", r"exit 2: .*none of the 3 entries read could be prepared",
             prepare_cases.all_smiles_invalid),
    BadInput("prepare-max-heavy-atoms-negative", PREPARE, "`--max-heavy-atoms -5`", "error",
             r"exit 2: .*--max-heavy-atoms must be at least 0",
             prepare_cases.max_heavy_atoms_negative),
    BadInput("prepare-output-inside-input", PREPARE, "`--output` inside the `--input` folder, "
             "run twice", "kept", r"second run: 3 read, 3 prepared.*1 shard kept",
             prepare_cases.output_inside_input),
    BadInput("prepare-worker-killed", PREPARE, "`kill -9` of the worker holding mol_id 13",
             "kept", r"24 read, .*a worker killed with SIGKILL", prepare_cases.worker_killed_once),
    BadInput("prepare-worker-killed-every-time", PREPARE, "a worker killed at mol_id 13 on "
             "every try", "error", r"exit 2: .*died twice while preparing shard 1 .*the same "
             r"command again: 24 read", prepare_cases.worker_killed_every_time),
    BadInput("fit-shard-replaced", FIT, "`cp shard-000001.tar shard-000000.tar`", "error",
             r"exit 2: .*shard-000000\.tar holds mol_id 10 \(record 0\)",
             stream_cases.shard_replaced),
    BadInput("fit-shard-truncated", FIT, "a shard cut in half", "error",
             r"exit 2: .*shard-000002\.tar", stream_cases.shard_truncated),
    BadInput("fit-manifest-missing", FIT, "a prepared folder without manifest.json", "error",
             r"exit 2: .*no manifest\.json", stream_cases.manifest_missing),
    BadInput("fit-empty-root", FIT, "an empty folder as `root`", "error",
             r"exit 2: .*no manifest\.json", stream_cases.empty_root),
    BadInput("fit-single-shard", FIT, "one shard, validation held out by shard", "error",
             r"exit 2: .*one_shard: validation is held out by shard", stream_cases.single_shard),
    BadInput("fit-random-bytes-in-record", FIT, "a shard's records replaced by random bytes",
             "error", r"exit 2: .*starts with the bytes", stream_cases.random_bytes_in_record),
    BadInput("cli-class-path-typo", FIT, "`class_path: molssl.encoders.EquivariantTransformr`",
             "error", r"exit 2: .*encoder_3d\.class_path.*did you mean "
             r"'molssl\.encoders\.EquivariantTransformer'\? \(.*edited\.yaml, line \d+\)",
             cli_cases.class_path_typo),
    BadInput("cli-damaged-run-config", "`molssl test --ckpt`", "the run's config.yaml with an "
             "unclosed list", "error", r"exit 2: .*config\.yaml, line \d+, column \d+: not valid "
             "YAML", cli_cases.damaged_run_config),
    BadInput("cli-resume-other-encoder-size", "`molssl fit --ckpt_path`", "hidden_channels 32 "
             "on a checkpoint of width 16", "error", r"exit 2: .*tensor\(s\) differ in shape, "
             r"first encoder_3d\.", cli_cases.resume_other_encoder_size),
    BadInput("cli-invalid-option-value", FIT, "`--data.init_args.val_fraction=1.5`", "error",
             r"exit 2: .*PretrainDataModule: val_fraction must be in \[0, 1\), got 1\.5",
             cli_cases.invalid_option_value),
    BadInput("csv-whitespace-in-smiles-cell", CSV, "cells `c1ccccc1 O` and a quoted "
             "`\"CC\\nO\"`", "recorded", r"2 of 8 dropped.*invalid_smiles.*\[4, 6\]",
             finetune_cases.csv_whitespace_in_smiles_cell),
    BadInput("csv-capitalised-smiles-column", CSV, "a column named `SMILES`", "kept",
             r"kept: 8 of 8", finetune_cases.csv_capitalised_smiles_column),
    BadInput("csv-inf-label", TUNE, "FreeSolv with a label `inf`", "error",
             r"exit 2: .*SAMPL\.csv, line 6, column 'expt': label 'inf' is not finite",
             finetune_cli_cases.inf_label),
    BadInput("csv-unicode-minus-label", TUNE, "FreeSolv with a label `\u22123.2` (U+2212)",
             "error", r"exit 2: .*line 6, column 'expt'.*U\+2212",
             finetune_cli_cases.unicode_minus_label),
    BadInput("csv-all-smiles-invalid", TUNE, "FreeSolv whose every SMILES is invalid", "error",
             r"exit 2: .*no usable molecule .*12 read, 12 failed",
             finetune_cli_cases.all_smiles_invalid),
    BadInput("csv-scaffold-split-without-training", TUNE, "12 molecules of one scaffold",
             "error", r"exit 2: .*scaffold split of 12 molecules .* leaves train and val empty",
             finetune_cli_cases.scaffold_split_without_training),
    BadInput("csv-task-without-labels", TUNE, "a target column blank in every row", "error",
             r"exit 2: .*column 'logp': no label in any of the 12 rows",
             finetune_cli_cases.task_without_labels),
    BadInput("finetune-init-from-missing", TUNE, "`init_from` a path that does not exist",
             "error", r"exit 2: .*init_from checkpoint not found",
             finetune_cli_cases.init_from_missing),
    BadInput("finetune-init-from-empty", TUNE, "`init_from` an empty file", "error",
             r"exit 2: .*empty\.ckpt is empty \(0 bytes\)", finetune_cli_cases.init_from_empty),
    BadInput("qm9-names-do-not-match", TUNE, "label rows named `1`, `2`, ... for `gdb_1`, ...",
             "error", r"exit 2: .*none of the 12 molecule titles \('gdb_1'",
             finetune_cli_cases.qm9_names_do_not_match),
    BadInput("qm9-sdf-missing-terminator", QM9, "gdb_5 without its `$$$$`", "recorded",
             r"10 of 12 kept; failed .*missing_terminator",
             finetune_cases.qm9_sdf_missing_terminator),
    BadInput("md-unequal-lengths", TUNE, "`E` with 3 frames fewer than `R`", "error",
             r"exit 2: .*shapes disagree", finetune_cli_cases.md_unequal_lengths),
    BadInput("md-all-nan-forces", TUNE, "every force NaN", "error",
             r"exit 2: .*no usable frame among 40 \(non_finite_frame 40\)",
             finetune_cli_cases.md_all_nan_forces),
    BadInput("md-coincident-atoms", MD, "two atoms of one frame on one point", "recorded",
             r"39 of 40 frames kept; failed \{'coincident_atoms': 1\}",
             finetune_cases.md_coincident_atoms),
)  # fmt: skip
