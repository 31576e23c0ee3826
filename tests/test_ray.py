"""`vaebench run --executor ray`: same rows as local, resume, worker death, failures, Ctrl-C, shared-folder probe,
missing Ray, and attaching to a separately started head. One local Ray instance (2 CPUs) serves the module."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pandas as pd
import pytest

import bench.executors.ray
from bench.grid.files import load_grid
from bench.runner import run_grid_command
from bench.storage import ResultsLayout
from tests import executor_tasks
from tests.executor_checks import (FIGURES, assert_bad_options_are_one_line, grid_file, interrupted_after_the_first_row,
                                   invoke, lines, our_processes, straight_run, wait_for)

def our_ray_workers(title: str = "ray::vaebench_task") -> list[int]:
    """Pids of Ray worker processes in this process's tree whose title starts with `title`."""
    return our_processes(lambda argv: argv[0].startswith(title))


TEMP_DIRS: list[str] = []  # removed when the session's Ray is shut down


def short_temp_dir() -> str:
    TEMP_DIRS.append(tempfile.mkdtemp(prefix="vbray"))  # short: Ray's socket paths must fit in 107 bytes
    return TEMP_DIRS[-1]


@pytest.fixture(scope="session")
def ray_module():
    try:
        import ray
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("ray is not installed: pip install -e '.[dev]'")
        pytest.skip("ray is not installed")
    yield ray
    ray.shutdown()
    for path in TEMP_DIRS:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ray_local(ray_module, shared_data_dir):
    """The module's local Ray instance (started once; again only after a test disconnected from it)."""
    if not ray_module.is_initialized():
        ray_module.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
                        object_store_memory=100 * 1024**2, _temp_dir=short_temp_dir())
    return ray_module


@pytest.fixture
def no_ray_session(ray_module, monkeypatch):
    """No Ray session in this process, so the command starts (and stops) its own local instance."""
    ray_module.shutdown()
    monkeypatch.setenv("RAY_TMPDIR", short_temp_dir())
    return ray_module


# -- the same rows as local; a re-run runs nothing --------------------------------------------------------
def test_ray_grid_gives_the_local_rows_and_a_rerun_runs_nothing(no_ray_session, shared_data_dir, tmp_path):
    grid = grid_file(tmp_path)
    data = str(shared_data_dir)
    # --jobs 2 on 2 cores: one torch thread per run, as each Ray task has (the promise is per thread count)
    local = invoke("--grid", str(grid), "--results", str(tmp_path / "local"), "--data-dir", data, "--jobs", "2")
    assert local.exit_code == 0, local.output
    res = invoke("--grid", str(grid), "--results", str(tmp_path / "ray"), "--data-dir", data, "--executor", "ray")
    assert res.exit_code == 0, res.output
    assert "ray: a local instance" in res.output and not no_ray_session.is_initialized()  # started and stopped
    a = pd.read_parquet(tmp_path / "local" / "runs").set_index("run_id").sort_index()
    b = pd.read_parquet(tmp_path / "ray" / "runs").set_index("run_id").sort_index()
    assert list(a.index) == list(b.index) and len(b) == 2
    assert set(a.columns) == set(b.columns)
    for col in FIGURES:
        assert a[col].tolist() == b[col].tolist(), col
    assert set(a["executor"]) == {"local"} and set(b["executor"]) == {"ray"}
    assert set(b["hostname"]) == {socket.gethostname()} and (b["torch_threads"] == 1).all()
    assert (a["torch_threads"] == b["torch_threads"]).all()
    for run_id in b.index:
        assert sum(line.startswith(f"completed {run_id}") for line in lines(res.output)) == 1
        assert f"on {socket.gethostname()}" in next(line for line in lines(res.output) if run_id in line)
    curves = pd.read_parquet(tmp_path / "ray" / "curves")
    assert curves.groupby(["run_id", "step", "split"]).size().max() == 1 and len(curves) == 2 * 2 * 2
    assert not list((tmp_path / "ray").glob(".vaebench-probe*"))
    assert (b["stack_size"] == 1).all()
    again = invoke("--grid", str(grid), "--results", str(tmp_path / "ray"), "--data-dir", data, "--executor", "ray")
    assert again.exit_code == 0 and "2 already finished (skipped), 0 to run" in again.output
    assert pd.read_parquet(tmp_path / "ray" / "runs")["finished_at"].tolist() == b["finished_at"].tolist()


