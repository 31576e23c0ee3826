"""`vaebench run --executor slurm`: through submitit's local executor (the same protocol as its Slurm executor,
jobs as processes here) the rows equal the local executor's, a re-run runs nothing, a preempted job is requeued
and resumes, a killed job is a failed row naming its log and a re-run resumes it; bad options are one line.
`-m slurm`: the same grid through a real Slurm (`scripts/local_slurm.sh` starts a one-node one here)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pandas as pd
import pytest

import bench.executors.slurm
from bench.executors.slurm import SlurmExecutor, SlurmJobError
from bench.grid.files import load_grid
from bench.runner import lost_job_rows, run_grid_command
from bench.rows import write_row
from bench.storage import ResultsLayout
from bench.tasks import RunTask
from tests import executor_tasks
from tests.executor_checks import (FIGURES, assert_bad_options_are_one_line, grid_file, interrupted_after_the_first_row,
                                   invoke, lines, our_processes, straight_run, wait_for)

pytest.importorskip("submitit")


def is_job(argv: list[str]) -> bool:
    return "submitit.core._submit" in argv


@pytest.fixture
def local_cluster(monkeypatch):
    """`--executor slurm` submits through submitit's local executor."""
    monkeypatch.setattr(bench.executors.slurm, "CLUSTER", "local")


def table(results: Path) -> pd.DataFrame:
    return pd.read_parquet(results / "runs").set_index("run_id").sort_index()


def job_folders(results: Path) -> list[str]:
    return sorted(p.name for p in (results / "slurm").iterdir())


def run_like_local_then_slurm(grid: Path, tmp_path: Path, data: str, *slurm_args: str) -> tuple[pd.DataFrame, ...]:
    """The grid with the local executor (--jobs 2: one torch thread per run, as a 1-CPU job has) and with
    --executor slurm; both tables."""
    local = invoke("--grid", str(grid), "--results", str(tmp_path / "local"), "--data-dir", data, "--jobs", "2")
    assert local.exit_code == 0, local.output
    res = invoke("--grid", str(grid), "--results", str(tmp_path / "slurm"), "--data-dir", data, "--executor", "slurm",
                 *slurm_args)
    assert res.exit_code == 0, res.output
    a, b = table(tmp_path / "local"), table(tmp_path / "slurm")
    assert list(a.index) == list(b.index) and set(a.columns) == set(b.columns)
    for col in FIGURES:
        assert a[col].tolist() == b[col].tolist(), col
    assert (a["test_iw_log_px"] - b["test_iw_log_px"]).abs().max() == 0.0  # 0.0000 nats
    assert (a["test_elbo"] - b["test_elbo"]).abs().max() == 0.0
    assert set(b["executor"]) == {"slurm"} and (b["torch_threads"] == a["torch_threads"]).all()
    return a, b, res.output


def test_slurm_grid_gives_the_local_rows_and_a_rerun_runs_nothing(local_cluster, shared_data_dir, tmp_path):
    grid = grid_file(tmp_path)
    _, b, output = run_like_local_then_slurm(grid, tmp_path, str(shared_data_dir))
    assert "slurm (local): 2 job(s) submitted (" in output and len(b) == 2
    assert "; the default partition, 1 CPU(s) and 60 min per job; job logs in " in output
    results = tmp_path / "slurm"
    folders = job_folders(results)
    assert len(folders) == 2 and "%j" not in folders  # one folder per job: its script, pickles and logs
    for folder in folders:
        assert (results / "slurm" / folder / f"{folder}_0_log.err").is_file()
    curves = pd.read_parquet(results / "curves")
    assert curves.groupby(["run_id", "step", "split"]).size().max() == 1 and len(curves) == 2 * 2 * 2
    again = invoke("--grid", str(grid), "--results", str(results), "--data-dir", str(shared_data_dir),
                   "--executor", "slurm")
    assert again.exit_code == 0 and "2 already finished (skipped), 0 to run" in again.output
    assert job_folders(results) == folders  # nothing submitted
    assert table(results)["finished_at"].tolist() == b["finished_at"].tolist()


def start_driver(grid: Path, results: Path, data_dir: Path, codes: list[int]) -> threading.Thread:
    driver = threading.Thread(target=lambda: codes.append(run_grid_command(
        grid, results, data_dir, "auto", 1, False, executor="slurm")))
    driver.start()
    return driver


def signal_the_job_after_its_first_state(results: Path, run_id: str, signum: int) -> None:
    wait_for(lambda: ResultsLayout(results).state(run_id).exists(), 120, "the first saved state")
    jobs = our_processes(is_job)
    assert len(jobs) == 1, jobs
    os.kill(jobs[0], signum)


