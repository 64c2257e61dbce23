"""The registry as an installed environment builds it, as a fixture for the plugin packages'
tests: ``plugins/*/tests`` put numbarnn's ``tests/`` folder on ``sys.path`` and import it
(``from installed_registry import entry_point_registry``); being autouse, it then applies to
every test of the importing module. :func:`assert_registered_by_entry_point` is the check each
of those packages makes of its own registration."""
import pytest

import numbarnn
from numbarnn import plugins


@pytest.fixture(scope="module", autouse=True)
def entry_point_registry():
    """The registry as an installed environment builds it: every entry point, no switches."""
    with pytest.MonkeyPatch.context() as mp:
        for var in (plugins.ENV_STRICT, plugins.ENV_ALLOW, plugins.ENV_DENY):
            mp.delenv(var, raising=False)
        mp.setenv(plugins.ENV_STRICT, "1")  # a loading problem is an error here, not a warning
        plugins.reset()
        yield
    plugins.reset()


def assert_registered_by_entry_point(spec, distribution: str, module) -> None:
    """``spec`` is the cell registered under its name, by the entry point ``name = module``
    of the installed ``distribution`` (at the module's ``__version__``), as its only cell, and
    no plugin of that name failed to load."""
    name = spec.name
    assert numbarnn.get_cell(name) is spec
    row = next(p for p in numbarnn.list_plugins() if p["name"] == name)
    assert (row["distribution"], row["version"]) == (distribution, module.__version__)
    assert (row["source"], row["entry_point"]) == ("entry point", f"{name} = {module.__name__}")
    assert row["cells"] == [name]
    assert not any(f["name"] == name for f in plugins.failed_plugins())