def test_a_ray_task_trains_one_stack_with_the_local_stacks_figures(no_ray_session, shared_data_dir, tmp_path):
    """Three seeds of one variant, --stack 3: one Ray task trains the stack; rows equal the local stack's."""
    grid = grid_file(tmp_path, extra='[grid]\n"train.seed" = [0, 1, 2]\n')
    data = str(shared_data_dir)
    local = invoke("--grid", str(grid), "--results", str(tmp_path / "local"), "--data-dir", data, "--stack", "3",
                   "--jobs", "1")
    assert local.exit_code == 0, local.output
    res = invoke("--grid", str(grid), "--results", str(tmp_path / "ray"), "--data-dir", data, "--stack", "3",
                 "--executor", "ray")
    assert res.exit_code == 0, res.output
    assert "3 to run in 1 stack" in res.output
    a = pd.read_parquet(tmp_path / "local" / "runs").set_index("run_id").sort_index()
    b = pd.read_parquet(tmp_path / "ray" / "runs").set_index("run_id").sort_index()
    assert list(a.index) == list(b.index) and len(b) == 3
    assert (b["stack_size"] == 3).all() and b["stack_id"].nunique() == 1 and set(b["executor"]) == {"ray"}
    assert a["status"].tolist() == b["status"].tolist() == ["completed"] * 3
    for col in FIGURES[1:]:  # local: 2 torch threads, a Ray task: 1; float32 sums may round differently
        assert a[col].tolist() == pytest.approx(b[col].tolist(), rel=1e-5), col


# -- a worker killed mid-run: Ray retries the task, which resumes from the saved state -----------------------
def test_killed_worker_is_retried_and_the_run_resumes_to_the_same_figures(ray_local, shared_data_dir, tmp_path):
    grid = grid_file(tmp_path, steps=1500, every=100, extra="")
    run_id = load_grid(grid)[0].run_id
    results = tmp_path / "ray"
    layout = ResultsLayout(results)
    codes: list[int] = []
    driver = threading.Thread(target=lambda: codes.append(run_grid_command(
        grid, results, shared_data_dir, "auto", 1, False, executor="ray")))
    driver.start()
    try:
        wait_for(lambda: layout.state(run_id).exists(), 120, "the first saved state")
        workers = our_ray_workers()
        assert len(workers) == 1, workers
        os.kill(workers[0], signal.SIGKILL)
    finally:
        driver.join(300)
    assert codes == [0]
    row = pd.read_parquet(layout.run(run_id)).iloc[0]
    assert 0 < row["resumed_from_step"] < 1500 and row["steps_done"] == 1500 and row["status"] == "completed"
    straight = straight_run(grid, tmp_path / "straight", shared_data_dir)
    for key in FIGURES:
        assert row[key] == straight[key], key
    curves = pd.read_parquet(layout.curves(run_id))
    valid = curves[curves["split"] == "valid"]
    assert valid["step"].tolist() == list(range(100, 1501, 100))
    assert curves.groupby(["step", "split"]).size().max() == 1


# -- a run that raises on its worker is a failed row; the grid goes on -------------------------------------
def test_run_that_raises_on_a_worker_is_a_failed_row_and_the_grid_goes_on(ray_local, shared_data_dir, tmp_path):
    grid = grid_file(tmp_path)
    results = tmp_path / "ray"
    broken = load_grid(grid)[0].run_id
    ResultsLayout(results).state(broken).mkdir(parents=True)  # saving its training state raises
    res = invoke("--grid", str(grid), "--results", str(results), "--data-dir", str(shared_data_dir),
                 "--executor", "ray")
    assert res.exit_code == 1, res.output
    runs = pd.read_parquet(results / "runs").set_index("run_id")
    assert len(runs) == 2 and runs.loc[broken, "status"] == "failed"
    row = pd.read_parquet(ResultsLayout(results).run(broken)).iloc[0]
    assert row["error"].startswith("IsADirectoryError") and "save_state" in row["traceback"]
    assert (runs.drop(broken)["status"] == "completed").all()
    assert f"failed    {broken}: IsADirectoryError" in res.output


# -- the executor itself: generic results, retries on worker death only ------------------------------------
def test_executor_retries_dead_workers_not_exceptions_and_passes_results_through(ray_local, tmp_path):
    tasks = [(kind, str(tmp_path / f"{kind}.count")) for kind in ("ok", "die", "raise")]
    lost = {}

    def on_lost(task, err):
        lost[task[0]] = err
        return ["lost", task[0]]

    with bench.executors.ray.RayExecutor(None, cpus=1, max_retries=1, on_lost=on_lost) as executor:
        results = list(executor.map(executor_tasks.counted, tasks))
    assert sorted(results) == [["lost", "die"], ["lost", "raise"], ["ok", "ok"]]
    assert type(lost["die"]).__name__ == "WorkerCrashedError"
    assert "raised on purpose" in str(lost["raise"])
    counts = {kind: len(Path(path).read_text().splitlines()) for kind, path in tasks}
    assert counts == {"ok": 1, "die": 2, "raise": 1}  # one retry after a death; an exception is not retried
    assert ray_local.is_initialized()  # a session it did not open is left open


# -- Ctrl-C: in-flight tasks are cancelled, completed rows kept, exit 130 ---------------------------------------
def test_interrupt_cancels_in_flight_runs_and_keeps_completed_ones(ray_local, shared_data_dir, tmp_path, monkeypatch):
    interrupted_after_the_first_row("ray", tmp_path, shared_data_dir, monkeypatch)
    wait_for(lambda: not our_ray_workers(), 10, "the in-flight run's worker to be cancelled")


