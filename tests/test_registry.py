"""The registry, the plugin manager and the ``numbarnn`` CLI's ``list``/``plugins``.

Throw-away plugins are registered in fixtures and unregistered after (llm's style).
Entry-point plugins come from real distributions under ``tests/fixtures/plugins``
(``*.dist-info`` folders next to their modules): putting that folder on ``sys.path``
makes ``importlib.metadata.entry_points(group="numbarnn")`` find them, exactly as an
installed package would be found. ``NUMBARNN_PLUGINS`` then selects which ones load.
"""
import dataclasses
import importlib.metadata
import re
import subprocess
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

import pytest

import checkout
from numbarnn import cli, hookspecs, plugins
from numbarnn.cells import LSTM, RNN, CellSpec
from numbarnn.hookspecs import hookimpl
from numbarnn.plugins import (ENV_ALLOW, ENV_DENY, ENV_STRICT, PluginError, PluginLoadWarning,
                              failed_plugins, get_cell, get_registry, list_cells, list_plugins,
                              register_plugin, unregister_plugin)
from numbarnn.registry import (KINDS, PLURALS, DuplicateNameError, Registry, UnknownNameError,
                               normalize_kind)

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_PLUGINS = Path(__file__).resolve().parent / "fixtures" / "plugins"


def cell(name, description="a test cell"):
    return dataclasses.replace(RNN, name=name, description=description)


# ---- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def clean_plugin_state(monkeypatch):
    """Each test starts from the environment's defaults and leaves no plugin behind."""
    for var in (ENV_STRICT, ENV_ALLOW, ENV_DENY):
        monkeypatch.delenv(var, raising=False)
    plugins.reset()
    yield
    for name in list(plugins._in_process):
        unregister_plugin(name)
    plugins.reset()  # the next get_registry() rebuilds with the restored environment


@pytest.fixture
def add_plugin():
    """``add_plugin(obj, name)`` registers an in-process plugin until the test ends."""
    names = []

    def add(obj, name):
        names.append(register_plugin(obj, name=name))
        return name

    yield add
    for name in names:
        unregister_plugin(name)


@pytest.fixture
def fixture_entry_points(monkeypatch):
    """Make the fixture distributions discoverable; ``use("a,b")`` picks which ones load."""
    monkeypatch.syspath_prepend(str(FIXTURE_PLUGINS))

    def use(allow):
        monkeypatch.setenv(ENV_ALLOW, allow)
        plugins.reset()

    return use


class CellsPlugin:
    """A throw-away plugin registering the given specs through register_cells."""

    def __init__(self, *specs):
        self.specs = specs

    @hookimpl
    def register_cells(self, register):
        for spec in self.specs:
            register(spec)


def plugin_names():
    return [p["name"] for p in list_plugins()]


# ---- built-ins and lookups -------------------------------------------------------------------

def test_builtin_cells_are_registered_by_a_builtin_plugin():
    assert {"lstm", "rnn"} <= set(list_cells())
    assert get_cell("lstm") is LSTM and get_cell("rnn") is RNN
    row = next(p for p in list_plugins() if p["name"] == "numbarnn.cells")
    import numbarnn
    assert row["distribution"] == "numbarnn" and row["version"] == numbarnn.__version__
    assert row["source"] == "builtin" and {"lstm", "rnn"} <= set(row["cells"])


@pytest.mark.parametrize("kind", KINDS)
def test_every_registered_spec_has_the_common_fields(kind):
    registry = get_registry()
    for name in registry.list(kind):
        spec = registry.get(kind, name)
        assert spec.name == name
        assert isinstance(spec.description, str) and spec.description
        assert isinstance(spec.defaults, Mapping)


def test_unknown_name_lists_close_matches_and_every_available_name():
    registry = Registry()
    for name in ("rnn", "lstm", "gru"):
        registry.add("cell", cell(name), plugin="p")
    with pytest.raises(UnknownNameError) as info:
        registry.get("cell", "lstn")
    assert str(info.value) == ("unknown cell 'lstn'. Did you mean 'lstm'? "
                               "Available cells: gru, lstm, rnn")
    assert isinstance(info.value, LookupError)
    assert info.value.suggestions == ["lstm"] and info.value.available == ["gru", "lstm", "rnn"]

    with pytest.raises(UnknownNameError, match=r"^unknown cell 'transformer'\. Available cells: "
                                               r"gru, lstm, rnn$"):
        registry.get("cell", "transformer")
    with pytest.raises(UnknownNameError, match="No losses are registered"):
        registry.get("loss", "mse")


