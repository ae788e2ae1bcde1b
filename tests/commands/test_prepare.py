"""``molssl prepare`` on the command line: real files in, shards and a manifest out."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from molssl.cli import main
from molssl.datamodules.shards import MANIFEST_FILE, dataset_shards, read_shard
from tests.commands.dying_worker import dying_entry
from tests.conftest import NCI_SMILES
from tests.datamodules.qm9pack_files import write_qm9pack


def nci_lines(n: int) -> list[str]:
    with open(NCI_SMILES) as handle:
        return handle.readlines()[:n]


@pytest.fixture()
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    smi = tmp_path / "part1.smi.gz"
    with gzip.open(smi, "wt") as handle:
        handle.write("".join(nci_lines(6)) + "not_a_smiles\tjunk\n")
    rows = [line.split() for line in nci_lines(10)[6:]]
    csv = tmp_path / "part2.csv"
    csv.write_text("name,canonical_smiles\n" + "".join(f"{n},{s}\n" for s, n in rows))
    return smi, csv


def test_prepare_command_writes_a_dataset(
    inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "dataset"
    args = ["prepare", "--input", *map(str, inputs), "--output", str(output)]
    args += ["--num-conformers", "2", "--seed", "3", "--shard-size", "4"]
    args += ["--smiles-column", "canonical_smiles", "--max-heavy-atoms", "0"]
    main(args)
    out = capsys.readouterr()
    assert "11 entries read, 10 prepared, 1 failed (invalid_smiles 1)" in out.out
    manifest = json.loads((output / MANIFEST_FILE).read_text())
    assert manifest["settings"]["conformer_options"]["num_conformers"] == 2
    assert manifest["settings"]["max_heavy_atoms"] is None
    assert manifest["failures"][0]["mol_id"] == 6 and manifest["failures"][0]["line"] == 7
    records = [r for info in dataset_shards(output) for r in read_shard(output / info.file)]
    assert [r.mol_id for r in records] == [0, 1, 2, 3, 4, 5, 7, 8, 9, 10]
    assert {r.num_conformers for r in records} == {2}
    assert records[-1].source_id == nci_lines(10)[9].split()[1]
    # A second run with the same settings keeps every shard.
    main([*args, "--no-progress"])
    assert "3 kept from an earlier run" in capsys.readouterr().out


def test_prepare_command_errors_exit_2(
    inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "dataset"
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--input", str(tmp_path / "missing.smi"), "--output", str(output)])
    assert exit_info.value.code == 2
    assert "molssl prepare: error:" in capsys.readouterr().err
    main(["prepare", "--input", str(inputs[0]), "--output", str(output), "--no-progress"])
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--input", str(inputs[0]), "--output", str(output), "--seed", "9"])
    assert exit_info.value.code == 2
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # the CSV needs --smiles-column
        main(["prepare", "--input", str(inputs[1]), "--output", str(tmp_path / "other")])
    assert exit_info.value.code == 2
    assert "smiles_column" in capsys.readouterr().err


def _descendants(pid: int) -> set[int]:
    """Live descendant processes of ``pid`` (Linux /proc; zombies count as gone)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _prepare_command(folder: Path, molecules: int, *extra: str) -> tuple[list[str], Path]:
    """``molssl prepare`` of NCI molecules with 2 workers as a subprocess command; the output."""
    source = folder / "nci.smi"
    source.write_text("".join(nci_lines(molecules)))
    output = folder / "dataset"
    command = [sys.executable, "-c", "from molssl.cli import main; main()", "prepare"]
    command += ["--input", str(source), "--output", str(output), "--workers", "2"]
    return [*command, "--shard-size", "10", "--no-progress", *extra], output


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_sigterm_stops_the_worker_pool_and_the_run_resumes(tmp_path: Path) -> None:
    command, output = _prepare_command(tmp_path, 120)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(output.glob("shard-*.json")) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        time.sleep(0.2)
    workers = _descendants(process.pid)
    assert len(workers) >= 2, "the pool was expected to be running"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 30
    while _descendants(process.pid) | {p for p in workers if Path(f"/proc/{p}").exists()}:
        assert time.monotonic() < deadline, "worker processes outlived a SIGTERM-ed prepare"
        time.sleep(0.2)
    finished = sorted(p.name for p in output.glob("shard-*.json"))
    assert finished and not (output / MANIFEST_FILE).exists()

    main([*command[3:], "--workers", "1"])  # the same settings: resumes the finished shards
    manifest = json.loads((output / MANIFEST_FILE).read_text())
    assert manifest["read"] == 120 and manifest["resumed_shards"] >= len(finished) - 1


