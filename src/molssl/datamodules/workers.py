"""An ordered parallel map over worker processes that survives a worker killed mid-task.

``multiprocessing.Pool`` replaces a worker that dies (``kill -9``, the out-of-memory killer)
but never re-sends the task it held, so ``imap`` then waits forever with idle CPUs and no
message. :class:`WorkerPool` runs on ``concurrent.futures.ProcessPoolExecutor`` instead, which
notices a dead worker and fails the pending work at once. The results not yet returned are
then sent again to a fresh pool; a second death before any further result comes back stops
the run with :class:`WorkerDiedError`, one line naming the work that was lost (the caller
says what that is: a shard, a molecule), so that a molecule that kills its worker every time
cannot loop forever.

Results come back in task order, so the output never depends on the number of workers or on a
retry. Workers start with ``forkserver`` where the platform has it (they do not inherit the
parent's threads; the server imports the preparation code once), else ``spawn``.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from molssl.errors import UserError

__all__ = ["WorkerDiedError", "WorkerPool"]

T = TypeVar("T")
R = TypeVar("R")


class WorkerDiedError(UserError):
    """A worker process died twice on the same work (killed by a signal, out of memory).

    Attributes:
        reason: ``worker_died``.
    """

    reason = "worker_died"


class WorkerPool:
    """Worker processes kept for a whole run, mapping tasks to results in order.

    Args:
        workers: Processes; 1 (or less) maps in this process.
        preload: Modules the fork server imports once, before forking the workers.
        initializer: Called in each worker when it starts.
    """

    def __init__(
        self,
        workers: int,
        preload: Sequence[str] = (),
        initializer: Callable[[], None] | None = None,
    ) -> None:
        self.workers = int(workers)
        self.preload = list(preload)
        self.initializer = initializer
        self._executor: ProcessPoolExecutor | None = None

    def _start(self) -> ProcessPoolExecutor:
        if self._executor is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context(
                "forkserver" if "forkserver" in methods else "spawn"
            )
            if "forkserver" in methods and self.preload:
                context.set_forkserver_preload(self.preload)
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=context, initializer=self.initializer
            )
        return self._executor

    def map(
        self,
        function: Callable[[T], R],
        tasks: Sequence[T],
        lost: Callable[[int], str],
        chunksize: int | None = None,
    ) -> Iterator[R]:
        """``function`` of every task, in task order.

        Args:
            function: A module-level function (it is pickled by reference).
            tasks: The tasks.
            lost: Describes the work at a task index for the error message, e.g.
                ``lambda i: f"shard 3 at mol_id {tasks[i][0]}"``.
            chunksize: Tasks sent to a worker at once (default: a few per worker).

        Raises:
            WorkerDiedError: A worker died, and died again before the next result came back.
        """
        if self.workers <= 1:
            yield from map(function, tasks)
            return
        if chunksize is None:
            chunksize = max(1, min(16, len(tasks) // (self.workers * 8)))
        done = 0
        died_at: int | None = None
        while done < len(tasks):
            try:
                for result in self._start().map(function, tasks[done:], chunksize=chunksize):
                    yield result
                    done += 1
            except BrokenProcessPool:
                self.close(finished=False)
                if died_at == done:
                    raise WorkerDiedError(
                        f"a worker process died twice while preparing {lost(done)} (killed by "
                        "a signal; out of memory?); what was finished is kept: run the same "
                        "command again to resume, with fewer workers if memory is short"
                    ) from None
                died_at = done

    def close(self, finished: bool = True) -> None:
        """Waits for the workers after a finished run; stops them at once otherwise.

        Interrupted (Ctrl-C, SIGTERM from a scheduler, an error), the workers would otherwise
        finish their queued tasks, or outlive us, for results nobody reads.
        """
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if finished:
            executor.shutdown(wait=True)
            return
        processes: dict[Any, Any] = dict(getattr(executor, "_processes", None) or {})
        for process in processes.values():
            if process.is_alive():
                process.terminate()
        executor.shutdown(wait=True, cancel_futures=True)