def assert_resumed_to_the_straight_figures(grid: Path, results: Path, tmp_path: Path, data_dir: Path) -> None:
    run_id = load_grid(grid)[0].run_id
    row = pd.read_parquet(ResultsLayout(results).run(run_id)).iloc[0]
    assert 0 < row["resumed_from_step"] < 1000 and row["steps_done"] == 1000 and row["status"] == "completed"
    straight = straight_run(grid, tmp_path / "straight", data_dir)
    for key in FIGURES:
        assert row[key] == straight[key], key
    curves = pd.read_parquet(ResultsLayout(results).curves(run_id))
    assert curves[curves["split"] == "valid"]["step"].tolist() == list(range(100, 1001, 100))
    assert curves.groupby(["step", "split"]).size().max() == 1


def test_a_preempted_job_is_requeued_and_its_run_resumes_to_the_same_figures(local_cluster, shared_data_dir,
                                                                             tmp_path):
    grid, results = grid_file(tmp_path, steps=1000, every=100, extra=""), tmp_path / "slurm"
    codes: list[int] = []
    driver = start_driver(grid, results, shared_data_dir, codes)
    try:
        signal_the_job_after_its_first_state(results, load_grid(grid)[0].run_id, signal.SIGUSR2)  # as Slurm warns
    finally:
        driver.join(300)
    assert codes == [0]
    assert_resumed_to_the_straight_figures(grid, results, tmp_path, shared_data_dir)
    (folder,) = job_folders(results)
    assert "this job is preempted" in (results / "slurm" / folder / f"{folder}_0_log.err").read_text()


def test_a_killed_job_is_a_failed_row_naming_its_log_and_a_rerun_resumes(local_cluster, shared_data_dir, tmp_path,
                                                                         capsys):
    grid, results = grid_file(tmp_path, steps=1000, every=100, extra=""), tmp_path / "slurm"
    run_id = load_grid(grid)[0].run_id
    codes: list[int] = []
    driver = start_driver(grid, results, shared_data_dir, codes)
    try:
        signal_the_job_after_its_first_state(results, run_id, signal.SIGKILL)  # as an out-of-memory kill
    finally:
        driver.join(300)
    assert codes == [1]
    row = pd.read_parquet(ResultsLayout(results).run(run_id)).iloc[0]
    assert row["status"] == "failed" and row["error"].startswith("SlurmJobError: slurm job ")
    log = Path(row["error"].rsplit("; log: ", 1)[1])
    assert log.is_file() and log.parent.parent == results / "slurm"
    failed = [line for line in lines(capsys.readouterr().out) if line.startswith(f"failed    {run_id}")]
    assert len(failed) == 1 and f"log: {log}" in failed[0]
    res = invoke("--grid", str(grid), "--results", str(results), "--data-dir", str(shared_data_dir),
                 "--executor", "slurm")
    assert res.exit_code == 0, res.output
    assert_resumed_to_the_straight_figures(grid, results, tmp_path, shared_data_dir)


def test_interrupt_cancels_the_jobs_still_running_and_keeps_finished_rows(local_cluster, shared_data_dir, tmp_path,
                                                                          monkeypatch):
    results = interrupted_after_the_first_row("slurm", tmp_path, shared_data_dir, monkeypatch)
    wait_for(lambda: not our_processes(is_job), 30, "the long run's job to be cancelled")
    assert len(list((results / "runs").glob("*.parquet"))) == 1


def test_executor_passes_results_through_and_hands_jobs_without_one_to_on_lost(tmp_path):
    tasks = [(kind, str(tmp_path / f"{kind}.count")) for kind in ("ok", "die", "raise")]
    lost: dict[str, BaseException] = {}

    def on_lost(task, err):
        lost[task[0]] = err
        return ["lost", task[0]]

    executor = SlurmExecutor(tmp_path / "jobs", cluster="local", on_lost=on_lost)
    results = list(executor.map(executor_tasks.counted, tasks))
    assert sorted(results) == [["lost", "die"], ["lost", "raise"], ["ok", "ok"]]
    for kind in ("die", "raise"):
        message = str(lost[kind])
        assert isinstance(lost[kind], SlurmJobError) and "\n" not in message
        assert message.startswith("slurm job ") and Path(message.rsplit("; log: ", 1)[1]).is_file()
    assert "ValueError: raised on purpose" in str(lost["raise"])
    counts = {kind: len(Path(path).read_text().splitlines()) for kind, path in tasks}
    assert counts == {"ok": 1, "die": 1, "raise": 1}  # a job that failed is not run again


def test_a_lost_jobs_finished_rows_stay_and_its_other_runs_fail(tmp_path):
    grid = grid_file(tmp_path, extra='[grid]\n"train.seed" = [0, 1]\n')
    first, second = load_grid(grid)
    layout = ResultsLayout(tmp_path / "results")
    write_row({"run_id": first.run_id, "status": "completed", "test_elbo": -90.5}, layout)
    task = RunTask((first, second), str(layout.root), None, "cpu", 1, "stack", "slurm")
    rows = lost_job_rows(layout, task, SlurmJobError("slurm job 7_0 ended without a result (FAILED): x; log: y"))
    assert [r["status"] for r in rows] == ["completed", "failed"] and rows[0]["test_elbo"] == -90.5
    assert pd.read_parquet(layout.run(first.run_id))["test_elbo"].tolist() == [-90.5]
    assert pd.read_parquet(layout.run(second.run_id))["error"].iloc[0].startswith("SlurmJobError: slurm job 7_0")


