"""Name resolution (vae_core.registry): built-ins, entry points of an installed distribution (a fake one put on
sys.path), 'module.path:ClassName'; every problem is one line naming the key and the cause, before anything runs;
the row says where each family came from."""

from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli import app
from vae_core import POSTERIORS, PRIORS, ConfigError, build_vae
from vae_core import registry
from vae_core.posteriors import MeanFieldPosterior
from vae_core.priors import StandardNormalPrior

REPO = Path(__file__).resolve().parents[1]

PLUGIN = '''
from vae_core.posteriors import MeanFieldPosterior
from vae_core.priors import StandardNormalPrior


class Wide(MeanFieldPosterior):
    """mean-field under another name"""


class NotAPosterior:
    @classmethod
    def from_config(cls, cfg):
        return cls()


class Picky(MeanFieldPosterior):
    @classmethod
    def from_config(cls, cfg):
        raise ValueError(f"needs latent_dim >= 4, got {cfg.latent_dim}\\nsecond line")


class Unit(StandardNormalPrior):
    """the standard prior under another name"""
'''


def fake_distribution(root: Path, entry_points: str, name: str = "fakeplugin", version: str = "1.2.3") -> Path:
    """An installed distribution as importlib.metadata sees it: a module and a .dist-info folder under root."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "fake_family.py").write_text(PLUGIN)
    (root / "broken_family.py").write_text("raise RuntimeError('cannot find libfoo.so\\nmore')\n")
    info = root / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    return root


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """A fake installed plugin on sys.path; the registry's caches are cleared before and after."""
    root = fake_distribution(tmp_path / "site", """
        [vaebench.posteriors]
        wide = fake_family:Wide
        not-a-posterior = fake_family:NotAPosterior
        picky = fake_family:Picky
        broken = broken_family:Thing
        [vaebench.priors]
        unit = fake_family:Unit
        """)
    monkeypatch.syspath_prepend(str(root))
    registry.clear_cache()
    yield root
    for module in ("fake_family", "broken_family"):
        sys.modules.pop(module, None)
    registry.clear_cache()


def message(raw: dict) -> str:
    with pytest.raises(ConfigError) as err:
        build_vae({"data_dim": 4, "hidden": [4], **raw})
    text = str(err.value)
    assert "\n" not in text, text
    return text


def test_builtins_resolve_with_origin_builtin():
    for kind, table in (("posterior", POSTERIORS), ("prior", PRIORS)):
        for name, cls in table.items():
            resolved = registry.resolve(kind, name)
            assert resolved.obj is cls and resolved.origin == "builtin"
    assert registry.names("posterior")[:len(POSTERIORS)] == list(POSTERIORS)


def test_entry_points_resolve_and_record_the_distribution(plugin_path):
    assert {"wide", "picky"} <= set(registry.names("posterior")) and "unit" in registry.names("prior")
    model = build_vae({"data_dim": 4, "hidden": [4], "posterior": "wide", "prior": "unit"})
    assert type(model.posterior).__name__ == "Wide" and isinstance(model.posterior, MeanFieldPosterior)
    assert isinstance(model.prior, StandardNormalPrior)
    assert registry.origins(model.config) == {"posterior_origin": "fakeplugin==1.2.3",
                                              "prior_origin": "fakeplugin==1.2.3"}


def test_dotted_path_resolves_with_itself_as_origin(plugin_path):
    model = build_vae({"data_dim": 4, "hidden": [4], "posterior": "fake_family:Wide"})
    assert type(model.posterior).__name__ == "Wide"
    assert registry.origins(model.config)["posterior_origin"] == "fake_family:Wide"
    assert registry.resolve("posterior", "vae_core.posteriors:IAFPosterior").obj is POSTERIORS["iaf"]


