"""numbarnn: recurrent networks from scratch, fast, on Numba."""
from .cells import LSTM, RNN, CellSpec
from .models import RecurrentModel

__version__ = "0.1.0"

__all__ = ["CellSpec", "RNN", "LSTM", "RecurrentModel", "__version__"]
