"""`vaebench check posterior|prior NAME`: the contract as a table, exit 0 when every check passes, 1 on a failure
(the failing line says FAIL), 2 for a name that does not resolve or a kind that is not posterior/prior."""

from __future__ import annotations

from typer.testing import CliRunner

from bench.cli import app


def invoke(*args: str):
    return CliRunner().invoke(app, ["check", *args], env={"COLUMNS": "200"})


def lines_with(output: str, result: str) -> list[str]:
    """Table rows whose result cell is `result` (pass, FAIL, note)."""
    return [line for line in output.splitlines() if f"│ {result} " in line]


def test_a_builtin_passes_with_a_table_of_numbers():
    res = invoke("posterior", "mean-field")
    assert res.exit_code == 0, res.output
    assert "posterior 'mean-field' (builtin)" in res.output and "all 10 checks passed" in res.output
    assert len(lines_with(res.output, "pass")) == 10 and not lines_with(res.output, "FAIL")
    assert "[k, B, D]" in res.output  # shapes are printed, not swallowed as markup


def test_a_failing_check_is_exit_1_on_its_line():
    res = invoke("prior", "tests.test_contract:OffByConstantPrior")
    assert res.exit_code == 1, res.output
    failed = lines_with(res.output, "FAIL")
    assert any("p normalised" in line and "1.05127" in line for line in failed), res.output
    assert "checks failed" in res.output


def test_a_name_that_does_not_resolve_is_exit_2():
    res = invoke("prior", "mogg")
    assert res.exit_code == 2 and "did you mean 'mog'?" in res.output
    assert invoke("posterior", "no_such_module:X").exit_code == 2
    res = invoke("likelihood", "bernoulli")
    assert res.exit_code == 2 and "'posterior' or 'prior'" in res.output