def test_unknown_name_through_the_public_helper():
    with pytest.raises(UnknownNameError) as info:
        get_cell("LSTN")
    message = str(info.value)
    assert "Did you mean 'lstm'?" in message
    assert message.endswith("Available cells: " + ", ".join(list_cells()))


def test_get_passes_a_spec_through_and_rejects_other_types():
    assert get_cell(LSTM) is LSTM
    unregistered = cell("not_registered")
    assert get_cell(unregistered) is unregistered
    with pytest.raises(TypeError, match="by name"):
        get_cell(42)


def test_glob_listing_is_sorted_case_insensitive_and_unions_patterns():
    registry = Registry()
    for name in ("rnn", "lstm", "gru", "lstm_peephole"):
        registry.add("cell", cell(name), plugin="p")
    assert registry.list("cell") == ["gru", "lstm", "lstm_peephole", "rnn"]
    assert registry.list("cells", "lstm*") == ["lstm", "lstm_peephole"]
    assert registry.list("cell", "LSTM") == ["lstm"]
    assert registry.list("cell", ["g*", "*nn"]) == ["gru", "rnn"]
    assert registry.list("cell", "?ru") == ["gru"]
    assert registry.list("cell", "x*") == []
    assert list_cells("ls*") == [n for n in list_cells() if n.startswith("ls")]


def test_kinds_accept_singular_and_plural_and_reject_others():
    assert [normalize_kind(PLURALS[k]) for k in KINDS] == list(KINDS)
    with pytest.raises(ValueError, match="unknown kind 'model'"):
        Registry().list("model")


# ---- registration errors ---------------------------------------------------------------------

def test_duplicate_name_names_both_plugins(add_plugin):
    with pytest.raises(DuplicateNameError) as info:
        add_plugin(CellsPlugin(cell("lstm")), "my-lstm")
    message = str(info.value)
    assert "cell 'lstm'" in message
    assert "'my-lstm'" in message and "'numbarnn.cells'" in message
    assert "distribution numbarnn" in message
    # nothing changed: the built-in stays, the offender is not loaded
    assert get_cell("lstm") is LSTM and "my-lstm" not in plugin_names()


def test_duplicate_name_reports_distributions_when_known():
    registry = Registry()
    registry.add("cell", cell("gru"), "gru", distribution="numbarnn-gru", version="1.0")
    with pytest.raises(DuplicateNameError) as info:
        registry.add("cell", cell("gru"), "fastgru", distribution="fast-gru", version="0.3")
    message = str(info.value)
    assert "'fastgru' (distribution fast-gru 0.3)" in message
    assert "'gru' (distribution numbarnn-gru 1.0)" in message
    assert info.value.existing.plugin == "gru" and info.value.new.plugin == "fastgru"


def test_duplicate_within_one_plugin(add_plugin):
    with pytest.raises(DuplicateNameError, match="registered twice by plugin 'twice'"):
        add_plugin(CellsPlugin(cell("twin"), cell("twin")), "twice")
    assert "twin" not in list_cells()


def test_wrong_spec_type_is_a_type_error_naming_the_plugin(add_plugin):
    with pytest.raises(TypeError, match=r"plugin 'dicts'.*register_cells.*CellSpec"):
        add_plugin(CellsPlugin({"name": "dict_cell"}), "dicts")
    assert "dicts" not in plugin_names()

    class CellAsLoss:
        @hookimpl
        def register_losses(self, register):
            register(cell("cell_as_loss"))

    with pytest.raises(TypeError, match=r"plugin 'cell-as-loss'.*register_losses"):
        add_plugin(CellAsLoss(), "cell-as-loss")


def test_unusable_names_are_rejected(add_plugin):
    with pytest.raises(ValueError, match="unusable name"):
        add_plugin(CellsPlugin(cell("has space")), "spacey")


def test_partial_registration_is_rolled_back_across_hooks(add_plugin):
    class Partial:
        @hookimpl
        def register_cells(self, register):
            register(cell("partial_one"))
            register(cell("partial_two"))

        @hookimpl
        def register_losses(self, register):
            raise RuntimeError("losses exploded")

    before = get_registry().entries("cell")
    with pytest.raises(RuntimeError, match="losses exploded"):
        add_plugin(Partial(), "partial")
    assert get_registry().entries("cell") == before
    assert "partial" not in plugin_names()
    assert get_plugin_manager_has("partial") is False


def get_plugin_manager_has(name):
    return plugins.get_plugin_manager().has_plugin(name)