BAD_OPTIONS = {
    "slurm_option_with_local": (["--slurm-cpus", "2"], "--slurm-cpus only apply with --executor slurm"),
    "slurm_option_with_ray": (["--executor", "ray", "--slurm-partition", "p"], "--slurm-partition only apply with"),
    "ray_option_with_slurm": (["--executor", "slurm", "--cpus-per-run", "2"], "--cpus-per-run only apply with"),
    "jobs_with_slurm": (["--executor", "slurm", "--jobs", "2"], "--jobs is for --executor local"),
    "cpus_zero": (["--executor", "slurm", "--slurm-cpus", "0"], "--slurm-cpus must be >= 1; got 0"),
    "time_zero": (["--executor", "slurm", "--slurm-time", "0"], "--slurm-time must be >= 1; got 0"),
    "cuda_without_gpus": (["--executor", "slurm", "--device", "cuda"],
                          "--device cuda with --executor slurm needs --slurm-gpus"),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_bad_slurm_options_are_exit_2(tmp_path, case):
    assert_bad_options_are_one_line(tmp_path, *BAD_OPTIONS[case])


def test_no_sbatch_on_path_is_exit_2(shared_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    res = invoke("--grid", str(grid_file(tmp_path)), "--results", str(tmp_path / "r"), "--data-dir",
                 str(shared_data_dir), "--executor", "slurm")
    assert res.exit_code == 2 and len(lines(res.output)) == 1, res.output
    assert "needs Slurm's sbatch on this machine's PATH" in res.output and not (tmp_path / "r").exists()


# -- a real Slurm (scripts/local_slurm.sh starts a one-node one on this machine) --------------------------------
def slurm_answers() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%a"], capture_output=True, text=True, timeout=5)  # ms when up
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "up" in out.stdout


class QueueWatch:
    """`squeue` lines seen every half second while a command runs."""

    def __init__(self):
        self.lines: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watch)

    def watch(self) -> None:
        while not self.stop.wait(0.5):
            out = subprocess.run(["squeue", "-h", "-o", "%i %j %T %M %R"], capture_output=True, text=True).stdout
            self.lines += [line for line in out.splitlines() if line.strip() and line not in self.lines]

    def __enter__(self) -> QueueWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


@pytest.fixture
def real_slurm() -> None:
    """A Slurm that answers on this machine (asked only when a test needs it), else the test is skipped."""
    if not slurm_answers():
        pytest.skip("no Slurm answers here (sbatch, sinfo): scripts/local_slurm.sh start")


@pytest.mark.slurm
def test_real_slurm_gives_the_local_rows(real_slurm, shared_data_dir, tmp_path, capsys):
    grid = grid_file(tmp_path)
    with QueueWatch() as queue:
        _, b, output = run_like_local_then_slurm(grid, tmp_path, str(shared_data_dir), "--slurm-time", "10")
    jobs = [f for f in job_folders(tmp_path / "slurm") if re.fullmatch(r"\d+_\d+", f)]
    array = jobs[0].split("_")[0]
    assert sorted(jobs) == [f"{array}_0", f"{array}_1"]  # one job array, a job per stack
    assert any(line.startswith(f"{array}_") and " vaebench " in line for line in queue.lines), queue.lines
    def sacct() -> str:
        return subprocess.run(["sacct", "-n", "-X", "-P", "-j", array, "-o", "JobID,JobName,State,ExitCode,NodeList"],
                              capture_output=True, text=True, check=True).stdout

    def states() -> dict[str, str]:
        return {line.split("|")[0]: line.split("|")[2] for line in sacct().splitlines() if line.strip()}

    ended = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}
    wait_for(lambda: len(states()) == 2 and set(states().values()) <= ended, 60,
             "both jobs to end in sacct (their result files, which the command waits for, come first)")
    assert states() == {job: "COMPLETED" for job in jobs}, sacct()
    with capsys.disabled():
        print(f"\n{output.strip()}\nsqueue while running:\n" + "\n".join(queue.lines)
              + f"\nsacct -X -j {array}:\n{sacct().strip()}")
    res = invoke("--grid", str(grid_file(tmp_path, name="other.toml", steps=13)), "--results", str(tmp_path / "bad"),
                 "--data-dir", str(shared_data_dir), "--executor", "slurm", "--slurm-partition", "no-such-partition")
    assert res.exit_code == 2 and len(lines(res.output)) == 1, res.output
    assert "cannot submit the jobs to Slurm: sbatch: error: invalid partition specified: no-such-partition" in " ".join(
        res.output.split())
