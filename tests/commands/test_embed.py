"""``molssl embed`` end to end: NCI molecules, a tiny UniCorn checkpoint from ``molssl fit``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem
from sklearn.metrics import davies_bouldin_score
from torch_geometric.data import Batch

from molssl.analysis.encoder_checkpoint import load_checkpoint_encoder
from molssl.analysis.molecules import read_molecules
from molssl.chem.scaffold import murcko_scaffold
from molssl.cli import main
from tests.analysis.embed_fixtures import (
    BAD_SMILES,
    fit_tiny_unicorn,
    nci_lines,
    write_smiles_with_failures,
)

NUM_NCI = 36


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit_tiny_unicorn(
        tmp_path_factory.mktemp("unicorn"), tmp_path_factory.getbasetemp() / "molssl_cache"
    )


@pytest.fixture(scope="module")
def smiles_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int], list[str]]:
    path = tmp_path_factory.mktemp("input") / "mols.smi"
    ids, names = write_smiles_with_failures(path, NUM_NCI)
    return path, ids, names


def run_embed_command(ckpt: Path, input_path: Path, output: Path, *extra: str) -> None:
    main(
        [
            "embed",
            "--ckpt",
            str(ckpt),
            "--input",
            str(input_path),
            "--output",
            str(output),
            "--batch-size",
            "5",
            "--min-class-size",
            "2",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def first_run(
    ckpt: Path,
    smiles_file: tuple[Path, list[int], list[str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    output = tmp_path_factory.mktemp("embed") / "out"
    run_embed_command(ckpt, smiles_file[0], output)
    return output


def read_ids(output: Path) -> list[dict[str, str]]:
    with open(output / "ids.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_files_shapes_and_ids_aligned_with_the_input(
    first_run: Path, smiles_file: tuple[Path, list[int], list[str]]
) -> None:
    _, ids, names = smiles_file
    embeddings = np.load(first_run / "embeddings.npy")
    rows = read_ids(first_run)
    assert embeddings.dtype == np.float32
    assert embeddings.shape == (NUM_NCI, 16)  # the tiny ET's width
    assert np.isfinite(embeddings).all()
    assert list(rows[0]) == ["row", "mol_id", "source_id", "smiles", "label", "scaffold"]
    assert [int(r["row"]) for r in rows] == list(range(NUM_NCI))
    # Every NCI line keeps its own line index as mol_id, whatever failed before it.
    assert [int(r["mol_id"]) for r in rows] == ids
    assert [r["source_id"] for r in rows] == names
    for row, (smiles, _) in zip(rows, nci_lines(NUM_NCI), strict=True):
        assert row["scaffold"] == murcko_scaffold(smiles)
    failures = json.loads((first_run / "failures.json").read_text())
    expected_reasons = {f"bad{i}": BAD_SMILES[s] for i, s in _bad_lines(NUM_NCI)}
    assert {f["source_id"]: f["reason"] for f in failures if f["reason"] != "empty_input"} == (
        expected_reasons
    )
    assert [f["reason"] for f in failures].count("empty_input") == 1
    assert sorted(f["mol_id"] for f in failures) == sorted(
        set(range(len(ids) + len(failures))) - set(ids)
    )
    metrics = json.loads((first_run / "metrics.json").read_text())
    assert metrics["molecules"] == {
        "read": NUM_NCI + len(failures),
        "embedded": NUM_NCI,
        "failed": len(failures),
        "failures_by_reason": metrics["molecules"]["failures_by_reason"],
    }
    assert sum(metrics["molecules"]["failures_by_reason"].values()) == len(failures)
    assert np.load(first_run / "tsne.npy").shape == (NUM_NCI, 2)
    png = (first_run / "tsne.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def _bad_lines(n: int) -> list[tuple[int, str]]:
    bad = list(BAD_SMILES)
    return [(i, bad[i % len(bad)]) for i in range(n) if i % 7 == 3]


def test_davies_bouldin_is_sklearns_on_the_saved_embeddings(first_run: Path) -> None:
    embeddings = np.load(first_run / "embeddings.npy")
    scaffolds = [row["scaffold"] for row in read_ids(first_run)]
    counts = {s: scaffolds.count(s) for s in set(scaffolds) if s}
    keep = [i for i, s in enumerate(scaffolds) if s and counts[s] >= 2]
    labels = [scaffolds[i] for i in keep]
    assert len(set(labels)) >= 2
    expected = davies_bouldin_score(embeddings[keep], labels)
    metrics = json.loads((first_run / "metrics.json").read_text())
    assert metrics["davies_bouldin"] == pytest.approx(expected, rel=1e-6)
    assert metrics["groups"]["count"] == len(set(labels))
    assert sum(metrics["groups"]["sizes"]) == len(keep)
    coords = np.load(first_run / "tsne.npy").astype(np.float64)
    assert metrics["tsne"]["davies_bouldin"] == pytest.approx(
        davies_bouldin_score(coords[keep], labels), rel=1e-6
    )


def test_prints_the_index(
    ckpt: Path,
    smiles_file: tuple[Path, list[int], list[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_embed_command(ckpt, smiles_file[0], tmp_path / "out", "--max-molecules", "12")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    out = capsys.readouterr().out
    assert "molssl embed: 12 read" in out
    assert "Davies-Bouldin index by scaffold" in out
    if metrics["davies_bouldin"] is not None:
        assert f"{metrics['davies_bouldin']:.4f}" in out
    else:
        assert "not computed" in out


def test_embeddings_equal_the_encoder_on_one_molecule_at_a_time(
    first_run: Path, ckpt: Path, smiles_file: tuple[Path, list[int], list[str]]
) -> None:
    encoder = load_checkpoint_encoder(ckpt).encoder
    molecules, _, _ = read_molecules(smiles_file[0], seed=0)
    saved = np.load(first_run / "embeddings.npy")
    with torch.no_grad():
        alone = np.stack(
            [encoder(Batch.from_data_list([m.data])).graph[0].numpy() for m in molecules]
        )
    np.testing.assert_allclose(saved, alone, rtol=1e-5, atol=1e-5)


def test_same_seed_same_files_other_seed_other_conformers(
    first_run: Path, ckpt: Path, smiles_file: tuple[Path, list[int], list[str]], tmp_path: Path
) -> None:
    run_embed_command(ckpt, smiles_file[0], tmp_path / "again")
    for name in ("embeddings.npy", "tsne.npy", "ids.csv", "failures.json"):
        assert (tmp_path / "again" / name).read_bytes() == (first_run / name).read_bytes(), name
    run_embed_command(ckpt, smiles_file[0], tmp_path / "seed1", "--seed", "1")
    other = np.load(tmp_path / "seed1" / "embeddings.npy")
    assert not np.allclose(other, np.load(first_run / "embeddings.npy"))


def test_random_init_and_the_2d_encoder(
    first_run: Path, ckpt: Path, smiles_file: tuple[Path, list[int], list[str]], tmp_path: Path
) -> None:
    run_embed_command(ckpt, smiles_file[0], tmp_path / "random", "--random-init")
    random = np.load(tmp_path / "random" / "embeddings.npy")
    assert random.shape == (NUM_NCI, 16)
    assert not np.allclose(random, np.load(first_run / "embeddings.npy"))
    metrics = json.loads((tmp_path / "random" / "metrics.json").read_text())
    assert metrics["encoder"]["weights"] == "random_init"
    run_embed_command(ckpt, smiles_file[0], tmp_path / "2d", "--encoder", "encoder_2d")
    metrics = json.loads((tmp_path / "2d" / "metrics.json").read_text())
    assert metrics["encoder"]["class_path"] == "molssl.encoders.Graphormer"
    assert np.load(tmp_path / "2d" / "embeddings.npy").shape == (NUM_NCI, 16)


def test_a_continuous_label_column_colours_and_bins(ckpt: Path, tmp_path: Path) -> None:
    lines = nci_lines(30)
    values = [
        f"{np.log1p(len(smiles)):.4f}" if i != 4 else "" for i, (smiles, _) in enumerate(lines)
    ]
    path = tmp_path / "labelled.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "SMILES", "logp_like"])
        writer.writerows(
            [name, smiles, value] for (smiles, name), value in zip(lines, values, strict=True)
        )
    run_embed_command(ckpt, path, tmp_path / "out", "--label-column", "logp_like")
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    rows = read_ids(tmp_path / "out")
    assert [row["label"] for row in rows] == values
    assert metrics["groups"]["by"] == "label"
    assert metrics["groups"]["label_kind"] == "continuous"
    assert metrics["groups"]["excluded"] == {"missing": 1}
    numbers = np.array([float(v) for v in values if v])
    edges = np.quantile(numbers, np.linspace(0, 1, 6))
    bins = np.searchsorted(np.unique(edges)[1:-1], numbers, side="right")
    embeddings = np.load(tmp_path / "out" / "embeddings.npy")
    present = [i for i, v in enumerate(values) if v]
    assert metrics["davies_bouldin"] == pytest.approx(
        davies_bouldin_score(embeddings[present], bins), rel=1e-6
    )
    assert (tmp_path / "out" / "tsne.png").stat().st_size > 10_000


def expect_error(capsys: pytest.CaptureFixture[str], argv: list[str], *fragments: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["embed", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("molssl embed: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


def test_clear_errors(
    ckpt: Path,
    smiles_file: tuple[Path, list[int], list[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good = str(smiles_file[0])
    out = str(tmp_path / "out")
    expect_error(
        capsys,
        ["--ckpt", str(tmp_path / "nope.ckpt"), "--input", good, "--output", out],
        "checkpoint not found",
    )
    expect_error(
        capsys,
        ["--ckpt", str(ckpt), "--input", good, "--output", out, "--encoder", "encoder_blend"],
        "has no 'encoder_blend'",
        "encoder_2d, encoder_3d",
    )
    empty = tmp_path / "empty.smi"
    empty.write_text("")
    expect_error(
        capsys,
        ["--ckpt", str(ckpt), "--input", str(empty), "--output", out],
        "holds no molecule entry",
    )
    hopeless = tmp_path / "bad.smi"
    hopeless.write_text("C1CC\n[Xe]\n")
    expect_error(
        capsys,
        ["--ckpt", str(ckpt), "--input", str(hopeless), "--output", out],
        "none of the 2 entries",
        "invalid_smiles 1",
    )
    assert len(json.loads((tmp_path / "out" / "failures.json").read_text())) == 2
    expect_error(
        capsys,
        ["--ckpt", str(ckpt), "--input", good, "--output", out, "--label-column", "y"],
        "needs a CSV or SDF input",
    )
    expect_error(
        capsys,
        ["--ckpt", str(ckpt), "--input", str(tmp_path / "missing.smi"), "--output", out],
        "missing.smi",
    )
    expect_error(
        capsys,
        ["--ckpt", str(ckpt), "--input", good, "--output", out, "--batch-size", "0"],
        "batch_size must be >= 1",
    )


def test_threads_are_restored_and_do_not_change_the_embeddings(
    first_run: Path, ckpt: Path, smiles_file: tuple[Path, list[int], list[str]], tmp_path: Path
) -> None:
    before = torch.get_num_threads()
    run_embed_command(ckpt, smiles_file[0], tmp_path / "t", "--threads", str(before + 1))
    assert torch.get_num_threads() == before
    np.testing.assert_allclose(
        np.load(tmp_path / "t" / "embeddings.npy"),
        np.load(first_run / "embeddings.npy"),
        rtol=1e-5,
        atol=1e-6,
    )
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert metrics["settings"]["threads"] == before + 1


def test_an_sdf_with_a_class_field_keeps_its_coordinates(ckpt: Path, tmp_path: Path) -> None:
    path = tmp_path / "mols.sdf"
    writer = Chem.SDWriter(str(path))
    classes = []
    for i, (smiles, name) in enumerate(nci_lines(16)):
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        AllChem.EmbedMolecule(mol, randomSeed=7)
        mol.SetProp("_Name", name)
        classes.append(str(i % 2))
        mol.SetProp("active", classes[-1])
        writer.write(mol)
    writer.close()
    run_embed_command(ckpt, path, tmp_path / "out", "--label-column", "active")
    rows = read_ids(tmp_path / "out")
    assert [row["label"] for row in rows] == classes
    assert [row["source_id"] for row in rows] == [name for _, name in nci_lines(16)]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["groups"]["label_kind"] == "class"
    assert metrics["groups"]["names"] == ["0", "1"]
    embeddings = np.load(tmp_path / "out" / "embeddings.npy")
    assert metrics["davies_bouldin"] == pytest.approx(
        davies_bouldin_score(embeddings, classes), rel=1e-6
    )
    # The file's geometry, not a new conformer: the encoder on the SDF's own coordinates.
    molecules, _, _ = read_molecules(path)
    supplier = Chem.SDMolSupplier(str(path), removeHs=False)
    for molecule, mol in zip(molecules, supplier, strict=True):
        count = mol.GetNumAtoms()  # hydrogens written explicitly, so all atoms are the file's
        expected = torch.tensor(mol.GetConformer().GetPositions(), dtype=torch.float32)
        assert torch.allclose(molecule.data.pos[:count], expected, atol=1e-3)
