"""Bad prepared data sets given to ``molssl fit``: each is one line naming the file, exit 2.

Every case starts from a copy of one good ``molssl prepare`` output (40 molecules, 4 shards of
10) and trains tiny UniCorn for one epoch over every shard, so a damaged shard is read whatever
order the epoch takes.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

from molssl.datamodules.shards import MANIFEST_FILE
from tests.bad_inputs.shared import SharedInputs, one_line_exit, run_cli, write_config


def _copy(work: Path, shared: SharedInputs) -> Path:
    root = work / "dataset"
    shutil.copytree(shared.prepared, root)
    return root


def _fit(root: Path, work: Path, shared: SharedInputs) -> str:
    config = write_config(work / "fit.yaml", shared.pretrain_config(root, work / "runs"))
    return one_line_exit(["fit", "--config", str(config)], work)


def shard_replaced(work: Path, shared: SharedInputs) -> str:
    root = _copy(work, shared)
    shutil.copy(root / "shard-000001.tar", root / "shard-000000.tar")  # valid, but not its own
    observed = _fit(root, work, shared)
    assert "shard-000000.tar" in observed
    return observed


def shard_truncated(work: Path, shared: SharedInputs) -> str:
    root = _copy(work, shared)
    data = (root / "shard-000002.tar").read_bytes()
    (root / "shard-000002.tar").write_bytes(data[: len(data) // 2])
    return _fit(root, work, shared)


def manifest_missing(work: Path, shared: SharedInputs) -> str:
    root = _copy(work, shared)
    (root / MANIFEST_FILE).unlink()
    return _fit(root, work, shared)


def empty_root(work: Path, shared: SharedInputs) -> str:
    (work / "empty").mkdir()
    return _fit(work / "empty", work, shared)


def single_shard(work: Path, shared: SharedInputs) -> str:
    config = shared.pretrain_config(shared.prepared, work / "runs")
    config["data"]["init_args"].update(val_fraction=0.05)  # held out by shard: none to spare
    source = work / "one.smi"
    source.write_text((shared.prepared.parent / "nci40.smi").read_text())
    root = work / "one_shard"
    # One shard of 40 (by default prepare would cut them into 20 shards, to hold some out).
    args = ["prepare", "--input", str(source), "--output", str(root), "--no-progress"]
    args += ["--shard-size", "1000"]
    assert run_cli(args, work) is None and (root / MANIFEST_FILE).exists()
    config["data"]["init_args"]["root"] = str(root)
    path = write_config(work / "fit.yaml", config)
    return one_line_exit(["fit", "--config", str(path)], work)


def random_bytes_in_record(work: Path, shared: SharedInputs) -> str:
    root = _copy(work, shared)
    shard = root / "shard-000000.tar"
    with tarfile.open(shard) as tar:
        members = [(member, tar.extractfile(member).read()) for member in tar]  # type: ignore[union-attr]
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, payload in members:  # same names and sizes, random bytes inside
            noise = bytes((i * 151 + 7) % 256 for i in range(len(payload)))
            tar.addfile(member, io.BytesIO(noise))
    observed = _fit(root, work, shared)
    assert "pickled" not in observed
    return observed
