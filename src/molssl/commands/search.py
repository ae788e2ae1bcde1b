"""``molssl search``: a config over a hyper-parameter grid x seeds, selected on validation.

UniCorn tunes MoleculeNet fine-tuning by grid search (paper Section 5.1 and Table 9) and
reports the test mean ± std over three seeds. For a grid file such as
``configs/search/table9_regression.yaml`` (each key a config entry, each value the list of its
grid values)::

    molssl search --config configs/finetune/freesolv.yaml \\
        --grid configs/search/table9_regression.yaml --seeds 0 1 2 \\
        --model.init_args.init_from runs/unicorn/version_0/checkpoints/last.ckpt

runs, for every point of the grid (the Cartesian product of the values, in file order) and every
seed, ``molssl fit`` as :mod:`molssl.commands.seeds` does, under ``OUTPUT/point_NNN/seed_S``.
Each fit keeps the checkpoint its validation metric chose (the config's ``checkpoint.monitor``,
which must be a ``val/`` metric) and that metric's value there. The point whose mean validation
value over the seeds is best (``checkpoint.mode``; ties go to the earlier point) is selected, and
only then are that point's checkpoints tested with ``molssl test --ckpt``.

**Selection cannot see the test set.** Fitting records no test metric (a
:class:`~molssl.commands.seeds.FitRun` has no field for one), :func:`select_point` receives
nothing but validation values, and no checkpoint is tested before the selection is made nor at
any other point than the selected one, so no test metric of an unselected point is ever computed.

Writes ``OUTPUT/search.json`` (every point's settings and per-seed validation values, the selected
point, its test runs and their mean and population std) and prints a table of the grid with the
selected point marked, then ``test/rmse: 1.555 ± 0.075 (n=3)`` per test metric.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentParser, Namespace

from molssl.commands.seeds import FitRun, fit_seeds, format_summary, summarise_runs, tested_runs
from molssl.errors import UserError, one_line

__all__ = ["GridError", "PointResult", "read_grid", "run_search", "select_point"]

SEARCH_FILE = "search.json"


class GridError(UserError):
    """A grid file that cannot be read, or a search that cannot select on validation."""


@dataclass(frozen=True)
class PointResult:
    """One grid point's fits: its settings and its runs' validation values, nothing else.

    Attributes:
        index: Position in the grid.
        settings: ``{config entry: value}`` of this point.
        runs: One fit per seed.
    """

    index: int
    settings: dict[str, Any]
    runs: tuple[FitRun, ...]

    @property
    def scores(self) -> list[float]:
        """The validation values of the runs (NaN where a run had none)."""
        return [math.nan if run.val_score is None else run.val_score for run in self.runs]

    @property
    def mean(self) -> float:
        """Mean validation value over the seeds."""
        return sum(self.scores) / len(self.scores)

    @property
    def std(self) -> float:
        """Population standard deviation of the validation values."""
        return math.sqrt(sum((s - self.mean) ** 2 for s in self.scores) / len(self.scores))


def add_arguments(parser: ArgumentParser) -> None:
    """Options of ``molssl search``."""
    parser.add_argument("--config", "-c", required=True, help="Fine-tuning config (YAML).")
    parser.add_argument(
        "--grid", "-g", required=True, help="Grid file (YAML): config entry -> list of values."
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="Seeds per point (default 0 1 2)."
    )
    parser.add_argument(
        "--output",
        default=None,
        help="Folder of the runs and search.json (default runs/search/<config name>).",
    )


def read_grid(path: str | Path) -> list[dict[str, Any]]:
    """The points of a grid file, in order: the product of its value lists, last key fastest.

    A key is a config entry as the command line names it (``model.init_args.lr``,
    ``trainer.max_epochs``); a value is a list of values (a single value is a list of one).

    Raises:
        GridError: A missing or unreadable file, or an entry that is not a non-empty list.
    """
    path = Path(path)
    if not path.is_file():
        raise GridError(f"grid file not found: {path}")
    try:
        grid = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise GridError(f"{path}: not YAML ({one_line(error)})") from error
    if grid is None:
        grid = {}
    if not isinstance(grid, dict):
        raise GridError(f"{path}: expected a mapping of config entries to lists of values")
    values: list[list[Any]] = []
    for key, entry in grid.items():
        if not isinstance(key, str) or not key or key.startswith("-"):
            raise GridError(f"{path}: key {key!r}: expected a config entry like model.init_args.lr")
        entry = entry if isinstance(entry, list) else [entry]
        if not entry:
            raise GridError(f"{path}: key {key!r}: expected at least one value")
        values.append(entry)
    return [dict(zip(grid, point, strict=True)) for point in itertools.product(*values)]


def point_overrides(settings: dict[str, Any]) -> list[str]:
    """``--key=value`` command-line overrides of one grid point (values as JSON/YAML scalars)."""
    return [
        f"--{key}={value if isinstance(value, str) else json.dumps(value)}"
        for key, value in settings.items()
    ]


def select_point(points: Sequence[PointResult]) -> PointResult:
    """The point with the best mean validation value (the runs' own monitor and mode).

    Only validation values are read: a :class:`PointResult` holds nothing else. A point with a
    NaN mean (a run without a score, or a NaN score) is never selected; ties go to the earlier
    point.

    Raises:
        GridError: Runs that monitor different metrics or modes, a monitor that is not a
            ``val/`` metric, or no point with a finite mean.
    """
    runs = [run for point in points for run in point.runs]
    monitors = {(run.monitor, run.mode) for run in runs}
    if len(monitors) != 1:
        raise GridError(
            f"the runs select their checkpoints differently: {sorted(map(str, monitors))}"
        )
    ((monitor, mode),) = monitors
    if not monitor or not str(monitor).startswith("val/") or mode not in ("min", "max"):
        raise GridError(
            f"search selects on a validation metric: the config's checkpoint.monitor must be a "
            f"val/ metric with mode min or max, got {monitor!r} ({mode!r})"
        )
    finite = [point for point in points if math.isfinite(point.mean)]
    if not finite:
        raise GridError(f"no grid point has a finite mean {monitor}: nothing to select")
    sign = 1.0 if mode == "min" else -1.0
    return min(finite, key=lambda point: (sign * point.mean, point.index))


def run_search(
    config: str | Path,
    grid: str | Path,
    seeds: Sequence[int],
    output: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Fits every grid point and seed, selects on validation, tests the selected point only.

    Returns:
        The ``search.json`` record (also written under the output folder).

    Raises:
        GridError: See :func:`read_grid` and :func:`select_point`.
        FileNotFoundError, ValueError, RuntimeError: See
            :func:`~molssl.commands.seeds.fit_seeds`.
    """
    config_path = Path(config)
    if not config_path.is_file():
        raise FileNotFoundError(f"config not found: {config_path}")
    settings = read_grid(grid)
    out = (
        Path(output) if output is not None else Path("runs") / "search" / config_path.stem
    ).resolve()
    points = [
        PointResult(
            index,
            point,
            tuple(
                fit_seeds(
                    config_path,
                    seeds,
                    out / f"point_{index:03d}",
                    [*overrides, *point_overrides(point)],
                )
            ),
        )
        for index, point in enumerate(settings)
    ]
    selected = select_point(points)
    # The only test runs of the search, after the selection and on the selected point alone.
    tested = tested_runs(selected.runs)
    first = selected.runs[0]
    record = {
        "config": str(config_path),
        "grid": str(grid),
        "output": str(out),
        "overrides": list(overrides),
        "seeds": list(seeds),
        "selected_on": {"monitor": first.monitor, "mode": first.mode, "over": "mean of seeds"},
        "std_ddof": 0,
        "points": [
            {
                "index": point.index,
                "settings": point.settings,
                "validation": {"mean": point.mean, "std": point.std, "values": point.scores},
                "ckpt_paths": [run.ckpt_path for run in point.runs],
            }
            for point in points
        ],
        "selected": selected.index,
        "test": {"runs": tested, "summary": summarise_runs(tested)},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / SEARCH_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def format_table(record: dict[str, Any]) -> str:
    """The grid with its validation mean ± std per point, the selected point marked ``*``."""
    keys = list(record["points"][0]["settings"]) if record["points"] else []
    monitor = record["selected_on"]["monitor"]
    header = ["", "point", *keys, f"{monitor} mean ± std"]
    rows = [header]
    for point in record["points"]:
        validation = point["validation"]
        rows.append(
            [
                "*" if point["index"] == record["selected"] else "",
                str(point["index"]),
                *(str(point["settings"][key]) for key in keys),
                f"{validation['mean']:.4g} ± {validation['std']:.2g}",
            ]
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def run(namespace: Namespace) -> None:
    """Runs ``molssl search`` and prints the grid table and the selected point's test result."""
    try:
        record = run_search(
            namespace.config,
            namespace.grid,
            namespace.seeds,
            namespace.output,
            namespace.overrides or [],
        )
    except UserError:  # GridError, a config or data error: one line, exit 2 (molssl.cli.main)
        raise
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise SystemExit(f"molssl search: error: {exc}") from exc
    selected_on = record["selected_on"]
    print(
        f"molssl search: {record['config']}, {len(record['points'])} grid point(s) x seeds "
        f"{record['seeds']}, selected on the mean {selected_on['monitor']} "
        f"({selected_on['mode']})"
    )
    print(format_table(record))
    print(f"test at the selected point {record['selected']}:")
    print(format_summary(record["test"]["summary"]))
    print(f"written to {Path(record['output']) / SEARCH_FILE}")