# -- bad input: one line, exit 2, nothing written -------------------------------------------------------------
def test_missing_ray_is_exit_2_with_the_install_command(shared_data_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    res = invoke("--grid", str(grid_file(tmp_path)), "--results", str(tmp_path / "r"), "--data-dir",
                 str(shared_data_dir), "--executor", "ray")
    assert res.exit_code == 2, res.output
    assert len(lines(res.output)) == 1 and "pip install 'vaebench[ray]'" in res.output
    assert not (tmp_path / "r").exists()


def test_importing_bench_does_not_import_ray():
    code = "import sys, bench.cli, bench.runner, bench.executors.ray; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1]).returncode == 0


BAD_OPTIONS = {
    "unknown_executor": (["--executor", "dask"], "--executor must be local, ray or slurm; got 'dask'"),
    "jobs_with_ray": (["--executor", "ray", "--jobs", "2"], "--jobs is for --executor local"),
    "cpus_zero": (["--executor", "ray", "--cpus-per-run", "0"], "--cpus-per-run must be > 0"),
    "gpus_not_a_fraction": (["--executor", "ray", "--gpus-per-run", "1.5"], "--gpus-per-run must be a fraction"),
    "cuda_without_gpus": (["--executor", "ray", "--device", "cuda"], "--device cuda with --executor ray needs"),
    "ray_option_with_local": (["--cpus-per-run", "2"], "--cpus-per-run only apply with --executor ray"),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_bad_executor_options_are_exit_2(tmp_path, case):
    assert_bad_options_are_one_line(tmp_path, *BAD_OPTIONS[case])


def test_more_cpus_per_run_than_any_node_has_is_exit_2(ray_local, shared_data_dir, tmp_path):
    res = invoke("--grid", str(grid_file(tmp_path)), "--results", str(tmp_path / "r"), "--data-dir",
                 str(shared_data_dir), "--executor", "ray", "--cpus-per-run", "3")
    assert res.exit_code == 2 and "no node of the Ray cluster has 3 CPU(s)" in res.output, res.output
    assert not (tmp_path / "r").exists()


def test_results_folder_the_workers_cannot_see_is_exit_2(ray_local, shared_data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(bench.executors.ray, "probe_node", executor_tasks.unmounted_probe)
    results = tmp_path / "new" / "results"
    res = invoke("--grid", str(grid_file(tmp_path)), "--results", str(results), "--data-dir",
                 str(shared_data_dir), "--executor", "ray")
    assert res.exit_code == 2, res.output
    message = " ".join(res.output.split())
    assert "must be on storage every node sees" in message and "FileNotFoundError" in message
    assert len(lines(res.output)) == 1 and not (tmp_path / "new").exists()


# -- attaching to a separately started head (RAY_ADDRESS) -- last: it closes the module's local instance --------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(ray_module, monkeypatch):
    """`ray start --head --block` in its own process group and temp dir; teardown stops that group only (a plain
    `ray stop` would stop every Ray instance of this user on the machine)."""
    ray_module.shutdown()
    temp_dir = short_temp_dir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "VAEBENCH_DATA"}  # its workers find no data by themselves
    env.update(PYTHONPATH=str(Path(__file__).resolve().parents[1]), RAY_AUTH_MODE="disabled",
               VAEBENCH_CACHE=str(Path(temp_dir) / "empty-cache"))
    ray_cli = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", "--port", str(port), "--num-cpus", "2", "--temp-dir", temp_dir,
         "--include-dashboard=false", "--disable-usage-stats", "--dashboard-port", str(free_port()),
         "--dashboard-agent-listen-port", str(free_port())],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        for line in head.stdout:
            if "Ray runtime started" in line:
                break
        else:
            raise AssertionError("ray start --head exited before the runtime started")
        monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
        yield f"127.0.0.1:{port}"
    finally:
        ray_module.shutdown()
        head.terminate()
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)  # anything of that group still there
        except ProcessLookupError:
            pass
        head.stdout.close()


def test_attaches_to_a_separately_started_head_through_ray_address(ray_head, shared_data_dir, tmp_path,
                                                                   monkeypatch):
    grid, results = grid_file(tmp_path), tmp_path / "r"
    monkeypatch.setenv("VAEBENCH_DATA", str(shared_data_dir))  # the driver finds the data, the head's workers not
    res = invoke("--grid", str(grid), "--results", str(results), "--executor", "ray")
    assert res.exit_code == 2, res.output
    message = " ".join(res.output.split())
    assert f"Ray workers are not ready: {socket.gethostname()}: cannot load the data" in message
    assert len(lines(res.output)) == 1 and not results.exists()

    res = invoke("--grid", str(grid), "--results", str(results), "--data-dir", str(shared_data_dir),
                 "--executor", "ray")
    assert res.exit_code == 0, res.output
    assert f"ray: {ray_head}, 1 node(s), 2 CPUs; 1 CPU per run" in res.output
    runs = pd.read_parquet(results / "runs")
    assert len(runs) == 2 and set(runs["status"]) == {"completed"} and set(runs["executor"]) == {"ray"}