def test_register_after_the_hook_returned_is_refused(add_plugin):
    saved = []

    class Leaky:
        @hookimpl
        def register_cells(self, register):
            saved.append(register)

    add_plugin(Leaky(), "leaky")
    with pytest.raises(RuntimeError, match="after register_cells returned"):
        saved[0](cell("late"))
    assert "late" not in list_cells()


def test_a_hook_that_returns_specs_instead_of_registering_them(add_plugin):
    class Returns:
        @hookimpl
        def register_cells(self, register):
            return [cell("returned")]

    with pytest.raises(TypeError, match="call register"):
        add_plugin(Returns(), "returns")


def test_a_misspelled_hook_is_an_error_with_a_suggestion(add_plugin):
    class Typo:
        @hookimpl
        def register_cell(self, register):
            register(cell("typo"))

    with pytest.raises(PluginError, match="did you mean 'register_cells'"):
        add_plugin(Typo(), "typo")
    assert "typo" not in plugin_names()


def test_in_process_plugins_are_listed_survive_reload_and_unregister(add_plugin):
    add_plugin(CellsPlugin(cell("toy_one"), cell("toy_two")), "toys")
    row = next(p for p in list_plugins() if p["name"] == "toys")
    assert row["cells"] == ["toy_one", "toy_two"] and row["source"] == "in-process"
    assert row["losses"] == row["optimizers"] == row["samplers"] == []
    get_registry(reload=True)
    assert {"toy_one", "toy_two"} <= set(list_cells())
    assert unregister_plugin("toys") is True
    assert not {"toy_one", "toy_two"} & set(list_cells())
    assert unregister_plugin("toys") is False


def test_registering_the_same_plugin_name_twice(add_plugin):
    add_plugin(CellsPlugin(cell("first_a")), "same")
    with pytest.raises(ValueError, match="already registered"):
        add_plugin(CellsPlugin(cell("first_b")), "same")


# ---- entry-point plugins -----------------------------------------------------------------------

def test_a_healthy_entry_point_plugin_loads_with_its_distribution(fixture_entry_points):
    fixture_entry_points("test-good")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginLoadWarning)
        assert "toy_rnn" in list_cells()
    row = next(p for p in list_plugins() if p["name"] == "test-good")
    assert (row["distribution"], row["version"]) == ("numbarnn-test-good", "1.0")
    assert row["entry_point"] == "test-good = numbarnn_test_good"
    assert row["cells"] == ["toy_rnn"] and row["source"] == "entry point"


def test_a_plugin_that_fails_to_import_is_skipped_with_a_warning(fixture_entry_points):
    fixture_entry_points("test-good,test-broken")
    with pytest.warns(PluginLoadWarning) as record:
        registry = get_registry()
    messages = [str(w.message) for w in record if issubclass(w.category, PluginLoadWarning)]
    assert len(messages) == 1
    message = messages[0]
    assert "'test-broken'" in message and "numbarnn-test-broken 0.1" in message
    assert "failed to import" in message
    assert "RuntimeError: numbarnn_test_broken is broken on purpose" in message
    assert f"{ENV_DENY}=test-broken" in message
    # the rest keeps working
    assert {"toy_rnn", "lstm", "rnn"} <= set(registry.list("cell"))
    assert "test-broken" not in plugin_names()
    assert [f["name"] for f in failed_plugins()] == ["test-broken"]
    assert failed_plugins()[0]["stage"] == "import"


def test_a_plugin_whose_hook_raises_is_skipped_and_rolled_back(fixture_entry_points):
    fixture_entry_points("test-good,test-raising")
    with pytest.warns(PluginLoadWarning, match=r"'test-raising'.*numbarnn-test-raising 0\.2.*"
                                               r"raised in register_cells.*partial_rnn") as record:
        names = list_cells()
    assert len([w for w in record if issubclass(w.category, PluginLoadWarning)]) == 1
    assert "ValueError: register_cells failed on purpose" in str(record[0].message)
    assert "partial_rnn" not in names and "toy_rnn" in names
    assert "test-raising" not in plugin_names()
    assert not plugins.get_plugin_manager().has_plugin("test-raising")
    assert failed_plugins()[0]["stage"] == "register_cells"


def test_a_duplicate_between_two_distributions_names_both(fixture_entry_points):
    fixture_entry_points("test-good,test-dup")
    with pytest.warns(PluginLoadWarning) as record:
        entry = get_registry().entry("cell", "toy_rnn")
    assert entry.plugin == "test-dup" or entry.plugin == "test-good"
    message = str(record[0].message)
    assert "DuplicateNameError" in message
    assert "'test-dup' (distribution numbarnn-test-dup 1.1)" in message
    assert "'test-good' (distribution numbarnn-test-good 1.0)" in message


