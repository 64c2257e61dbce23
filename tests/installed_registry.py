"""The registry as an installed environment builds it, as a fixture for the plugin packages'
tests: ``plugins/*/tests`` put numbarnn's ``tests/`` folder on ``sys.path`` and import it
(``from installed_registry import entry_point_registry``); being autouse, it then applies to
every test of the importing module."""
import pytest

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
