"""``molssl prepare`` on small inputs: enough shards to hold validation out, a progress total.

An input of a few dozen molecules used to make one shard of the default 10,000 entries, and
``molssl fit`` then failed when holding out validation by shard. The default shard size now
follows the input's size (counted first, cheaply: :mod:`molssl.datamodules.sources.count`),
so that ``molssl fit`` finds a validation shard.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import molssl.datamodules.embedded as embedded
from molssl.chem.conformers import ConformerOptions
from molssl.cli import main
from molssl.datamodules import PretrainDataModule
from molssl.datamodules.prepare import DEFAULT_SHARD_SIZE, auto_shard_size
from molssl.datamodules.sources import iter_source
from molssl.datamodules.sources.count import count_entries, count_file_entries
from tests.datamodules.sources.helpers import (
    embedded_nci,
    pubchemqc_document,
    truncate_gzip,
    write_gzip,
    write_json,
    write_sdf,
)
from tests.datamodules.test_prepare import BAD_LINES, nci_lines


def test_the_default_shard_size_leaves_twenty_shards_to_small_inputs() -> None:
    sizes = {n: auto_shard_size(n) for n in (0, 1, 20, 21, 400, 199_999, 200_001, 10**7)}
    assert sizes == {
        0: 1, 1: 1, 20: 1, 21: 2, 400: 20, 199_999: 10_000, 200_001: DEFAULT_SHARD_SIZE,
        10**7: DEFAULT_SHARD_SIZE,
    }  # fmt: skip


def test_counts_equal_what_the_readers_read(tmp_path: Path) -> None:
    smi = tmp_path / "a.smi"
    smi.write_text("smiles name\n" + nci_lines(0, 6) + BAD_LINES)
    csv = tmp_path / "b.csv"
    csv.write_text("name,smiles\n" + "".join(f"m{i},C{'C' * i}O\n" for i in range(5)) + "x,\n")
    mols = embedded_nci(4)
    sdf = write_sdf(tmp_path / "c.sdf", mols)
    cut = tmp_path / "d.sdf"
    cut.write_text(sdf.read_text().rsplit("$$$$", 2)[0])  # the last record loses its end
    gz = write_gzip(tmp_path / "e.smi.gz", nci_lines(0, 300))
    truncated = truncate_gzip(gz, tmp_path / "f.smi.gz", keep_fraction=0.5)
    json_file = write_json(tmp_path / "g.json", pubchemqc_document(mols[0], cid=7))
    files = [smi, csv, sdf, cut, gz, truncated, json_file]
    for file in files:
        assert count_file_entries(file) == len(list(iter_source(file))), file.name
    assert count_entries([tmp_path]) == sum(len(list(iter_source(f))) for f in files)


def test_a_small_input_is_prepared_into_shards_that_leave_a_validation_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "small.smi"
    source.write_text(nci_lines(0, 30))
    main(["prepare", "--input", str(source), "--output", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert "/30 [" in err  # the bar knows the total
    data = PretrainDataModule(root=str(tmp_path / "data"), batch_size=4, val_fraction=0.05)
    data.setup("fit")
    stats = data.stats()
    assert stats["shards"] >= 2 and stats["val"] > 0 and stats["train"] > stats["val"]


def test_the_first_eta_ignores_the_workers_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # The bar's clock restarts when the first molecule comes back, with nothing counted yet:
    # the first rate shown is not one molecule per pool start-up (which read as hours).
    resets: list[int] = []

    class RecordingBar(embedded.tqdm):  # type: ignore[misc, name-defined]
        def reset(self, total: int | None = None) -> None:
            resets.append(self.n)
            super().reset(total)

    monkeypatch.setattr(embedded, "tqdm", RecordingBar)
    preparation = embedded.prepare_records(
        ["CCO", "CCN", "c1ccccc1"], ConformerOptions(optimize=False), progress=True
    )
    assert resets == [0] and len(preparation.records) == 3