@pytest.mark.parametrize("plugin, original", [("test-broken", RuntimeError),
                                              ("test-raising", ValueError)])
def test_strict_mode_raises(fixture_entry_points, monkeypatch, plugin, original):
    fixture_entry_points(plugin)
    monkeypatch.setenv(ENV_STRICT, "1")
    with pytest.raises(PluginError, match=f"'{plugin}'") as info:
        get_registry(reload=True)
    assert isinstance(info.value.__cause__, original)
    # still raising on the next use: a failed build is not cached
    with pytest.raises(PluginError):
        list_cells()
    monkeypatch.setenv(ENV_STRICT, "0")
    with pytest.warns(PluginLoadWarning):
        assert "lstm" in get_registry(reload=True).list("cell")


def test_allowlist_and_denylist(fixture_entry_points, monkeypatch):
    fixture_entry_points("test-good")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginLoadWarning)
        assert "toy_rnn" in list_cells()

    fixture_entry_points("")  # empty allowlist: no third-party plugins at all
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginLoadWarning)
        assert all(p["source"] == "builtin" for p in list_plugins())
        assert "toy_rnn" not in list_cells()

    fixture_entry_points("test-good,test-broken,test-raising")
    monkeypatch.setenv(ENV_DENY, "test-broken, test-raising")
    plugins.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginLoadWarning)
        assert "toy_rnn" in list_cells()
    assert not {"test-broken", "test-raising"} & set(plugin_names())

    monkeypatch.setenv(ENV_DENY, "test-good")
    fixture_entry_points("test-good")
    assert "toy_rnn" not in list_cells()


def test_allowlisting_a_plugin_that_is_not_installed_warns(fixture_entry_points):
    fixture_entry_points("test-good,not-installed")
    with pytest.warns(PluginLoadWarning, match="'not-installed'.*no installed plugin"):
        assert "toy_rnn" in list_cells()


def test_entry_points_without_a_distribution(monkeypatch):
    """Entry points built by hand (no ``.dist``), via a patched ``importlib.metadata``."""
    monkeypatch.syspath_prepend(str(FIXTURE_PLUGINS))
    fake = [importlib.metadata.EntryPoint(name="adhoc-broken", value="numbarnn_test_broken",
                                          group="numbarnn"),
            importlib.metadata.EntryPoint(name="adhoc-good", value="numbarnn_test_good",
                                          group="numbarnn")]
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: fake if group == "numbarnn" else [])
    with pytest.warns(PluginLoadWarning, match="'adhoc-broken' .entry point adhoc-broken = "
                                               "numbarnn_test_broken. failed to import"):
        assert "toy_rnn" in list_cells()
    row = next(p for p in list_plugins() if p["name"] == "adhoc-good")
    assert row["distribution"] is None and row["version"] is None


def test_two_distributions_with_the_same_entry_point_name(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURE_PLUGINS))
    fake = [importlib.metadata.EntryPoint(name="same", value="numbarnn_test_good", group="numbarnn"),
            importlib.metadata.EntryPoint(name="same", value="numbarnn_test_dup", group="numbarnn")]
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: fake if group == "numbarnn" else [])
    with pytest.warns(PluginLoadWarning, match="plugin name 'same' is already taken"):
        assert get_registry().entry("cell", "toy_rnn").plugin == "same"


# ---- CLI ---------------------------------------------------------------------------------------

