"""`make gpu-check` on a CPU machine: the no-CUDA exit, the derived grid, the plan and the report writer."""

from __future__ import annotations

import math
import subprocess
import sys
import tomllib

import pandas as pd
import pytest
import torch

from bench.gpu_check import check as gpu_check
from bench.gpu_check.report import GpuFacts, Phase, SuiteCounts, largest_differences, render_report, stacked_throughput
from bench.grid.files import load_grid, parse_grid

REPO = gpu_check.REPO


def test_without_cuda_it_says_so_in_one_line_and_exits_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1
    assert "sees no CUDA device" in captured.err and not (tmp_path / "out").exists()  # nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="the script's no-CUDA exit needs a machine without CUDA")
def test_the_script_itself_exits_2_without_cuda(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == "" and len(proc.stderr.splitlines()) == 1, proc.stderr


def test_the_derived_grid_is_grid_toml_shortened_and_nothing_else(tmp_path):
    """Every run of configs/grid.toml, with the overrides' values; every other resolved key unchanged; the
    'alone' grids hold one run per variant; configs/grid.toml itself is untouched."""
    before = (REPO / "configs" / "grid.toml").read_bytes()
    files, overrides = gpu_check.derived_grids(tmp_path, steps=40)
    assert (REPO / "configs" / "grid.toml").read_bytes() == before
    original = load_grid(REPO / "configs" / "grid.toml")
    assert overrides["train.max_steps"] == (30000, 40) and overrides["data.max_eval_images"] == (0, 1000)
    for name, graphs, count in (("grid-graphs-off", False, 45), ("grid-graphs-on", True, 45),
                                ("alone-graphs-off", False, 5), ("alone-graphs-on", True, 5)):
        derived = load_grid(files[name])
        assert len(derived) == count, name
        by_label = {c.label: c for c in original}
        for cfg in derived:
            flat, ref = cfg.flat(), by_label[cfg.label].flat()
            assert flat["train.max_steps"] == 40 and flat["train.eval_every"] == 40
            assert flat["data.max_eval_images"] == 1000 and flat["train.cuda_graphs"] is graphs
            changed = {k for k in flat if flat[k] != ref[k]}
            assert changed <= {"train.max_steps", "train.eval_every", "data.max_eval_images", "train.cuda_graphs"}
        assert {c.variant for c in derived} == {c.variant for c in original}


def test_to_toml_reads_back_as_the_same_grid():
    raw = {"name": "g", "model": {"hidden": [8, 4], "latent_dim": 2}, "train": {"lr": 3e-4, "compile": False},
           "variant": [{"name": "a"}, {"name": "b", "model": {"prior": "vamp"}, "train.kl_warmup_steps": 3}],
           "grid": {"train.lr": [1e-30, 0.5], "train": {"seed": [0, 1]}}}
    text = gpu_check.to_toml(raw)
    assert [c.run_id for c in parse_grid(tomllib.loads(text))] == [c.run_id for c in parse_grid(raw)]


def test_the_dry_run_prints_the_plan_on_the_cpu(tmp_path, capsys):
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path / "out"), "--steps", "7", "--only", "grid,tests"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("override train.max_steps: 30000 -> 7" in line for line in lines)
    names = [line.split(":")[0].strip() for line in lines if " -m " in line]
    assert names == ["tests", "grid-graphs-off", "grid-graphs-on"]
    assert any("--device cuda --stack auto" in line for line in lines)
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path / "out"), "--only", "gird"]) == 2


