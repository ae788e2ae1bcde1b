"""PretrainModule: construction checks, one encoder pass per step, logging, schedule, checkpoints.

Real molecules throughout (the first NCI molecules of RDKit's bundled set, one seeded conformer
each) with tiny encoders; see :mod:`tests.modules.pretrain_fixtures`.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch_geometric.data import Batch

from molssl.cli import main
from molssl.encoders.base import EncoderOutput
from molssl.modules import PretrainModule, ValidationSummary, WarmupCosineSchedule
from molssl.modules.validation_summary import validate_now
from molssl.objectives import (
    AtomMask,
    CoordDenoise,
    CoordNoise,
    FragmentMask,
    Objective,
    ObjectiveResult,
    TorsionAugment,
)
from molssl.objectives.fragment_mask import FragmentMaskView
from tests.modules import pretrain_fixtures
from tests.modules.custom_objective import HeavyAtomCount, HeavyAtomCountView
from tests.modules.pretrain_fixtures import (
    TINY_ENCODER_ARGS,
    CountingEncoder,
    prepare_small_cache,
    small_data_args,
    small_datamodule,
    tiny_et,
    tiny_graphormer,
    weighted_epoch_metrics,
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_small_cache(tmp_path_factory.getbasetemp() / "molssl_cache")


def unicorn_like(**kwargs: object) -> PretrainModule:
    """Fragment masking + denoising on tiny encoders, torsion augmentation as a module view."""
    settings: dict = {
        "objectives": [FragmentMask(), CoordDenoise()],
        "encoder_3d": tiny_et(),
        "encoder_2d": tiny_graphormer(),
        "views": [TorsionAugment(2.0)],
        "lr": 1e-3,
        "warmup_steps": 2,
    }
    settings.update(kwargs)
    return PretrainModule(**settings)


def quiet_trainer(root: Path, **kwargs: object) -> Trainer:
    return pretrain_fixtures.quiet_trainer(root, **{"num_sanity_val_steps": 0, **kwargs})


def first_batch(cache_dir: Path, module: PretrainModule) -> Batch:
    data = small_datamodule(cache_dir)
    data.set_views(module.pipeline_views())
    data.setup("fit")
    return next(iter(data.train_dataloader()))


# --- construction checks ---------------------------------------------------------------------


def test_missing_encoder_names_the_objective_and_role() -> None:
    with pytest.raises(ValueError, match=r"'coord_denoise' \(CoordDenoise\).*'3d'.*encoder_3d"):
        PretrainModule(objectives=[FragmentMask(), CoordDenoise()], encoder_2d=tiny_graphormer())


def test_unknown_role_is_rejected() -> None:
    class FourD(FragmentMask):
        requires = ("4d",)

    with pytest.raises(ValueError, match=r"'four_d'.*unknown encoder role '4d'"):
        PretrainModule(objectives=[FourD()], encoder_2d=tiny_graphormer())


def test_objective_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="two objectives are named 'coord_denoise'"):
        PretrainModule(objectives=[CoordDenoise(), CoordDenoise()], encoder_3d=tiny_et())
    renamed = PretrainModule(
        objectives=[CoordDenoise(), CoordDenoise(name="denoise_again")], encoder_3d=tiny_et()
    )
    assert [o.name for o in renamed.objectives] == ["coord_denoise", "denoise_again"]


def test_objectives_and_views_are_type_checked() -> None:
    with pytest.raises(TypeError, match="Linear"):
        PretrainModule(objectives=[nn.Linear(2, 2)], encoder_3d=tiny_et())  # type: ignore[list-item]
    with pytest.raises(ValueError, match="at least one objective"):
        PretrainModule(objectives=[], encoder_3d=tiny_et())
    with pytest.raises(TypeError, match=r"molssl\.objectives\.View"):
        PretrainModule(
            objectives=[CoordDenoise()],
            encoder_3d=tiny_et(),
            views=[lambda data: data],  # type: ignore[list-item]
        )


def test_pipeline_views_are_ordered_and_deduplicated() -> None:
    module = PretrainModule(
        objectives=[
            FragmentMask(),
            CoordDenoise(sigma=0.04),
            CoordDenoise(sigma=0.04, name="second"),
        ],
        encoder_3d=tiny_et(),
        encoder_2d=tiny_graphormer(),
        # Given last-first on purpose; CoordNoise(0.04) equals the objectives' own.
        views=[CoordNoise(0.04), TorsionAugment(2.0)],
    )
    views = module.pipeline_views()
    assert [type(view) for view in views] == [TorsionAugment, CoordNoise, FragmentMaskView]
    assert [view.order for view in views] == [10, 20, 30]


@pytest.mark.parametrize(
    ("objectives", "views"),
    [
        ([CoordDenoise(sigma=0.04)], [CoordNoise(0.1)]),
        ([CoordDenoise(sigma=0.04), CoordDenoise(sigma=0.1, name="wide")], []),
        ([CoordDenoise(sigma=0.04)], [TorsionAugment(2.0), TorsionAugment(2.0, unit="rad")]),
        ([FragmentMask(), AtomMask()], []),
    ],
    ids=["noise-vs-module-view", "two-noise-sigmas", "two-torsion-sigmas", "two-masks"],
)
def test_conflicting_views_are_a_clear_error(objectives: list, views: list) -> None:
    with pytest.raises(ValueError, match="conflicting views"):
        PretrainModule(
            objectives=objectives,
            encoder_3d=tiny_et(),
            encoder_2d=tiny_graphormer(),
            views=views,
        )


def test_unused_encoder_warns_and_is_not_run() -> None:
    with pytest.warns(UserWarning, match="encoder_2d is set but no objective reads"):
        module = PretrainModule(
            objectives=[CoordDenoise()], encoder_3d=tiny_et(), encoder_2d=tiny_graphormer()
        )
    assert module.required_roles == ("3d",)


def test_bad_optimiser_settings_are_rejected() -> None:
    for bad, message in [
        ({"lr": 0.0}, "lr"),
        ({"betas": (0.9, 1.0)}, "betas"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"min_lr_ratio": 2.0}, "min_lr_ratio"),
        ({"max_steps": 0}, "max_steps"),
    ]:
        with pytest.raises(ValueError, match=message):
            PretrainModule(objectives=[CoordDenoise()], encoder_3d=tiny_et(), **bad)


# --- one step ------------------------------------------------------------------------------------


def test_each_encoder_runs_once_and_losses_are_weighted(cache_dir: Path) -> None:
    encoder_3d, encoder_2d = CountingEncoder(tiny_et()), CountingEncoder(tiny_graphormer())
    objectives = [FragmentMask(weight=0.5), CoordDenoise(weight=2.0), HeavyAtomCount(weight=0.25)]
    module = PretrainModule(objectives=objectives, encoder_3d=encoder_3d, encoder_2d=encoder_2d)
    batch = first_batch(cache_dir, module)
    module.eval()
    with torch.no_grad():
        total, results = module.objective_results(batch)
        assert (encoder_3d.calls, encoder_2d.calls) == (1, 1)
        outputs = module(batch)
        separately = [objective.loss(batch, outputs).loss for objective in objectives]
    assert list(results) == ["fragment_mask", "coord_denoise", "heavy_atom_count"]
    expected = 0.5 * separately[0] + 2.0 * separately[1] + 0.25 * separately[2]
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    for result, loss in zip(results.values(), separately, strict=True):
        assert result.loss.item() == pytest.approx(loss.item(), rel=1e-5)


def test_a_training_step_reaches_every_encoder_and_head(cache_dir: Path) -> None:
    module = unicorn_like()
    batch = first_batch(cache_dir, module)
    total, _ = module.objective_results(batch)
    total.backward()
    for name, parameter in module.named_parameters():
        # The mask embedding only matters for masked atoms; every sample has some.
        assert parameter.grad is not None, name
    assert module.encoder_3d.embedding.weight.grad.abs().sum() > 0
    assert module.encoder_2d.mask_embedding.grad.abs().sum() > 0


def test_weight_decay_spares_biases_and_normalisation() -> None:
    module = unicorn_like(weight_decay=0.05, objectives=[CoordDenoise(hidden_channels=16)])
    decay, no_decay = module.parameter_groups()
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): name for name, p in module.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    spared = {names[id(p)] for p in no_decay["params"]}
    assert decayed.isdisjoint(spared)
    assert decayed | spared == set(names.values())
    assert all(not name.endswith("bias") for name in decayed)
    assert "encoder_3d.out_norm.weight" in spared
    assert "encoder_3d.embedding.weight" in decayed


# --- logging, schedule, validation averages ---------------------------------------------------


def read_csv_metrics(log_dir: Path) -> list[dict[str, str]]:
    with open(log_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_fit_logs_every_objective_and_follows_the_schedule(cache_dir: Path, tmp_path: Path) -> None:
    module = unicorn_like(lr=1e-3, warmup_steps=2, min_lr_ratio=0.1)
    logger = CSVLogger(tmp_path, name="run")
    trainer = quiet_trainer(tmp_path, max_steps=6, logger=logger, log_every_n_steps=1)
    trainer.fit(module, small_datamodule(cache_dir))
    rows = read_csv_metrics(Path(logger.log_dir))
    columns = set(rows[0])
    for stage in ("train", "val"):
        assert f"{stage}/loss" in columns
        for metric in ("loss", "accuracy", "masked_atoms"):
            assert f"{stage}/fragment_mask/{metric}" in columns
        for metric in ("loss", "rmse_angstrom"):
            assert f"{stage}/coord_denoise/{metric}" in columns
    lrs = [(int(row["step"]), float(row["train/lr"])) for row in rows if row.get("train/lr")]
    schedule = WarmupCosineSchedule(warmup_steps=2, total_steps=6, min_lr_ratio=0.1)
    assert [step for step, _ in lrs] == list(range(6))
    assert [lr for _, lr in lrs] == pytest.approx([1e-3 * schedule(step) for step in range(6)])


def test_validation_averages_are_weighted_by_batch_size(cache_dir: Path, tmp_path: Path) -> None:
    # Batches of 2 molecules: masked-atom counts differ from batch to batch.
    data = small_datamodule(cache_dir, batch_size=2)
    module = unicorn_like()
    trainer = quiet_trainer(tmp_path)
    trainer.validate(module, data)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    expected = weighted_epoch_metrics(module, data.val_dataloader())
    assert set(logged) == set(expected)
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, rel=1e-5), key
    # The callback's own start-of-training pass computes the same numbers.
    now = validate_now(trainer, module)
    assert now == pytest.approx(expected, rel=1e-5)


def test_validation_summary_compares_step_zero_with_the_end(
    cache_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = ValidationSummary()
    logger = CSVLogger(tmp_path, name="run")
    trainer = quiet_trainer(
        tmp_path,
        max_steps=4,
        val_check_interval=2,
        check_val_every_n_epoch=None,
        logger=logger,
        callbacks=[summary],
        log_every_n_steps=1,
    )
    module = unicorn_like()
    trainer.fit(module, small_datamodule(cache_dir))
    assert [step for step, _ in summary.history] == [0, 2, 4]
    start, end = summary.history[0][1], summary.history[-1][1]
    assert set(start) == set(end)
    table = summary.summary(["fragment_mask", "coord_denoise"])
    assert table["losses"]["fragment_mask"]["start"] == start["val/fragment_mask/loss"]
    assert table["losses"]["total"]["end"] == end["val/loss"]
    out = capsys.readouterr().out
    assert "fragment_mask" in out and "coord_denoise" in out and "step 0" in out
    assert (Path(logger.log_dir) / "validation_summary.json").is_file()
    # Step 0 went to the logger too, so TensorBoard/CSV curves start at the untrained model.
    rows = read_csv_metrics(Path(logger.log_dir))
    step0 = [row for row in rows if row["step"] == "0" and row.get("val/loss")]
    assert float(step0[0]["val/loss"]) == pytest.approx(start["val/loss"])


# --- checkpoints ---------------------------------------------------------------------------------


def test_python_built_module_keeps_components_out_of_hparams(
    cache_dir: Path, tmp_path: Path
) -> None:
    module = unicorn_like()
    assert not set(module.hparams) & {"objectives", "encoder_3d", "encoder_2d", "views"}
    assert module.hparams["lr"] == 1e-3
    trainer = quiet_trainer(tmp_path, max_steps=2, enable_checkpointing=True, limit_val_batches=0)
    trainer.fit(module, small_datamodule(cache_dir))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    restored = PretrainModule.load_from_checkpoint(
        path,
        objectives=[FragmentMask(), CoordDenoise()],
        encoder_3d=tiny_et(),
        encoder_2d=tiny_graphormer(),
        views=[TorsionAugment(2.0)],
    )
    assert_same_state(restored.state_dict(), module.state_dict())


def assert_same_state(actual: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]):
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


def test_cli_checkpoint_rebuilds_objectives_including_a_user_subclass(
    cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    tiny_3d = TINY_ENCODER_ARGS["molssl.encoders.EquivariantTransformer"]
    tiny_2d = TINY_ENCODER_ARGS["molssl.encoders.Graphormer"]
    config = {
        "trainer": {
            "max_steps": 3,
            "val_check_interval": 3,
            "check_val_every_n_epoch": None,
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "log_every_n_steps": 1,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(tmp_path), "name": "custom"},
            },
        },
        "model": {
            "class_path": "molssl.modules.PretrainModule",
            "init_args": {
                "encoder_3d": {
                    "class_path": "molssl.encoders.EquivariantTransformer",
                    "init_args": tiny_3d,
                },
                "encoder_2d": {"class_path": "molssl.encoders.Graphormer", "init_args": tiny_2d},
                "views": [
                    {"class_path": "molssl.objectives.TorsionAugment", "init_args": {"sigma": 2.0}}
                ],
                "objectives": [
                    {"class_path": "molssl.objectives.FragmentMask"},
                    {
                        "class_path": "tests.modules.custom_objective.HeavyAtomCount",
                        "init_args": {"weight": 0.5, "scale": 8.0},
                    },
                    {
                        "class_path": "molssl.objectives.CoordDenoise",
                        "init_args": {"target_norm": "running"},
                    },
                ],
                "warmup_steps": 1,
            },
        },
        "data": {
            "class_path": "molssl.datamodules.PretrainDataModule",
            "init_args": small_data_args(cache_dir),
        },
    }
    config_path = tmp_path / "custom.yaml"
    config_path.write_text(yaml.safe_dump(config))
    main(["fit", "--config", str(config_path)])

    (ckpt,) = tmp_path.rglob("last.ckpt")
    restored = PretrainModule.load_from_checkpoint(ckpt)
    assert [type(o) for o in restored.objectives] == [FragmentMask, HeavyAtomCount, CoordDenoise]
    assert [o.weight for o in restored.objectives] == [1.0, 0.5, 1.0]
    assert restored.objectives[1].scale == 8.0
    assert [type(v) for v in restored.pipeline_views()] == [
        TorsionAugment,
        CoordNoise,
        FragmentMaskView,
        HeavyAtomCountView,
    ]
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert_same_state(restored.state_dict(), saved)
    # The running noise scale was trained and travels in the checkpoint.
    assert int(saved["objectives.2.num_updates"]) == 3

    (log_dir,) = {path.parent for path in tmp_path.rglob("metrics.csv")}
    columns = set(read_csv_metrics(log_dir)[0])
    assert {"train/heavy_atom_count/loss", "val/heavy_atom_count/mae_atoms"} <= columns


class ZeroLoss(Objective):
    """An objective whose loss ignores the encoders: the total is then exactly zero."""

    requires = ("3d",)

    def loss(self, batch: Batch, outputs: Mapping[str, EncoderOutput]) -> ObjectiveResult:
        return ObjectiveResult(loss=outputs["3d"].node.sum() * 0.0)


def test_zero_weight_objective_is_logged_but_adds_nothing(cache_dir: Path) -> None:
    module = PretrainModule(objectives=[CoordDenoise(weight=0.0), ZeroLoss()], encoder_3d=tiny_et())
    batch = first_batch(cache_dir, module)
    total, results = module.objective_results(batch)
    assert total.item() == 0.0
    assert results["coord_denoise"].loss.item() > 0
    assert results["zero_loss"].batch_size is None  # the module then averages over molecules


def test_heads_are_built_at_construction_from_encoder_widths() -> None:
    """No head waits for a first batch: DDP wrapping and model summaries see real shapes."""
    from torch.nn.parameter import UninitializedParameter

    from molssl.encoders import EquivariantTransformer, Graphormer
    from molssl.objectives import CoordDenoise, CrossModalInfoNCE, FragmentMask

    module = PretrainModule(
        objectives=[FragmentMask(), CoordDenoise(), CrossModalInfoNCE(proj_dim=8)],
        encoder_3d=EquivariantTransformer(hidden_channels=16, num_layers=1, num_heads=2),
        encoder_2d=Graphormer(hidden_channels=24, num_layers=1, num_heads=2),
    )
    assert not any(isinstance(p, UninitializedParameter) for p in module.parameters())
    infonce = module.objectives[2]
    assert infonce.head_3d.width == 16 and infonce.head_2d.width == 24
    assert module.objectives[0].head.width == 24 and module.objectives[1].head.width == 16