def test_cli_list_prints_name_defaults_and_description(capsys):
    assert cli.main(["list", "cells"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert re.split(r"\s{2,}", out[0]) == ["NAME", "DEFAULTS", "DESCRIPTION"]
    rows = {line.split()[0]: line for line in out[1:]}
    assert set(rows) == set(list_cells())
    assert LSTM.description in rows["lstm"]

    assert cli.main(["list", "cell", "l*"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[1:]] == list_cells("l*")


def test_cli_list_shows_defaults(add_plugin, capsys):
    add_plugin(CellsPlugin(dataclasses.replace(cell("cfg_cell", "configurable"),
                                               defaults={"hidden": 8, "mode": "fast"})), "cfg")
    assert cli.main(["list", "cells", "cfg_*"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert re.split(r"\s{2,}", out[1]) == ["cfg_cell", "hidden=8, mode='fast'", "configurable"]


@pytest.mark.parametrize("kind", list(PLURALS.values()))
def test_cli_list_every_kind(kind, capsys):
    status = cli.main(["list", kind])
    captured = capsys.readouterr()
    if get_registry().list(kind):
        assert status == 0 and captured.out.startswith("NAME")
    else:
        assert status == 1 and f"no {kind}" in captured.err


def test_cli_list_json_and_no_match(capsys):
    import json
    assert cli.main(["list", "cells", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in data] == list_cells()
    assert data[0]["plugin"] and isinstance(data[0]["defaults"], dict)

    assert cli.main(["list", "cells", "zz*"]) == 1
    assert "no cells match 'zz*'" in capsys.readouterr().err


def test_cli_plugins_table(add_plugin, capsys):
    import numbarnn
    add_plugin(CellsPlugin(cell("cli_cell")), "cli-plugin")
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert re.split(r"\s{2,}", out[0]) == ["NAME", "DISTRIBUTION", "VERSION", "REGISTERS"]
    rows = {line.split()[0]: re.split(r"\s{2,}", line) for line in out[1:] if line}
    assert rows["numbarnn.cells"][1:3] == ["numbarnn", numbarnn.__version__]
    assert "lstm" in rows["numbarnn.cells"][3] and rows["numbarnn.cells"][3].startswith("cells: ")
    assert rows["cli-plugin"] == ["cli-plugin", "-", "-", "cells: cli_cell"]


def test_cli_plugins_reports_failures(fixture_entry_points, capsys):
    fixture_entry_points("test-good,test-broken")
    assert cli.main(["plugins"]) == 0
    captured = capsys.readouterr()
    assert "test-good" in captured.out and "numbarnn-test-good" in captured.out
    assert "Failed to load" in captured.out and "test-broken (numbarnn-test-broken 0.1)" in captured.out
    assert "numbarnn: warning: numbarnn plugin 'test-broken'" in captured.err


def test_cli_strict_failure_exits_1(fixture_entry_points, monkeypatch, capsys):
    fixture_entry_points("test-broken")
    monkeypatch.setenv(ENV_STRICT, "1")
    assert cli.main(["list", "cells"]) == 1
    assert "numbarnn: error: numbarnn plugin 'test-broken'" in capsys.readouterr().err


# `numbarnn list` alone lists every kind (issue 12, item 6; tests/test_cli_newuser.py), so it is no usage error.
@pytest.mark.parametrize("argv", [["bogus"], [], ["list", "bogus"], ["plugins", "x"],
                                  ["list", "cells", "--nope"]])
def test_cli_usage_errors_exit_2(argv, capsys):
    assert cli.main(argv) == 2
    assert "usage: numbarnn" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["list", "--help"], ["plugins", "--help"],
                                  ["--version"]])
def test_cli_help_everywhere(argv, capsys):
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "usage: numbarnn" in out or out.startswith("numbarnn ")


def test_python_dash_m_numbarnn():
    run = subprocess.run([sys.executable, "-m", "numbarnn", "list", "cells"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env=checkout.env())
    assert run.returncode == 0, run.stderr
    assert "lstm" in run.stdout
    run = subprocess.run([sys.executable, "-m", "numbarnn", "frobnicate"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env=checkout.env())
    assert run.returncode == 2 and "invalid choice" in run.stderr


# ---- docs --------------------------------------------------------------------------------------

def test_every_hookspec_is_documented_in_the_plugin_guide():
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    specs = [name for name, obj in vars(hookspecs).items() if hasattr(obj, "numbarnn_spec")]
    assert sorted(specs) == sorted(f"register_{PLURALS[k]}" for k in KINDS)
    for name in specs:
        assert f"{name}(register)" in guide, f"docs/plugins.md does not document {name}"
    for var in (ENV_STRICT, ENV_ALLOW, ENV_DENY):
        assert var in guide
    for field in dataclasses.fields(CellSpec):
        assert f"`{field.name}`" in guide, f"docs/plugins.md does not explain CellSpec.{field.name}"



def test_registering_the_same_object_twice_names_the_first_registration():
    class Once:
        @hookimpl
        def register_cells(self, register):
            register(CellSpec(name="once_rnn", description="d", gates=1, states=1, cache_width=0,
                              forward=RNN.forward, backward=RNN.backward))

    plugin = Once()
    plugins.register_plugin(plugin, name="first-name")
    try:
        with pytest.raises(ValueError, match=r"already registered as 'first-name'.*unregister_plugin\('first-name'\)"):
            plugins.register_plugin(plugin, name="second-name")
    finally:
        plugins.unregister_plugin("first-name")
