"""The Slurm backend of the `Executor` seam, through submitit: the tasks are submitted as one job array (one
job per task, `sbatch` by submitit), and `map` yields each job's result as it completes.

Generic over what a task is and what it returns: a job calls `fn(task)`. The call is checkpointable, so a job
that Slurm preempts, or that reaches its time limit, is requeued (up to `max_requeues` times for timeouts) with
the same call: a task that saves its own progress resumes from it. A job that ends without a result (killed,
out of memory, requeued too often) goes to `on_lost(task, error)`, the error one line naming its log. Each job's
files (submission script, pickles, stdout/stderr logs) live in `folder/<job id>/`. submitit is imported only
here, and only when a `SlurmExecutor` is made.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from bench.errors import UserError

CLUSTER = "slurm"  # submitit's executor; "local" is submitit's LocalExecutor (subprocesses, the same protocol)
POLL_S = 1.0  # a finished job is seen by its result file; sacct is asked at submitit's own pace
DEFAULT_TIME_MIN = 60
MAX_REQUEUES = 3
JOB_NAME = "vaebench"


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise UserError("--executor slurm needs submitit, which is not installed: pip install submitit") from None
    return submitit


@dataclass(frozen=True)
class SlurmOptions:
    """What each job asks Slurm for (`--slurm-*`); None: not given (Slurm's default partition, DEFAULT_TIME_MIN
    minutes, 1 CPU, no GPU)."""

    partition: str | None = None
    time_min: int | None = None
    gpus: int | None = None
    cpus: int | None = None

    def given(self) -> list[str]:
        return [f"--slurm-{name}" for name, value in (("partition", self.partition), ("time", self.time_min),
                                                      ("gpus", self.gpus), ("cpus", self.cpus)) if value is not None]

    def check(self) -> None:
        for flag, value, low in (("--slurm-time", self.time_min, 1), ("--slurm-cpus", self.cpus, 1),
                                 ("--slurm-gpus", self.gpus, 0)):
            if value is not None and value < low:
                raise UserError(f"{flag} must be >= {low}; got {value}")
        if self.partition is not None and not self.partition.strip():
            raise UserError("--slurm-partition must not be empty")


class SlurmJobError(Exception):
    """A job that ended without a result."""


class ResumableCall:
    """What a job runs, `fn(task)`; submitit calls `checkpoint` on preemption or timeout and requeues the job with
    the call it returns (the same one)."""

    def __init__(self, fn: Callable[[Any], Any]):
        self.fn = fn

    def __call__(self, task: Any) -> Any:
        return self.fn(task)

    def checkpoint(self, task: Any):
        return import_submitit().helpers.DelayedSubmission(self, task)


def last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip() and not line.startswith("---")]
    return lines[-1] if lines else ""


class SlurmExecutor:
    """Runs tasks as the jobs of one Slurm job array with `options` each; job files under `folder`.

    `cluster` picks submitit's executor ("slurm": `sbatch` must be on PATH; "local": subprocesses here).
    """

    def __init__(self, folder: Path, options: SlurmOptions = SlurmOptions(), cluster: str | None = None,
                 max_requeues: int = MAX_REQUEUES, on_lost: Callable[[Any, BaseException], Any] | None = None):
        self.folder, self.options = Path(folder), options
        self.cluster = cluster or CLUSTER
        self.max_requeues, self.on_lost = max_requeues, on_lost
        self.submitit = import_submitit()
        self.job_ids: list[str] = []
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise UserError("--executor slurm needs Slurm's sbatch on this machine's PATH (run on a login node of "
                            "the cluster)")

    def describe(self) -> str:
        o = self.options
        where = f"partition {o.partition}" if o.partition else "the default partition"
        gpus = f" + {o.gpus} GPU(s)" if o.gpus else ""
        ids = ", ".join(self.job_ids[:3]) + (", ..." if len(self.job_ids) > 3 else "")
        return (f"slurm ({self.cluster}): {len(self.job_ids)} job(s) submitted ({ids}); {where}, {o.cpus or 1} "
                f"CPU(s){gpus} and {o.time_min or DEFAULT_TIME_MIN} min per job; job logs in {self.folder}")

    def _executor(self):
        o = self.options
        executor = self.submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster,
                                              slurm_max_num_timeout=self.max_requeues,
                                              local_max_num_timeout=self.max_requeues)
        parameters: dict[str, Any] = {"name": JOB_NAME, "timeout_min": o.time_min or DEFAULT_TIME_MIN,
                                      "cpus_per_task": o.cpus or 1}
        if o.gpus:
            parameters["gpus_per_node"] = o.gpus
        if o.partition:
            parameters["slurm_partition"] = o.partition
        executor.update_parameters(**parameters)
        return executor

    def failure(self, job, err: BaseException) -> SlurmJobError:
        """The job's end in one line: its id, state, the last line of its error log (else of the error), the log."""
        try:
            log = job.stderr()
        except OSError:
            log = None
        state = getattr(job, "state", "UNKNOWN")
        cause = last_line(log) or str(err).strip().splitlines()[0]
        return SlurmJobError(f"slurm job {job.job_id} ended without a result ({state}): {cause}; "
                             f"log: {job.paths.stderr}")

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any]) -> Iterator[Any]:
        """Submit every task as one job array now (a refused submission is a UserError), and return an iterator
        of the results in completion order; closing it (or Ctrl-C) cancels the jobs still pending or running."""
        if not tasks:
            return self._results({})
        executor = self._executor()
        call = ResumableCall(fn)
        refusal = io.StringIO()  # submitit prints sbatch's complaint on stderr, and raises it too
        try:
            with contextlib.redirect_stderr(refusal), executor.batch():
                jobs = [executor.submit(call, task) for task in tasks]
        except (OSError, self.submitit.core.utils.FailedJobError) as err:  # sbatch missing, or it refused
            said = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
            raise UserError(f"cannot submit the jobs to Slurm: {said or type(err).__name__}") from None
        self.job_ids = [str(job.job_id) for job in jobs]
        return self._results(dict(enumerate(zip(jobs, tasks))))

    def _results(self, pending: dict[int, tuple[Any, Any]]) -> Iterator[Any]:
        try:
            while pending:
                finished = [i for i, (job, _) in pending.items() if job.done()]
                if not finished:
                    time.sleep(POLL_S)
                for i in finished:
                    job, task = pending.pop(i)
                    try:
                        result = job.result()
                    except Exception as err:  # submitit's UncompletedJobError / FailedJobError
                        if self.on_lost is None:
                            raise self.failure(job, err) from None
                        result = self.on_lost(task, self.failure(job, err))
                    yield result
        finally:
            for job, _ in pending.values():
                job.cancel(check=False)
            unformatted = self.folder / "%j"  # made, and left empty, by submitit's local executor
            if unformatted.is_dir() and not any(unformatted.iterdir()):
                unformatted.rmdir()
