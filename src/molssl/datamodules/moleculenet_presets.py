"""Column presets of the standard MoleculeNet CSV files.

Column names and task lists as in the files DeepChem distributes (``deepchemdata`` S3
bucket) and the loaders that read them:

* DeepChem ``deepchem/molnet/load_function/*_datasets.py``: ``TOX21_TASKS``, ``MUV_TASKS``,
  ``SIDER_TASKS``; ``["HIV_active"]`` (HIV.csv), ``["p_np"]`` (BBBP.csv), ``["exp"]``
  (Lipophilicity.csv), ``["Class"]`` / ``["pIC50"]`` with ``feature_field="mol"``
  (bace.csv), ``["expt"]`` (SAMPL.csv), ``"measured log solubility in mols per litre"``
  (delaney-processed.csv); ClinTox and ToxCast take every column after ``smiles``.
* PyTorch Geometric ``torch_geometric/datasets/molecule_net.py`` (``MoleculeNet.names``:
  SMILES and label column positions per file), which agrees with the names above.

File layouts (header order): BBBP ``num,name,p_np,smiles``; Tox21 ``<12 tasks>,mol_id,
smiles``; ToxCast ``smiles,<617 assays>``; SIDER ``smiles,<27 classes>``; ClinTox
``smiles,FDA_APPROVED,CT_TOX``; HIV ``smiles,activity,HIV_active``; MUV ``<17 tasks>,mol_id,
smiles``; BACE ``mol,CID,Class,Model,pIC50,MW,...``; ESOL ``Compound ID,...,measured log
solubility in mols per litre,smiles``; FreeSolv ``iupac,smiles,expt,calc``; Lipophilicity
``CMPD_CHEMBLID,exp,smiles``.
"""

from __future__ import annotations

from dataclasses import dataclass

from molssl.errors import UserError

__all__ = ["PRESETS", "MoleculeNetPreset", "get_preset"]


@dataclass(frozen=True)
class MoleculeNetPreset:
    """How to read one standard MoleculeNet file.

    Attributes:
        name: Canonical name (``"bbbp"``, ``"tox21"``, ...).
        smiles_column: Header of the SMILES column.
        target_columns: Label columns in task order; ``None`` for every column except the
            SMILES column (ToxCast).
        task_type: ``"classification"`` or ``"regression"``.
        file_name: Name of the standard file, for messages and documentation.
    """

    name: str
    smiles_column: str
    target_columns: tuple[str, ...] | None
    task_type: str
    file_name: str


TOX21_TASKS = (
    "NR-AR", "NR-AR-LBD", "NR-AhR", "NR-Aromatase", "NR-ER", "NR-ER-LBD",
    "NR-PPAR-gamma", "SR-ARE", "SR-ATAD5", "SR-HSE", "SR-MMP", "SR-p53",
)  # fmt: skip

MUV_TASKS = (
    "MUV-466", "MUV-548", "MUV-600", "MUV-644", "MUV-652", "MUV-689", "MUV-692", "MUV-712",
    "MUV-713", "MUV-733", "MUV-737", "MUV-810", "MUV-832", "MUV-846", "MUV-852", "MUV-858",
    "MUV-859",
)  # fmt: skip

SIDER_TASKS = (
    "Hepatobiliary disorders",
    "Metabolism and nutrition disorders",
    "Product issues",
    "Eye disorders",
    "Investigations",
    "Musculoskeletal and connective tissue disorders",
    "Gastrointestinal disorders",
    "Social circumstances",
    "Immune system disorders",
    "Reproductive system and breast disorders",
    "Neoplasms benign, malignant and unspecified (incl cysts and polyps)",
    "General disorders and administration site conditions",
    "Endocrine disorders",
    "Surgical and medical procedures",
    "Vascular disorders",
    "Blood and lymphatic system disorders",
    "Skin and subcutaneous tissue disorders",
    "Congenital, familial and genetic disorders",
    "Infections and infestations",
    "Respiratory, thoracic and mediastinal disorders",
    "Psychiatric disorders",
    "Renal and urinary disorders",
    "Pregnancy, puerperium and perinatal conditions",
    "Ear and labyrinth disorders",
    "Cardiac disorders",
    "Nervous system disorders",
    "Injury, poisoning and procedural complications",
)

_CLASSIFICATION = "classification"
_REGRESSION = "regression"

PRESETS: dict[str, MoleculeNetPreset] = {
    preset.name: preset
    for preset in (
        MoleculeNetPreset("bbbp", "smiles", ("p_np",), _CLASSIFICATION, "BBBP.csv"),
        MoleculeNetPreset("tox21", "smiles", TOX21_TASKS, _CLASSIFICATION, "tox21.csv.gz"),
        MoleculeNetPreset("toxcast", "smiles", None, _CLASSIFICATION, "toxcast_data.csv.gz"),
        MoleculeNetPreset("sider", "smiles", SIDER_TASKS, _CLASSIFICATION, "sider.csv.gz"),
        MoleculeNetPreset(
            "clintox", "smiles", ("FDA_APPROVED", "CT_TOX"), _CLASSIFICATION, "clintox.csv.gz"
        ),
        MoleculeNetPreset("hiv", "smiles", ("HIV_active",), _CLASSIFICATION, "HIV.csv"),
        MoleculeNetPreset("muv", "smiles", MUV_TASKS, _CLASSIFICATION, "muv.csv.gz"),
        MoleculeNetPreset("bace", "mol", ("Class",), _CLASSIFICATION, "bace.csv"),
        MoleculeNetPreset("bace_regression", "mol", ("pIC50",), _REGRESSION, "bace.csv"),
        MoleculeNetPreset(
            "esol",
            "smiles",
            ("measured log solubility in mols per litre",),
            _REGRESSION,
            "delaney-processed.csv",
        ),
        MoleculeNetPreset("freesolv", "smiles", ("expt",), _REGRESSION, "SAMPL.csv"),
        MoleculeNetPreset("lipophilicity", "smiles", ("exp",), _REGRESSION, "Lipophilicity.csv"),
    )
}

_ALIASES = {
    "lipo": "lipophilicity",
    "delaney": "esol",
    "sampl": "freesolv",
    "bace_r": "bace_regression",
}


def get_preset(name: str) -> MoleculeNetPreset:
    """The preset called ``name`` (case-insensitive; ``lipo``, ``delaney``, ``sampl`` too).

    Raises:
        ValueError: An unknown name, listing the known ones.
    """
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in PRESETS:
        raise UserError(f"unknown MoleculeNet preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[key]
