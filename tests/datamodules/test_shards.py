"""WebDataset-layout shards: exact round trip, streaming, reproducible bytes, manifests."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from molssl.chem.conformers import ConformerOptions
from molssl.chem.errors import MoleculeError
from molssl.datamodules.records import (
    RECORD_FORMAT_VERSION,
    MoleculeRecord,
    PackedRecords,
    load_records,
    pack_records,
    record_from_smiles,
)
from molssl.datamodules.shards import (
    MANIFEST_FILE,
    ManifestError,
    ShardFormatError,
    ShardInfo,
    dataset_shards,
    file_sha256,
    iter_shard_chunks,
    load_manifest,
    read_shard,
    shard_url,
    verify_shard,
    write_json_atomic,
    write_shard,
)
from tests.conftest import read_nci_smiles
from tests.datamodules.test_records import assert_same_record

OPTIONS = ConformerOptions(num_conformers=1, seed=5, max_optimize_iters=50)


@pytest.fixture(scope="module")
def records() -> list[MoleculeRecord]:
    out = []
    for mol_id, smiles in enumerate(read_nci_smiles(14)):
        try:
            record = record_from_smiles(smiles, 100 + mol_id, OPTIONS)
        except MoleculeError:
            continue
        record.source_id = f"NSC-{mol_id}"
        out.append(record)
    return out


def test_round_trip_in_chunks(records: list[MoleculeRecord], tmp_path: Path) -> None:
    info = write_shard(tmp_path / "shard-000007.tar", records, chunk_size=4)
    assert info == ShardInfo(
        file="shard-000007.tar",
        count=len(records),
        sha256=file_sha256(tmp_path / "shard-000007.tar"),
        first_mol_id=records[0].mol_id,
        last_mol_id=records[-1].mol_id,
    )
    assert [p.name for p in tmp_path.iterdir()] == ["shard-000007.tar"]  # no temp file left
    chunks = list(iter_shard_chunks(tmp_path / "shard-000007.tar", expected_sha256=info.sha256))
    assert [len(c) for c in chunks] == [4] * (len(records) // 4) + (
        [len(records) % 4] if len(records) % 4 else []
    )
    loaded = read_shard(str(tmp_path / "shard-000007.tar"))
    assert isinstance(loaded, PackedRecords) and len(loaded) == len(records)
    for original, copy in zip(records, loaded, strict=True):
        assert_same_record(original, copy)


def test_plain_ustar_webdataset_layout(records: list[MoleculeRecord], tmp_path: Path) -> None:
    path = tmp_path / "shard-000003.tar"
    write_shard(path, records[:5], chunk_size=2)
    with tarfile.open(path, mode="r|") as tar:  # streaming mode: no seek needed
        members = [(m, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
    names = [m.name for m, _ in members]
    assert names == [f"000003-{i:05d}.records.npz" for i in range(3)] == sorted(names)
    for member, payload in members:
        owner = (member.uid, member.gid, member.uname, member.gname)
        assert member.mtime == 0 and owner == (0, 0, "", "")
        assert member.mode == 0o644 and member.isfile()
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            assert int(npz["format_version"]) == RECORD_FORMAT_VERSION
    # ustar magic of the first header: readable by any tar, no pax/GNU extensions.
    assert path.read_bytes()[257:263] == b"ustar\x00"


def test_same_records_give_identical_bytes(records: list[MoleculeRecord], tmp_path: Path) -> None:
    first = write_shard(tmp_path / "a" / "shard-000000.tar", records)
    second = write_shard(tmp_path / "b" / "shard-000000.tar", pack_records(records))
    assert first == second
    assert (tmp_path / "a" / "shard-000000.tar").read_bytes() == (
        tmp_path / "b" / "shard-000000.tar"
    ).read_bytes()


def test_empty_shard(tmp_path: Path) -> None:
    info = write_shard(tmp_path / "shard-000001.tar", [])
    assert (info.count, info.first_mol_id, info.last_mol_id) == (0, -1, -1)
    assert len(read_shard(tmp_path / "shard-000001.tar")) == 0


def test_damaged_shards_are_clear_errors(records: list[MoleculeRecord], tmp_path: Path) -> None:
    path = tmp_path / "shard-000000.tar"
    write_shard(path, records, chunk_size=3)
    with pytest.raises(ManifestError, match="sha256"):
        list(iter_shard_chunks(path, expected_sha256="0" * 64))
    cut = tmp_path / "cut.tar"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ShardFormatError):
        list(iter_shard_chunks(cut))
    text = tmp_path / "text.tar"
    text.write_text("not a tar")
    with pytest.raises(ShardFormatError, match="not a readable shard"):
        read_shard(text)
    foreign = tmp_path / "foreign.tar"
    with tarfile.open(foreign, "w") as tar:
        tar.add(path, arcname="notes.txt")
    with pytest.raises(ShardFormatError, match="not a molssl records chunk"):
        read_shard(foreign)
    with pytest.raises(FileNotFoundError):
        read_shard(tmp_path / "missing.tar")


def test_fsspec_url_streams_like_a_path(records: list[MoleculeRecord], tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    info = write_shard(tmp_path / "shard-000000.tar", records[:6], chunk_size=4)
    with fsspec.open("memory://data/shard-000000.tar", "wb") as handle:
        handle.write((tmp_path / "shard-000000.tar").read_bytes())
    url = shard_url("memory://data/", info)
    assert url == "memory://data/shard-000000.tar"
    chunks = list(iter_shard_chunks(url, expected_sha256=info.sha256))
    assert sum(len(c) for c in chunks) == 6
    assert_same_record(chunks[1][0], records[4])


def test_webdataset_reads_our_shards(records: list[MoleculeRecord], tmp_path: Path) -> None:
    webdataset = pytest.importorskip("webdataset")
    path = tmp_path / "shard-000002.tar"
    write_shard(path, records, chunk_size=5)
    samples = list(webdataset.WebDataset(str(path), shardshuffle=False))
    assert [s["__key__"] for s in samples] == [f"000002-{i:05d}" for i in range(len(samples))]
    decoded = []
    for sample in samples:
        payload = sample["records.npz"]
        (tmp_path / "chunk.npz").write_bytes(payload)
        decoded.extend(load_records(tmp_path / "chunk.npz"))
    assert len(decoded) == len(records)
    for original, copy in zip(records, decoded, strict=True):
        assert_same_record(original, copy)


def write_manifest(root: Path, infos: list[ShardInfo], **overrides: object) -> None:
    ok = sum(s.count for s in infos)
    manifest = {
        "shards": [s.to_dict() for s in infos],
        "ok": ok,
        "failed": 1,
        "read": ok + 1,
        "record_format_version": RECORD_FORMAT_VERSION,
        **overrides,
    }
    write_json_atomic(root / MANIFEST_FILE, manifest)


def test_manifest_helpers(records: list[MoleculeRecord], tmp_path: Path) -> None:
    shards = [
        write_shard(tmp_path / "shard-000000.tar", records[:4]),
        write_shard(tmp_path / "shard-000001.tar", records[4:]),
    ]
    write_manifest(tmp_path, shards)
    assert dataset_shards(tmp_path) == shards
    assert load_manifest(str(tmp_path))["read"] == len(records) + 1
    assert json.loads((tmp_path / MANIFEST_FILE).read_text())["shards"][1] == shards[1].to_dict()
    for info in shards:
        verify_shard(tmp_path, info)
    with pytest.raises(ManifestError, match="holds"):
        verify_shard(tmp_path, ShardInfo(**{**shards[0].to_dict(), "count": 5}))
    with pytest.raises(ManifestError, match="sha256"):
        verify_shard(tmp_path, ShardInfo(**{**shards[0].to_dict(), "sha256": "f" * 64}))
    with pytest.raises(ManifestError, match="does not exist"):
        verify_shard(tmp_path, ShardInfo(**{**shards[0].to_dict(), "file": "shard-9.tar"}))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"record_format_version": RECORD_FORMAT_VERSION - 1}, "prepare the data again"),
        ({"ok": 99}, "different number of records"),
        ({"read": 1000}, "ok \\+ failed"),
        ({"shards": [{"file": "x.tar"}]}, "needs the fields"),
        ({"shards": [{**ShardInfo("x", 1, "s", 0, 0).to_dict(), "count": "1"}]}, "not int"),
    ],
)
def test_invalid_manifests_are_manifest_errors(
    tmp_path: Path, overrides: dict[str, object], match: str
) -> None:
    write_manifest(tmp_path, [], **overrides)
    with pytest.raises(ManifestError, match=match):
        dataset_shards(tmp_path)


def test_missing_or_broken_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="molssl prepare"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text('{"shards": []}')
    with pytest.raises(ManifestError, match="lacks"):
        load_manifest(tmp_path)
