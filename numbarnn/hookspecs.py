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
    """


@hookspec
def register_losses(register):
    """Register losses.

    ``register`` accepts one :class:`numbarnn.losses.LossSpec` per call.
    """


@hookspec
def register_optimizers(register):
    """Register optimizers.

    ``register`` accepts one :class:`numbarnn.optimizers.OptimizerSpec` per call.
    """


@hookspec
def register_samplers(register):
    """Register samplers (how the next token is drawn when generating).

    ``register`` accepts one :class:`numbarnn.samplers.SamplerSpec` per call.
    """
