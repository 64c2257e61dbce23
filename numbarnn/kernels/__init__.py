"""Pure ``@njit`` kernels. Nothing here imports the registry.

Every kernel is a plain top-level function that writes into arrays the caller
allocates; none allocates inside a time loop. Layouts (time-major, as PyTorch's
default):

* ``xz``     (T, B, G*H)   input projection of every step, biases included
* ``states`` (S, T+1, B, H) every state of every step; ``states[0]`` is h, ``states[1]`` is c
  (LSTM); index 0 along time is the initial state
* ``cache``  (T, B, C*H)   what a cell's forward saves for its backward
* weights in PyTorch's fused form: ``W_x`` (G*H, X), ``W_h`` (G*H, H), ``b_x`` and ``b_h`` (G*H,)
"""