def _run_prepare(command: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow  # a subprocess and two preparations: about 30 s on a busy 2-core machine
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_worker_killed_with_sigkill_loses_no_molecule(tmp_path: Path) -> None:
    # What the out-of-memory killer does: kill -9 of one pool worker mid-run. The pool used to
    # wait forever for the task that worker held; now it is sent again to a fresh worker.
    command, output = _prepare_command(tmp_path, 30, "--num-conformers", "3")
    process = _run_prepare(command)
    deadline = time.monotonic() + 120
    killed = None
    while killed is None and process.poll() is None and time.monotonic() < deadline:
        if list(output.glob("shard-*.json")):
            children = _descendants(process.pid)
            # Workers are the fork server's children: the run's grandchildren.
            workers = children - {c for c in children if _parent(c) == process.pid}
            if workers:
                killed = min(workers)
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    _, stderr = process.communicate(timeout=180)
    assert killed is not None, "no worker was seen running"
    assert process.returncode == 0, stderr
    manifest = json.loads((output / MANIFEST_FILE).read_text())
    assert manifest["read"] == 30 == manifest["ok"] + manifest["failed"]
    records = [r for info in dataset_shards(output) for r in read_shard(output / info.file)]
    names = [line.split()[1] for line in nci_lines(30)]
    assert all(r.source_id == names[r.mol_id] for r in records)  # nothing lost, none shifted
    assert {r.mol_id for r in records} | {f["mol_id"] for f in manifest["failures"]} == set(
        range(30)
    )
    # The same shards as a run where no worker died (the output never depends on workers).
    main([*command[3:], "--output", str(tmp_path / "serial"), "--workers", "1"])
    for info in dataset_shards(output):
        assert (output / info.file).read_bytes() == (tmp_path / "serial" / info.file).read_bytes()


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def test_a_worker_that_dies_every_time_stops_naming_the_shard_and_the_rerun_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from molssl.datamodules import prepare as prepare_module

    source = tmp_path / "nci.smi"
    source.write_text("".join(nci_lines(30)))
    output = tmp_path / "dataset"
    args = ["prepare", "--input", str(source), "--output", str(output), "--workers", "2"]
    args += ["--shard-size", "10", "--no-progress"]
    with monkeypatch.context() as patch:
        patch.setattr(prepare_module, "_prepare_entry", dying_entry)
        with pytest.raises(SystemExit) as exited:
            main(args)
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("molssl prepare: error: a worker process died twice while preparing")
    assert "shard 1 (shard-000001.tar), mol_id 1" in line and "run the same command" in line
    assert (output / "shard-000000.json").exists() and not (output / MANIFEST_FILE).exists()
    main(args)  # the molecule no longer kills its worker: shard 0 is kept, the rest done
    manifest = json.loads((output / MANIFEST_FILE).read_text())
    assert manifest["resumed_shards"] == 1 and manifest["read"] == 30


def test_prepare_keeps_the_dft_coordinates_of_a_qm9pack_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    written = write_qm9pack(tmp_path / "qm9", n=5, parts=2)
    output = tmp_path / "dataset"
    main(["prepare", "--input", *map(str, written.files), "--output", str(output), "--no-progress"])
    assert "5 entries read, 5 prepared, 0 failed" in capsys.readouterr().out
    records = [r for info in dataset_shards(output) for r in read_shard(output / info.file)]
    for record in records:
        k = int(record.source_id.removeprefix("gdb_"))
        assert record.z.tolist() == written.elements[k] and record.num_conformers == 1
        np.testing.assert_allclose(record.conformers[0], written.positions[k], atol=1e-5)


@pytest.mark.parametrize("name", ["qm9pack", "moses"])
def test_prepare_names_the_install_command_of_a_missing_package(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("importlib.util.find_spec", lambda module: None)
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--input", name, "--output", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("molssl prepare: error:") and "pip install" in line
