"""The hooks a numbarnn plugin can implement.

Every hook is called once per plugin with a ``register`` callback; the plugin calls
``register(spec)`` once for each thing it provides. Names are global per kind: a name
that is already taken is an error naming both plugins (a silently replaced kernel would
be a wrong answer). See ``docs/plugins.md`` for the author's guide.

Example plugin module::

    import numbarnn
    from numbarnn.cells import CellSpec

    @numbarnn.hookimpl
    def register_cells(register):
        register(CellSpec(name="gru", ...))
"""
import pluggy

hookspec = pluggy.HookspecMarker("numbarnn")
hookimpl = pluggy.HookimplMarker("numbarnn")


@hookspec
def register_cells(register):
    """Register recurrent cells.

    ``register`` accepts one :class:`numbarnn.cells.CellSpec` per call: a gate count,
    a state count and the two pointwise ``@njit`` kernels that the shared time loops call.

    A plugin implementing the hook, called through a fresh pluggy ``PluginManager`` (the
    global registry is left as it is; :mod:`numbarnn.plugins` calls each plugin's hook
    the same way, with a ``register`` that adds to the registry):

    >>> import dataclasses, pluggy
    >>> from numbarnn import hookspecs
    >>> from numbarnn.cells import RNN
    >>> class MyCells:
    ...     @hookspecs.hookimpl
    ...     def register_cells(self, register):
    ...         register(dataclasses.replace(RNN, name="my_rnn", description="rnn under another name"))
    >>> pm = pluggy.PluginManager("numbarnn")
    >>> pm.add_hookspecs(hookspecs)
    >>> pm.register(MyCells(), name="my-cells")
    'my-cells'
    >>> specs = []
    >>> pm.hook.register_cells(register=specs.append)    # each plugin returns None
    []
    >>> [(spec.name, spec.gates, spec.states) for spec in specs]
    [('my_rnn', 1, 1)]
    """


@hookspec
def register_losses(register):
    """Register losses.

    ``register`` accepts one :class:`numbarnn.losses.LossSpec` per call.

    A plugin implementing the hook, called through a fresh pluggy ``PluginManager``, and
    what it registered filling a fresh :class:`~numbarnn.registry.Registry` (as
    :mod:`numbarnn.plugins` does for the global one):

    >>> import numpy as np, pluggy
    >>> from numbarnn import hookspecs
    >>> from numbarnn.losses import LossSpec, mse
    >>> from numbarnn.registry import Registry
    >>> class MyLosses:
    ...     @hookspecs.hookimpl
    ...     def register_losses(self, register):
    ...         register(LossSpec(name="half_mse", description="mse / 2",
    ...                           forward_backward=lambda *a: 0.5 * mse(*a), targets_kind="dense"))
    >>> pm = pluggy.PluginManager("numbarnn")
    >>> pm.add_hookspecs(hookspecs)
    >>> pm.register(MyLosses(), name="my-losses")
    'my-losses'
    >>> registry = Registry()
    >>> _ = pm.hook.register_losses(register=lambda spec: registry.add("loss", spec, plugin="my-losses"))
    >>> registry.list("losses"), registry.entry("loss", "half_mse").plugin
    (['half_mse'], 'my-losses')
    """


@hookspec
def register_optimizers(register):
    """Register optimizers.

    ``register`` accepts one :class:`numbarnn.optimizers.OptimizerSpec` per call.

    A plugin registering the built-in SGD under another name, called through a fresh
    pluggy ``PluginManager`` (the global registry is left as it is):

    >>> import dataclasses, numpy as np, pluggy
    >>> from numbarnn import hookspecs
    >>> from numbarnn.optimizers import BUILTIN_OPTIMIZERS
    >>> sgd = next(spec for spec in BUILTIN_OPTIMIZERS if spec.name == "sgd")
    >>> class MyOptimizers:
    ...     @hookspecs.hookimpl
    ...     def register_optimizers(self, register):
    ...         register(dataclasses.replace(sgd, name="plain_sgd"))
    >>> pm = pluggy.PluginManager("numbarnn")
    >>> pm.add_hookspecs(hookspecs)
    >>> pm.register(MyOptimizers(), name="my-optimizers")
    'my-optimizers'
    >>> specs = []
    >>> _ = pm.hook.register_optimizers(register=specs.append)
    >>> params = {"w": np.ones(2)}
    >>> specs[0].factory(params, lr=0.5).step(params, {"w": np.array([1.0, -1.0])})
    >>> specs[0].name, params["w"].tolist()
    ('plain_sgd', [0.5, 1.5])
    """


@hookspec
def register_samplers(register):
    """Register samplers (how the next token is drawn when generating).

    ``register`` accepts one :class:`numbarnn.samplers.SamplerSpec` per call.

    A plugin with a sampler that always picks index 0, called through a fresh pluggy
    ``PluginManager`` (the global registry is left as it is):

    >>> import numpy as np, pluggy
    >>> from numbarnn import hookspecs
    >>> from numbarnn.samplers import Sampler, SamplerSpec
    >>> class FirstSampler(Sampler):
    ...     name = "first"
    ...     def distribution(self, logits_row):
    ...         probs = np.zeros(len(logits_row)); probs[0] = 1.0
    ...         return probs
    >>> class MySamplers:
    ...     @hookspecs.hookimpl
    ...     def register_samplers(self, register):
    ...         register(SamplerSpec(name="first", description="always index 0", defaults={},
    ...                              factory=FirstSampler))
    >>> pm = pluggy.PluginManager("numbarnn")
    >>> pm.add_hookspecs(hookspecs)
    >>> pm.register(MySamplers(), name="my-samplers")
    'my-samplers'
    >>> specs = []
    >>> _ = pm.hook.register_samplers(register=specs.append)
    >>> specs[0].name, specs[0].factory().choose(np.array([0.0, 5.0]), np.random.default_rng(0))
    ('first', 0)
    """


@hookspec
def register_schedules(register):
    """Register learning-rate schedules.

    ``register`` accepts one :class:`numbarnn.schedules.ScheduleSpec` per call.

    A plugin with a schedule that halves the rate every 100 steps, called through a fresh
    pluggy ``PluginManager`` (the global registry is left as it is):

    >>> import pluggy
    >>> from numbarnn import hookspecs
    >>> from numbarnn.schedules import Schedule, ScheduleSpec
    >>> class Halving(Schedule):
    ...     name = "halving"
    ...     def lr(self, step, base_lr):
    ...         return base_lr * 0.5 ** (step // 100)
    >>> class MySchedules:
    ...     @hookspecs.hookimpl
    ...     def register_schedules(self, register):
    ...         register(ScheduleSpec(name="halving", description="halve every 100 steps", defaults={},
    ...                               factory=Halving))
    >>> pm = pluggy.PluginManager("numbarnn")
    >>> pm.add_hookspecs(hookspecs)
    >>> pm.register(MySchedules(), name="my-schedules")
    'my-schedules'
    >>> specs = []
    >>> _ = pm.hook.register_schedules(register=specs.append)
    >>> specs[0].name, specs[0].factory().lr(250, 0.1)
    ('halving', 0.025)
    """
