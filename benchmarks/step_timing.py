"""Wall and CPU time of training steps of several variants that take turns on the same batches.

Stepping the variants in turn (one step of each, then the next batch) makes a change of load
on a shared machine fall on all of them alike. CPU time is this process's user + system
seconds (``time.process_time``), which other processes disturb much less than wall time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable


class StepTimes:
    """Per-step wall and CPU seconds of named variants.

    Args:
        names: The variants, in the order of the table.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self.wall: dict[str, list[float]] = {name: [] for name in names}
        self.cpu: dict[str, list[float]] = {name: [] for name in self.wall}

    def run(self, name: str, step: Callable[[], object]) -> None:
        """Run ``step`` once and record its times under ``name``."""
        begin, begin_cpu = time.perf_counter(), time.process_time()
        step()
        self.wall[name].append(time.perf_counter() - begin)
        self.cpu[name].append(time.process_time() - begin_cpu)

    def print_table(self, baseline: str, indent: str = "  ") -> None:
        """Medians per step of wall and CPU time, and their ratios to ``baseline``'s."""
        base_wall = statistics.median(self.wall[baseline])
        base_cpu = statistics.median(self.cpu[baseline])
        width = max(len(name) for name in self.wall) + 2
        header = f"{'ms wall':>10}{'ratio':>8}{'ms CPU':>10}{'ratio':>8}  steps"
        print(f"{indent}{'variant':<{width}}{header}")
        for name in self.wall:
            wall, cpu = statistics.median(self.wall[name]), statistics.median(self.cpu[name])
            print(
                f"{indent}{name:<{width}}{1000 * wall:10.1f}{wall / base_wall:8.2f}"
                f"{1000 * cpu:10.1f}{cpu / base_cpu:8.2f}  {len(self.wall[name])}"
            )
