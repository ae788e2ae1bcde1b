"""The ``molssl`` command line behaves like the LightningCLI tools users know (torchgeo, chemprop).

Help that is complete and fast (no Lightning import for ``molssl --help`` or a non-Trainer
command's help; Trainer commands' help cached), short class names, molssl's encoders listed,
a missing config and a mistyped key explained in one line, no import circle.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from molssl.cli import WARM_CLASS_HELP, main, warm_help_cache
from molssl.short_names import expand_short_help
from tests.test_cli import TOY_CONFIG, run_expecting_exit, write_yaml

SRC = Path(__file__).resolve().parents[1] / "src" / "molssl"
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
HEAVY = ("torch", "lightning", "rdkit", "torch_geometric")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("MOLSSL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "100")


def run_in_fresh_python(argv: list[str]) -> tuple[int, str, list[str]]:
    """``main(argv)`` in a new interpreter: exit code, stdout, and which heavy modules it loaded."""
    code = (
        "import sys\n"
        "from molssl.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exit_info:\n"
        "    status = exit_info.code or 0\n"
        "else:\n"
        "    status = 0\n"
        f"heavy = [name for name in {HEAVY!r} if name in sys.modules]\n"
        "sys.stdout.write('\\nHEAVY=' + ','.join(heavy) + '\\n')\n"
        "sys.exit(status)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy()
    )
    out, _, heavy = done.stdout.rpartition("\nHEAVY=")
    return done.returncode, out, [name for name in heavy.strip().split(",") if name]


# --- help ----------------------------------------------------------------------------------------


def test_top_level_help_lists_every_subcommand_in_full(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "{fit,validate,test,predict,prepare,embed,seeds,search}" in " ".join(out.split()[:8])
    flat = " ".join(out.split())
    # Each line whole, the test line included (Lightning's was cut mid-sentence).
    assert "test Evaluate a checkpoint on the test split, print the metrics and keep them " in flat
    assert "beside it: molssl test --ckpt CKPT" in flat
    for name in ("fit", "validate", "test", "predict", "prepare", "embed", "seeds", "search"):
        assert f"\n    {name} " in out


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["prepare", "--help"],
        ["embed", "--help"],
        ["seeds", "--help"],
        ["predict", "-h"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_help_of_molssl_and_its_own_commands_imports_nothing_heavy(argv: list[str]) -> None:
    status, out, heavy = run_in_fresh_python(argv)
    assert status == 0 and out.startswith("usage: molssl")
    assert heavy == [], f"molssl {' '.join(argv)} imported {heavy}"


def test_trainer_help_is_cached_and_then_served_without_lightning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in (["fit", "--help"], ["fit", "--model.help", "FinetuneModule"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
        first = capsys.readouterr().out
        status, again, heavy = run_in_fresh_python(argv)
        assert status == 0 and again == first and heavy == []
    assert len(list((Path("cache") / "cli-help").glob("fit-*.txt"))) == 2


def test_make_install_fills_the_help_cache() -> None:
    warm_help_cache(("validate",))
    cached = sorted((Path("cache") / "cli-help").glob("validate-*.txt"))
    # The subcommand's help and each model's and data module's, all under molssl's name.
    assert len(cached) == 1 + len(WARM_CLASS_HELP)
    assert all(path.read_text().startswith("usage: molssl") for path in cached)


def test_short_names_in_every_help_group(capsys: pytest.CaptureFixture[str]) -> None:
    """``--data.help QM9DataModule`` as ``--model.help FinetuneModule``: the optional data
    argument takes molssl's short names too; another class's name is left to jsonargparse."""
    with pytest.raises(SystemExit) as exit_info:
        main(["test", "--data.help", "QM9DataModule"])
    assert exit_info.value.code == 0
    assert "--data.train_size" in capsys.readouterr().out
    assert expand_short_help(["fit", "--data.help", "NotAClass"]) == [
        "fit", "--data.help", "NotAClass"
    ]  # fmt: skip
    assert expand_short_help(["fit", "--data.help", "MD17DataModule"])[2] == (
        "molssl.datamodules.md.MD17DataModule"
    )


def test_short_class_names_and_encoders_typed_by_molssls_base(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "FinetuneModule"])
    out = " ".join(capsys.readouterr().out.split())
    listed = out.split("type: <class 'Encoder'>, known subclasses:", 1)[1].split(")", 1)[0]
    assert {name.strip() for name in listed.split(",")} >= {
        "molssl.encoders.EquivariantTransformer",
        "molssl.encoders.Graphormer",
        "molssl.encoders.MoleBlendTransformer",
    }
    assert "torch.nn.Linear" not in out and "torch.nn.modules" not in out
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model", "FinetuneModule", "--model.encoder", "EquivariantTransformer",
              "--print_config"])  # fmt: skip
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["class_path"] == "molssl.modules.FinetuneModule"
    encoder = config["model"]["init_args"]["encoder"]
    assert encoder["class_path"] == "molssl.encoders.EquivariantTransformer"


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["fit"], "pass --config CONFIG.yaml"),
        (["fit", "--trainer.max_steps", "5"], "pass --config CONFIG.yaml"),
        (["test"], "pass --ckpt CHECKPOINT"),
        (["fitt"], "did you mean 'fit'?"),
    ],
    ids=["fit", "fit-overrides-only", "test", "typo"],
)
def test_nothing_to_build_says_what_to_pass(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_expecting_exit(argv, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and expected in err
    assert not Path("runs").exists()


def test_a_mistyped_key_ends_with_the_closest_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toy = str(write_yaml(tmp_path / "toy.yaml", TOY_CONFIG))
    unicorn = (CONFIG_DIR / "unicorn.yaml").read_text().replace("mask_ratio", "mask_ratoi")
    bad_unicorn = tmp_path / "unicorn.yaml"
    bad_unicorn.write_text(unicorn)
    renamed = {"trainer:": "trainr:", "encoder_2d:": "encoder_2:"}
    for name, (old, new) in enumerate(renamed.items()):
        text = (CONFIG_DIR / "cpu" / "unicorn.yaml").read_text().replace(old, new)
        (tmp_path / f"renamed{name}.yaml").write_text(text)
    cases = [
        (["fit", "-c", "renamed0.yaml"], "unknown key 'trainr'; did you mean 'trainer'?"),
        (
            ["fit", "-c", "renamed1.yaml"],
            "(molssl.modules.PretrainModule): Option 'encoder_2.init_args.hidden_channels' is not "
            "accepted; did you mean 'encoder_2d'? (renamed1.yaml, line ",
        ),
        (["fit", "-c", toy, "--trainer.max_stepz", "5"], "did you mean --trainer.max_steps?"),
        (["fit", "-c", toy, "--model.init_args.lrr", "5"], "did you mean 'lr'?"),
        (["fit", "-c", str(bad_unicorn)], "did you mean 'mask_ratio'?"),
        (["fit", "-c", toy, "--model.init_args.zzzz", "5"], "accepted: num_features, lr"),
    ]
    for argv, expected in cases:
        code, err = run_expecting_exit(argv, capsys)
        assert code == 2, argv
        lines = err.strip().splitlines()
        assert len(lines) == 1 and expected in lines[-1], (argv, err)
        assert lines[-1].startswith("molssl fit: error: ")


def test_molssl_cli_is_imported_by_no_module_of_molssl() -> None:
    # The dispatcher is the root of the import graph: the commands and the Lightning side import
    # molssl.cli_common, never molssl.cli, so there is no import circle through it.
    importers = []
    for path in SRC.rglob("*.py"):
        if path.name == "cli.py" and path.parent == SRC:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            if "molssl.cli" in names:
                importers.append(str(path.relative_to(SRC)))
    assert importers == []