def test_an_output_folder_that_is_not_a_checks_is_refused(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep")
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 2
    assert (tmp_path / "mine.txt").exists() and "not a gpu-check folder" in capsys.readouterr().err


def fake_runs(variant_sizes: dict[str, tuple[int, float]], graphs: bool) -> pd.DataFrame:
    """Rows as `vaebench run` writes them: per variant (runs in its one stack, each run's ex/s)."""
    rows = []
    for variant, (size, per_run) in variant_sizes.items():
        for i in range(size):
            rows.append({"run_id": f"{variant}-{i}", "variant": variant, "stack_id": f"{variant}-x{size}",
                         "stack_size": size, "train_examples_per_s": per_run, "status": "completed",
                         "compiled": True, "cuda_graphs": graphs, "compile_error": "", "compile_seconds": 12.0,
                         "val_elbo": -100.0 - i, "test_elbo": -101.0 - i, "test_iw_log_px": -99.0 - i})
    return pd.DataFrame(rows)


def test_the_report_holds_the_machine_tests_throughput_wall_time_and_device_differences():
    stacked = fake_runs({"iaf": (9, 10_000.0), "mean-field": (9, 20_000.0)}, graphs=False)
    alone = fake_runs({"iaf": (1, 30_000.0), "mean-field": (1, 60_000.0)}, graphs=False)
    cpu = fake_runs({"tiny": (2, 1.0)}, graphs=False)
    cuda = cpu.assign(test_iw_log_px=cpu["test_iw_log_px"] + [0.25, -0.5])
    facts = GpuFacts(machine={"device": "NVIDIA H200", "torch": "2.13.0", "CUDA (torch build)": "12.8"},
                     overrides={"train.max_steps": (30000, 500)},
                     tests=SuiteCounts(60, 1, 0, 2, 95.0, ("tests/test_x.py::test_y",)),
                     phases={"grid-graphs-off": Phase("grid-graphs-off", 0, 301.0, stacked),
                             "alone-graphs-off": Phase("alone-graphs-off", 0, 88.0, alone),
                             "grid-graphs-on": Phase("grid-graphs-on", 1, 5.0, None)},
                     tiny_cpu=cpu, tiny_cuda=cuda, same_noise_max_abs=3e-5)
    text = render_report(facts)
    assert "- device: NVIDIA H200" in text and "- CUDA (torch build): 12.8" in text
    assert "`train.max_steps`: 30000 -> 500" in text
    assert "60 passed, 1 failed, 0 errors, 2 skipped in 95 s" in text and "`tests/test_x.py::test_y`" in text
    assert "| iaf (x9) | 30,000 | n/a | 90,000 | n/a | 3.00, n/a |" in text  # 9 runs x 10,000 vs 30,000 alone
    assert "| mean-field (x9) | 60,000 | n/a | 180,000 | n/a | 3.00, n/a |" in text
    assert "grid-graphs-off: 301 s" in text and "| grid-graphs-on | 5 | 1 | no rows |" in text
    assert "18/18 completed, 18 compiled, 0 with CUDA graphs, 24 s compiling the step" in text
    assert "test_iw_log_px 0.500 nats" in text and "val_elbo 0.000 nats" in text
    assert "over a variant's seeds = 1.000 nats" in text  # the two fake tiny runs: -99 and -100
    assert "0.000030 nats" in text


def test_stacked_throughput_sums_a_stack_and_averages_stacks():
    runs = fake_runs({"v": (2, 5.0)}, graphs=True)
    runs = pd.concat([runs, runs.assign(stack_id="v-other", train_examples_per_s=10.0)])
    assert stacked_throughput(runs)["v"] == pytest.approx((2 * 5.0 + 2 * 10.0) / 2)
    failed = runs.assign(status="failed")
    assert stacked_throughput(failed).empty
    assert math.isnan(largest_differences(runs.iloc[:0], runs)["test_elbo"])


def test_the_tests_phase_counts_come_from_pytests_junit_xml(tmp_path):
    xml = tmp_path / "tests.xml"
    xml.write_text('<testsuites><testsuite name="pytest" tests="4" failures="1" errors="0" skipped="1">'
                   '<testcase classname="tests.test_a" name="test_ok"/><testcase classname="tests.test_a" name="t2"/>'
                   '<testcase classname="tests.test_b" name="test_bad[cuda]"><failure message="x"/></testcase>'
                   '<testcase classname="tests.test_b" name="test_skip"><skipped/></testcase></testsuite></testsuites>')
    counts = gpu_check.read_tests(xml, 12.0)
    assert (counts.passed, counts.failed, counts.errors, counts.skipped) == (2, 1, 0, 1)
    assert counts.failures == ("tests.test_b::test_bad[cuda]",)
    assert gpu_check.read_tests(tmp_path / "absent.xml", 1.0).errors == 1