def test_unknown_name_lists_the_names_and_suggests_the_closest(plugin_path):
    text = message({"posterior": "wid"})
    assert text.startswith("'model.posterior' must be one of 'mean-field', 'iaf', 'planar'")
    assert "'wide'" in text and "'module.path:ClassName'" in text and "did you mean 'wide'?" in text
    assert "did you mean 'mog'?" in message({"prior": "mogg"})


def test_a_module_that_does_not_import_is_its_first_line(plugin_path):
    assert message({"posterior": "broken"}) == ("'model.posterior' = 'broken': module 'broken_family' "
                                                "(fakeplugin==1.2.3) does not import: RuntimeError: cannot find libfoo.so")
    assert message({"prior": "no_such_module:Prior"}) == (
        "'model.prior' = 'no_such_module:Prior': module 'no_such_module' (no_such_module:Prior) does not import: "
        "ModuleNotFoundError: No module named 'no_such_module'")
    assert "has no attribute 'Nope'" in message({"prior": "fake_family:Nope"})


def test_a_class_without_the_interface_is_refused(plugin_path):
    assert message({"posterior": "not-a-posterior"}) == (
        "'model.posterior' = 'not-a-posterior' (fakeplugin==1.2.3): NotAPosterior does not implement the posterior "
        "interface: no from_noise")
    assert "Wide does not implement the prior interface: no log_prob, sample" in message({"prior": "fake_family:Wide"})
    assert "is a module, not a class" in message({"prior": "vae_core.priors.mixture:math"})


def test_from_config_rejecting_the_config_is_one_line(plugin_path):
    assert message({"posterior": "picky"}) == ("'model.posterior' = 'picky' (fakeplugin==1.2.3): from_config rejects "
                                               "the config: ValueError: needs latent_dim >= 4, got 32")


def test_a_plugin_that_shadows_a_builtin_is_refused(tmp_path, monkeypatch):
    root = fake_distribution(tmp_path / "site", "[vaebench.priors]\nmog = fake_family:Unit\n", name="shadow")
    monkeypatch.syspath_prepend(str(root))
    registry.clear_cache()
    try:
        assert message({"prior": "mog"}) == ("'model.prior' = 'mog': the plugin from shadow==1.2.3 shadows the "
                                             "built-in prior 'mog'; the plugin must use another name")
    finally:
        sys.modules.pop("fake_family", None)
        registry.clear_cache()


def test_dataset_plugins_resolve_from_their_group(tmp_path, monkeypatch):
    root = fake_distribution(tmp_path / "site", "[vaebench.datasets]\ntoy = fake_family:Unit\n", name="toydata")
    monkeypatch.syspath_prepend(str(root))
    registry.clear_cache()
    try:
        resolved = registry.resolve("dataset", "toy")
        assert resolved.obj.__name__ == "Unit" and resolved.origin == "toydata==1.2.3"
        with pytest.raises(ConfigError, match="'data.dataset' must be one of"):
            registry.resolve("dataset", "nope")
    finally:
        sys.modules.pop("fake_family", None)
        registry.clear_cache()


def test_a_bad_family_in_a_grid_is_exit_2_and_nothing_runs(plugin_path, tmp_path):
    grid = tmp_path / "g.toml"
    results = tmp_path / "results"
    for family, expected in (('posterior = "picky"', "from_config rejects the config"),
                             ('prior = "broken_family:X"', "does not import: RuntimeError: cannot find libfoo.so")):
        grid.write_text(f"[model]\n{family}\n")
        res = CliRunner().invoke(app, ["run", "--grid", str(grid), "--results", str(results)])
        assert res.exit_code == 2, res.output
        assert expected in " ".join(res.output.split()) and "g.toml" in res.output
        assert not results.exists()


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at any level (TYPE_CHECKING blocks and functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_config_and_executor_import_cycles_are_gone():
    assert not {m for m in imported_modules(REPO / "vae_core" / "config.py") if m.startswith("vae_core")}
    for path in (REPO / "bench" / "executors").glob("*.py"):
        assert "bench.runner" not in imported_modules(path), path.name
