"""Wall time of every ``molssl ... --help``, against the bare interpreter and Lightning's import.

Each command runs in a fresh interpreter (the console script's own work: ``python -c "from
molssl.cli import main; main()"``), ``--repeat`` times; the median is printed. Trainer commands
are measured twice: cold (an empty help cache, so LightningCLI builds the help) and warm (the
cached text, :mod:`molssl.help_cache`), each cold run in a cache folder of its own. The
baselines in the same run: ``python -c pass`` and ``python -c "import lightning.pytorch"``, the
least a help that imports Lightning could take. Goal: every warm help within 1.5 s.

    python benchmarks/cli_startup.py --repeat 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

MOLSSL = [sys.executable, "-c", "from molssl.cli import main; main()"]
OWN = [["--help"], ["prepare", "--help"], ["embed", "--help"], ["seeds", "--help"],
       ["search", "--help"], ["predict", "--help"]]  # fmt: skip
TRAINER = [["fit", "--help"], ["validate", "--help"], ["test", "--help"],
           ["fit", "--model.help", "FinetuneModule"]]  # fmt: skip
GOAL_S = 1.5


def seconds(command: list[str], cache: str) -> float:
    """Wall time of one run (its output discarded); fails loudly on a non-zero exit."""
    env = {**os.environ, "MOLSSL_CACHE": cache}
    start = time.perf_counter()
    subprocess.run(
        command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    return time.perf_counter() - start


def median(command: list[str], repeat: int, cache: str | None = None) -> float:
    """Median over ``repeat`` runs; ``cache=None`` gives every run an empty cache (cold)."""
    times = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as fresh:
            times.append(seconds(command, cache or fresh))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per command (median)")
    args = parser.parse_args()
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs,"
    )
    print(f"  load average {load}; python {platform.python_version()}")
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as scratch:
        rows.append(
            ("python -c pass", median([sys.executable, "-c", "pass"], args.repeat, scratch))
        )
        lightning = [sys.executable, "-c", "import lightning.pytorch"]
        rows.append(
            ("python -c 'import lightning.pytorch'", median(lightning, args.repeat, scratch))
        )
        for argv in OWN:
            rows.append((f"molssl {' '.join(argv)}", median(MOLSSL + argv, args.repeat, scratch)))
        for argv in TRAINER:
            name = f"molssl {' '.join(argv)}"
            rows.append((f"{name} (cold cache)", median(MOLSSL + argv, args.repeat)))
            seconds(MOLSSL + argv, scratch)  # fills the warm cache
            rows.append((f"{name} (warm cache)", median(MOLSSL + argv, args.repeat, scratch)))
    width = max(len(name) for name, _ in rows)
    print(f"median of {args.repeat} runs each, goal {GOAL_S} s for every help (warm)")
    for name, value in rows:
        over = (
            " over the goal"
            if name.startswith("molssl") and "cold" not in name and value > GOAL_S
            else ""
        )
        print(f"  {name:<{width}}  {value:6.2f} s{over}")


if __name__ == "__main__":
    main()
