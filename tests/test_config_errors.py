"""A config the command line cannot use is one line: the key, the class, the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from molssl.cli import main
from molssl.config_errors import ConfigError, summarize_config_error
from tests.bad_inputs.shared import run_cli, tiny_unicorn_config


@pytest.fixture()
def config(tmp_path: Path) -> dict:
    return tiny_unicorn_config(tmp_path / "cache", tmp_path / "runs")


def _one_line(args: list[str], folder: Path) -> str:
    exited = run_cli(args, folder)
    assert exited is not None and exited.code == 2, exited
    lines = exited.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("molssl fit: error: "), exited.stderr
    assert not (folder / "runs").exists()  # refused before anything ran
    return lines[0]


def _config_line(error: str, path: Path) -> str:
    """The line of ``path`` that an error ending in ``(<path>, line N)`` names."""
    assert error.endswith(")") and f"({path}, line " in error
    number = int(error.rsplit("line ", 1)[1].rstrip(")"))
    return path.read_text().splitlines()[number - 1]


def _write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_a_class_path_typo_names_the_key_the_line_and_the_class_meant(
    config: dict, tmp_path: Path
) -> None:
    config["model"]["init_args"]["encoder_3d"]["class_path"] = (
        "molssl.encoders.EquivariantTransformr"
    )
    path = _write(tmp_path / "typo.yaml", config)
    line = _one_line(["fit", "--config", str(path)], tmp_path)
    assert "model.init_args.encoder_3d.class_path: 'molssl.encoders.EquivariantTransformr'" in line
    assert "did you mean 'molssl.encoders.EquivariantTransformer'?" in line
    assert "EquivariantTransformr" in _config_line(line, path)


def test_an_unknown_argument_names_its_class_and_line(config: dict, tmp_path: Path) -> None:
    config["model"]["init_args"]["objectives"][0]["init_args"]["mask_ratoi"] = 0.3
    path = _write(tmp_path / "key.yaml", config)
    line = _one_line(["fit", "--config", str(path)], tmp_path)
    assert "model.init_args.objectives (molssl.objectives.FragmentMask)" in line
    assert "Option 'mask_ratoi' is not accepted" in line
    assert "mask_ratoi" in _config_line(line, path)


def test_a_damaged_yaml_file_is_named_with_line_and_column(config: dict, tmp_path: Path) -> None:
    path = tmp_path / "damaged.yaml"
    text = yaml.safe_dump(config, sort_keys=False).splitlines()
    text.insert(5, "seed_everything: [1, 2")  # line 6: a list never closed
    path.write_text("\n".join(text) + "\n")
    line = _one_line(["fit", "--config", str(path)], tmp_path)
    assert f"{path}, line " in line and "not valid YAML" in line
    assert "flow sequence that starts at line 6, column 18" in line
    assert "<unicode string>" not in line


def test_a_value_a_class_refuses_is_one_line_naming_the_class(config: dict, tmp_path: Path) -> None:
    path = _write(tmp_path / "ok.yaml", config)
    line = _one_line(["fit", "--config", str(path), "--data.init_args.batch_size=0"], tmp_path)
    assert line.endswith("molssl.datamodules.PretrainDataModule: batch_size must be >= 1, got 0")
    line = _one_line(["fit", "--config", str(path), "--model.init_args.lr", "fast"], tmp_path)
    assert "model.init_args.lr (molssl.modules.PretrainModule): Expected a <class 'float'>" in line


def test_debug_keeps_the_traceback(config: dict, tmp_path: Path) -> None:
    path = _write(tmp_path / "ok.yaml", config)
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        main(["fit", "--debug", "--config", str(path), "--data.init_args.batch_size=0"])


def test_summary_of_a_nested_message_without_files() -> None:
    message = (
        'Parser key "data":\n'
        "  Does not validate against any of the Union subtypes\n"
        "  Errors:\n"
        "    - Problem with given class_path 'a.B':\n"
        '        Parser key "size":\n'
        "          Expected a <class 'int'>. Got value: x\n"
        "    - Expected a <class 'NoneType'>\n"
        "  Given value type: <class 'dict'>\n"
        "  Given value: {'class_path': 'a.B'}\n"
    )
    assert summarize_config_error(message) == (
        "data.init_args.size (a.B): Expected a <class 'int'>. Got value: x"
    )
    assert (
        summarize_config_error("unrecognized arguments: --x 3") == "unrecognized arguments: --x 3"
    )
