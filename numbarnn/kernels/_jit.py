"""numbarnn's one ``@njit`` decorator: the options its CPU kernels share, set in one place.

``@jit`` is ``numba.njit(cache=True)``: compiled at the first call, the machine code cached
on disk (in a directory numbarnn checks first, see :mod:`numbarnn.trust`), so a second
process starts warm. A kernel that needs more says so and the rest stays as here:

* ``@jit(error_model="numpy")``: the optimizers, whose divisions are then plain IEEE ones,
  without the zero-divisor test that keeps their loops from being vectorised;
* ``@jit(inline="always")``: small helpers that Numba inlines into their callers. They are
  never called on their own, so they are not cached on their own either (``cache=False``
  unless asked for).

fastmath is never on, and ``jit`` refuses it: losses, optimizers and the activations feed
the NaN checks, and fastmath lets the compiler assume that NaN and inf never occur.

Every kernel module uses it; what that gives each kind of kernel:

>>> from numbarnn.kernels import activations, losses, optim
>>> [type(k._cache).__name__ for k in (losses.softmax_cross_entropy, optim.adam_update, activations._sigmoid64)]
['FunctionCache', 'FunctionCache', 'NullCache']
>>> optim.adam_update.targetoptions["error_model"], activations._sigmoid64.targetoptions["inline"]
('numpy', 'always')
>>> from numbarnn.kernels._jit import jit
>>> @jit(inline="always")  # not cached, so it may live in a notebook or a doctest too
... def twice(x):
...     return 2 * x
>>> twice(3)
6
>>> jit(fastmath=True)
Traceback (most recent call last):
    ...
TypeError: numbarnn's kernels never use fastmath: losses, optimizers and activations feed NaN checks
"""
from numba import njit


def jit(fn=None, *, cache=None, **options):
    """``numba.njit`` with numbarnn's defaults: ``cache=True`` (False for ``inline="always"``),
    never fastmath; other options (``error_model``, ``inline``, ...) pass through.

    Used bare (``@jit``) or with options (``@jit(error_model="numpy")``), like ``njit``.
    """
    if "fastmath" in options:
        raise TypeError("numbarnn's kernels never use fastmath: losses, optimizers and activations feed NaN checks")
    if cache is None:
        cache = options.get("inline", "never") != "always"
    decorate = njit(cache=cache, **options)
    return decorate if fn is None else decorate(fn)
