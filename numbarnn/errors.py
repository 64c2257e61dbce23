"""Errors of training that several layers raise or catch (the trainer, the backends, fit)."""


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradients stopped being finite; the weights were not updated.

    >>> issubclass(NonFiniteLossError, FloatingPointError)
    True
    """
