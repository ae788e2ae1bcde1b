"""Pre-training pool of the transfer experiment: dedup and FreeSolv removal."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from rdkit import Chem

from tests.conftest import read_nci_smiles

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "transfer" / "build_pool.py"


def load_build_pool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_pool", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pool_drops_duplicates_salts_and_excluded_molecules_with_or_without_stereo() -> None:
    build_pool = load_build_pool()
    nci = read_nci_smiles(200)
    # Another writing of the same molecules (RDKit's random SMILES): all duplicates.
    rewritten = [Chem.MolToSmiles(Chem.MolFromSmiles(s), doRandom=True) for s in nci[:50]]
    salt = "CC(=O)O.[Na+].[Cl-]"  # largest fragment acetic acid
    stereo = "C[C@H](O)CC"  # butan-2-ol; FreeSolv-like entry below has no stereo
    sources = {"nci": nci, "again": rewritten, "extra": [salt, stereo, "not a smiles"]}
    exclude = [nci[3], "CC(O)CC", "CC(=O)O"]
    pool, summary = build_pool.build_pool(sources, exclude)

    expected_unique = {
        Chem.MolToSmiles(
            max(
                Chem.GetMolFrags(Chem.MolFromSmiles(s), asMols=True),
                key=lambda m: m.GetNumHeavyAtoms(),
            )
        )
        for s in nci
    }
    assert len(pool) == len(set(pool))
    counts = summary["sources"]
    assert counts["again"]["duplicate"] == 50
    assert counts["extra"]["unparsable"] == 1
    assert counts["extra"]["freesolv_exact"] == 1  # the salt's acetic acid
    assert counts["extra"]["freesolv_without_stereo"] == 1  # butan-2-ol, stereo ignored
    excluded_key = build_pool.canonical_keys(nci[3])[0]
    assert excluded_key not in pool
    assert set(pool) == expected_unique - {excluded_key}
    kept = sum(c["kept"] for c in counts.values())
    assert kept == len(pool) == summary["pool_size"]
    assert summary["freesolv_removed"] == 3
