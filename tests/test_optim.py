"""Optimizer kernels and classes against NumPy references and torch.optim; gradient clipping."""
import io
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from numbarnn import get_optimizer
from numbarnn.kernels import optim as k
from numbarnn.optimizers import (BUILTIN_OPTIMIZERS, Optimizer, OptimizerSpec, UnknownOptionError,
                                 clip_flat, clip_gradients)

DTYPES = (np.float32, np.float64)
FAST = settings(max_examples=25, deadline=None)


# ---- plain NumPy references -------------------------------------------------------------------

def ref_sgd(p, g, lr):
    return p - lr * g


def ref_momentum(p, g, v, lr, momentum, nesterov):
    v = momentum * v + g
    step = g + momentum * v if nesterov else v
    return p - lr * step, v


def ref_adagrad(p, g, mem, lr, eps):
    # min-char-rnn: mem += dparam * dparam; param += -learning_rate * dparam / np.sqrt(mem + 1e-8)
    mem = mem + g * g
    return p - lr * g / np.sqrt(mem + eps), mem


def ref_rmsprop(p, g, v, lr, alpha, eps):
    v = alpha * v + (1 - alpha) * g * g
    return p - lr * g / (np.sqrt(v) + eps), v


def ref_adam(p, g, m, v, lr, b1, b2, eps, t):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat = m / (1 - b1 ** t)
    v_hat = v / (1 - b2 ** t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def tol(dtype):
    return dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)


def arrays(seed, n, dtype, count):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(dtype) for _ in range(count)]


sizes = st.integers(min_value=1, max_value=40)
seeds = st.integers(min_value=0, max_value=2**32 - 1)
dtypes = st.sampled_from(DTYPES)


# ---- kernels, one step, against the references ------------------------------------------------

@FAST
@given(n=sizes, seed=seeds, dtype=dtypes)
def test_sgd_kernel(n, seed, dtype):
    p, g = arrays(seed, n, dtype, 2)
    expected = ref_sgd(p.astype(np.float64), g.astype(np.float64), 0.3)
    k.sgd_update(p, g, 0.3)
    assert p.dtype == dtype
    np.testing.assert_allclose(p, expected, **tol(dtype))


@FAST
@given(n=sizes, seed=seeds, dtype=dtypes, nesterov=st.booleans())
def test_momentum_kernel(n, seed, dtype, nesterov):
    p, g, v = arrays(seed, n, dtype, 3)
    ep, ev = ref_momentum(*(a.astype(np.float64) for a in (p, g, v)), 0.1, 0.9, nesterov)
    k.momentum_update(p, g, v, 0.1, 0.9, nesterov)
    np.testing.assert_allclose(p, ep, **tol(dtype))
    np.testing.assert_allclose(v, ev, **tol(dtype))


@FAST
@given(n=sizes, seed=seeds, dtype=dtypes)
def test_adagrad_kernel(n, seed, dtype):
    p, g, mem = arrays(seed, n, dtype, 3)
    mem = np.abs(mem)
    ep, emem = ref_adagrad(*(a.astype(np.float64) for a in (p, g, mem)), 0.1, 1e-8)
    k.adagrad_update(p, g, mem, 0.1, 1e-8)
    np.testing.assert_allclose(p, ep, **tol(dtype))
    np.testing.assert_allclose(mem, emem, **tol(dtype))


@FAST
@given(n=sizes, seed=seeds, dtype=dtypes)
def test_rmsprop_kernel(n, seed, dtype):
    p, g, v = arrays(seed, n, dtype, 3)
    v = np.abs(v)
    ep, ev = ref_rmsprop(*(a.astype(np.float64) for a in (p, g, v)), 0.01, 0.99, 1e-8)
    k.rmsprop_update(p, g, v, 0.01, 0.99, 1e-8)
    np.testing.assert_allclose(p, ep, **tol(dtype))
    np.testing.assert_allclose(v, ev, **tol(dtype))


@FAST
@given(n=sizes, seed=seeds, dtype=dtypes, step=st.integers(1, 50))
def test_adam_kernel(n, seed, dtype, step):
    p, g, m, v = arrays(seed, n, dtype, 4)
    v = np.abs(v)
    ep, em, ev = ref_adam(*(a.astype(np.float64) for a in (p, g, m, v)), 0.01, 0.9, 0.999, 1e-8, step)
    k.adam_update(p, g, m, v, 0.01, 0.9, 0.999, 1e-8, step)
    np.testing.assert_allclose(p, ep, **tol(dtype))
    np.testing.assert_allclose(m, em, **tol(dtype))
    np.testing.assert_allclose(v, ev, **tol(dtype))


@FAST
@given(n=sizes, seed=seeds, dtype=dtypes, max_value=st.floats(0.01, 3.0))
def test_clip_by_value_kernel(n, seed, dtype, max_value):
    (g,) = arrays(seed, n, dtype, 1)
    expected = np.clip(g, -dtype(max_value), dtype(max_value))
    k.clip_by_value(g, max_value)
    np.testing.assert_array_equal(g, expected)


def test_clip_by_value_keeps_nan():
    g = np.array([np.nan, 10.0, -10.0, 0.5])
    k.clip_by_value(g, 1.0)
    np.testing.assert_array_equal(g, [np.nan, 1.0, -1.0, 0.5])


@FAST
@given(n=st.integers(0, 40), seed=seeds, dtype=dtypes)
def test_sum_of_squares_and_scale_kernels(n, seed, dtype):
    (g,) = arrays(seed, n, dtype, 1)
    s = k.sum_of_squares(g)
    assert isinstance(s, float)
    np.testing.assert_allclose(s, np.sum(g.astype(np.float64) ** 2), rtol=1e-12)
    expected = (g * dtype(0.25)).astype(dtype)
    k.scale(g, 0.25)
    np.testing.assert_array_equal(g, expected)  # 0.25 is exact in both dtypes


def test_kernels_callable_from_user_njit_code():
    @njit
    def two_steps(p, g, m, v):
        k.adam_update(p, g, m, v, 0.1, 0.9, 0.999, 1e-8, 1)
        k.adam_update(p, g, m, v, 0.1, 0.9, 0.999, 1e-8, 2)
        return k.sum_of_squares(p)

    p, g = np.ones(4), np.full(4, 2.0)
    s = two_steps(p, g, np.zeros(4), np.zeros(4))
    np.testing.assert_allclose(p, 0.8, rtol=1e-7)
    np.testing.assert_allclose(s, 4 * 0.64, rtol=1e-6)


def test_no_fastmath_in_optimizer_kernels():
    for name in ("sgd_update", "momentum_update", "adagrad_update", "rmsprop_update", "adam_update",
                 "clip_by_value", "sum_of_squares", "scale"):
        assert not getattr(k, name).targetoptions.get("fastmath"), name


# ---- optimizer trajectories against torch.optim -----------------------------------------------

SHAPES = {"W": (4, 3), "b": (4,), "s": (1,)}


def _trajectory_setup(seed=0, steps=6):
    rng = np.random.default_rng(seed)
    params = {name: rng.standard_normal(shape) for name, shape in SHAPES.items()}
    grads = [{name: rng.standard_normal(shape) * (1 + t) for name, shape in SHAPES.items()}
             for t in range(steps)]
    return params, grads


TORCH_CASES = [
    ("sgd", {"lr": 0.05}, "SGD", {"lr": 0.05}),
    ("momentum", {"lr": 0.05, "momentum": 0.9}, "SGD", {"lr": 0.05, "momentum": 0.9}),
    ("momentum", {"lr": 0.05, "momentum": 0.8, "nesterov": True}, "SGD",
     {"lr": 0.05, "momentum": 0.8, "nesterov": True}),
    ("rmsprop", {"lr": 0.01}, "RMSprop", {"lr": 0.01}),
    ("rmsprop", {"lr": 0.02, "alpha": 0.9, "eps": 1e-6}, "RMSprop", {"lr": 0.02, "alpha": 0.9, "eps": 1e-6}),
    ("adam", {"lr": 0.01}, "Adam", {"lr": 0.01}),
    ("adam", {"lr": 0.03, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6}, "Adam",
     {"lr": 0.03, "betas": (0.8, 0.99), "eps": 1e-6}),
    # weight decay: PyTorch's L2 penalty added to the gradient, and AdamW's decoupled decay
    ("sgd", {"lr": 0.05, "weight_decay": 0.1}, "SGD", {"lr": 0.05, "weight_decay": 0.1}),
    ("momentum", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}, "SGD",
     {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
    ("momentum", {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.3}, "SGD",
     {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.3}),
    ("rmsprop", {"lr": 0.01, "weight_decay": 0.05}, "RMSprop", {"lr": 0.01, "weight_decay": 0.05}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1}, "Adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("adamw", {"lr": 0.01}, "AdamW", {"lr": 0.01}),  # both default to weight_decay 0.01
    ("adamw", {"lr": 0.03, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.2}, "AdamW",
     {"lr": 0.03, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.2}),
]


@pytest.mark.torch
@pytest.mark.parametrize("name,options,torch_name,torch_options", TORCH_CASES)
def test_trajectory_matches_torch(name, options, torch_name, torch_options):
    torch = pytest.importorskip("torch")
    params, grads = _trajectory_setup()
    tparams = {n: torch.tensor(p.copy(), dtype=torch.float64, requires_grad=True) for n, p in params.items()}
    topt = getattr(torch.optim, torch_name)(list(tparams.values()), foreach=False, **torch_options)
    opt = get_optimizer(name).factory(params, **options)
    for g in grads:
        for n, tp in tparams.items():
            tp.grad = torch.tensor(g[n])
        topt.step()
        opt.step(params, g)
        for n, tp in tparams.items():
            np.testing.assert_allclose(params[n], tp.detach().numpy(), rtol=1e-10, atol=1e-14)


def test_adagrad_with_weight_decay_adds_the_l2_gradient():
    params, grads = _trajectory_setup()
    expected = {n: p.copy() for n, p in params.items()}
    mem = {n: np.zeros_like(p) for n, p in params.items()}
    opt = get_optimizer("adagrad").factory(params, weight_decay=0.25)
    for g in grads:
        for n in expected:
            d = g[n] + 0.25 * expected[n]
            mem[n] += d * d
            expected[n] += -0.1 * d / np.sqrt(mem[n] + 1e-8)
        opt.step(params, g)
        for n in params:
            np.testing.assert_allclose(params[n], expected[n], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_weight_decay_is_the_plain_update(dtype):
    # No 0 * p is added: an infinite weight stays infinite (0 * inf would be NaN) ...
    for name in ("sgd", "momentum", "adagrad", "rmsprop", "adam"):
        params = {"w": np.array([np.inf, 1.0], dtype)}
        get_optimizer(name).factory(params, weight_decay=0.0).step(params, {"w": np.array([1.0, 1.0], dtype)})
        assert params["w"][0] == np.inf and np.isfinite(params["w"][1]), name
    # ... and the gradient keeps its dtype: float32 squares are rounded as float32 before the sum
    rng = np.random.default_rng(5)
    p, g = rng.normal(size=2000).astype(dtype), rng.normal(size=2000).astype(dtype)
    memory = np.abs(rng.normal(size=2000)).astype(dtype)
    expected = memory + g * g  # NumPy: g * g rounded to the dtype, then the sum
    k.adagrad_update(p, g, memory, 0.1, 1e-8, 0.0)
    np.testing.assert_array_equal(memory, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_weight_decay_kernels_against_the_l2_reference(dtype):
    rng = np.random.default_rng(3)
    p, g, s1, s2 = (rng.normal(size=9).astype(dtype) for _ in range(4))
    s1, s2 = np.abs(s1), np.abs(s2)
    wd = 0.3
    d = (g + dtype(wd) * p).astype(dtype)  # PyTorch's grad.add(param, alpha=wd), in the gradient's dtype
    cases = [
        (lambda: k.sgd_update(p1, g, 0.1, wd), lambda: (ref_sgd(p, d, 0.1),)),
        (lambda: k.momentum_update(p1, g, a1, 0.1, 0.9, True, wd), lambda: ref_momentum(p, d, s1, 0.1, 0.9, True)),
        (lambda: k.adagrad_update(p1, g, a1, 0.1, 1e-8, wd), lambda: ref_adagrad(p, d, s1, 0.1, 1e-8)),
        (lambda: k.rmsprop_update(p1, g, a1, 0.01, 0.99, 1e-8, wd), lambda: ref_rmsprop(p, d, s1, 0.01, 0.99, 1e-8)),
        (lambda: k.adam_update(p1, g, a1, a2, 0.01, 0.9, 0.999, 1e-8, 3, wd),
         lambda: ref_adam(p, d, s1, s2, 0.01, 0.9, 0.999, 1e-8, 3)),
        (lambda: k.adam_update(p1, g, a1, a2, 0.01, 0.9, 0.999, 1e-8, 3, wd, True),
         lambda: ref_adam(p * (1 - 0.01 * wd), g, s1, s2, 0.01, 0.9, 0.999, 1e-8, 3)),
    ]
    for update, reference in cases:
        p1, a1, a2 = p.copy(), s1.copy(), s2.copy()
        update()
        expected = reference()
        for actual, want in zip((p1, a1, a2), expected):
            np.testing.assert_allclose(actual, want, **tol(dtype))


def test_adagrad_trajectory_matches_min_char_rnn():
    params, grads = _trajectory_setup()
    expected = {n: p.copy() for n, p in params.items()}
    mem = {n: np.zeros_like(p) for n, p in params.items()}
    opt = get_optimizer("adagrad").factory(params)
    for g in grads:
        for n in expected:  # min-char-rnn's loop, verbatim apart from names
            mem[n] += g[n] * g[n]
            expected[n] += -0.1 * g[n] / np.sqrt(mem[n] + 1e-8)
        opt.step(params, g)
        for n in params:
            np.testing.assert_allclose(params[n], expected[n], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("spec", BUILTIN_OPTIMIZERS, ids=lambda s: s.name)
def test_float32_parameters_stay_float32_and_follow_float64(spec):
    params64, grads = _trajectory_setup()
    params32 = {n: p.astype(np.float32) for n, p in params64.items()}
    opt64 = spec.factory(params64)
    opt32 = spec.factory(params32)
    for g in grads:
        opt64.step(params64, g)
        opt32.step(params32, {n: a.astype(np.float32) for n, a in g.items()})
    for n in params32:
        assert params32[n].dtype == np.float32
        assert all(a.dtype == np.float32 for a in (v for slot in opt32.state.values() for v in slot.values()))
        np.testing.assert_allclose(params32[n], params64[n], rtol=1e-4, atol=1e-5)


# ---- the registry entries ------------------------------------------------------------------

def test_builtin_names_and_default_learning_rates():
    assert [s.name for s in BUILTIN_OPTIMIZERS] == ["sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw"]
    lrs = {s.name: s.defaults["lr"] for s in BUILTIN_OPTIMIZERS}
    assert lrs == {"sgd": 0.01, "momentum": 0.01, "adagrad": 0.1, "rmsprop": 0.001, "adam": 0.001, "adamw": 0.001}
    decay = {s.name: s.defaults["weight_decay"] for s in BUILTIN_OPTIMIZERS}
    assert decay == {"sgd": 0.0, "momentum": 0.0, "adagrad": 0.0, "rmsprop": 0.0, "adam": 0.0, "adamw": 0.01}
    momentum = get_optimizer("momentum")
    assert momentum.defaults["momentum"] == 0.9 and momentum.defaults["nesterov"] is False
    for spec in BUILTIN_OPTIMIZERS:
        assert isinstance(spec, OptimizerSpec)
        with pytest.raises(Exception):
            spec.name = "other"  # frozen


@pytest.mark.parametrize("spec", BUILTIN_OPTIMIZERS, ids=lambda s: s.name)
def test_defaults_are_the_options(spec):
    opt = spec.factory({"w": np.zeros(2)})
    assert isinstance(opt, Optimizer)
    assert opt.options == dict(spec.defaults)


@pytest.mark.parametrize("spec", BUILTIN_OPTIMIZERS, ids=lambda s: s.name)
def test_unknown_option_names_it_and_lists_the_accepted_ones(spec):
    with pytest.raises(UnknownOptionError) as info:
        spec.factory({"w": np.zeros(2)}, lr=0.1, betaa=0.5)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    message = str(info.value)
    assert "'betaa'" in message and spec.name in message
    for option in spec.defaults:
        assert option in message


def test_unknown_option_suggests_a_close_match():
    with pytest.raises(TypeError, match="did you mean 'momentum'"):
        get_optimizer("momentum").factory({"w": np.zeros(2)}, momentun=0.5)


@pytest.mark.parametrize("name,options,needle", [
    ("sgd", {"lr": 0.0}, "'lr' must be in (0, inf], got 0.0"),
    ("sgd", {"lr": -1}, "'lr' must be in (0, inf], got -1"),
    ("sgd", {"lr": float("nan")}, "'lr'"),
    ("sgd", {"lr": "0.1"}, "'lr' must be a number"),
    ("momentum", {"momentum": 1.5}, "'momentum' must be in [0, 1), got 1.5"),
    ("momentum", {"nesterov": "yes"}, "'nesterov' must be True or False, got 'yes'"),
    ("momentum", {"momentum": 0.0, "nesterov": True}, "'nesterov' needs momentum > 0"),
    ("adagrad", {"eps": 0.0}, "'eps' must be in (0, inf], got 0.0"),
    ("rmsprop", {"alpha": 1.0}, "'alpha' must be in [0, 1), got 1.0"),
    ("adam", {"beta2": -0.1}, "'beta2' must be in [0, 1), got -0.1"),
    ("adam", {"eps": True}, "'eps' must be a number"),
    ("sgd", {"weight_decay": -0.1}, "'weight_decay' must be in [0, inf), got -0.1"),
    ("adamw", {"weight_decay": float("inf")}, "'weight_decay' must be in [0, inf), got inf"),
    ("rmsprop", {"weight_decay": "0.1"}, "'weight_decay' must be a number"),
])
def test_bad_option_values_raise_value_error(name, options, needle):
    with pytest.raises(ValueError) as info:
        get_optimizer(name).factory({"w": np.zeros(2)}, **options)
    assert needle in str(info.value)


def test_step_checks_everything_before_writing():
    params = {"a": np.ones(3), "b": np.ones(2)}
    opt = get_optimizer("sgd").factory(params)
    with pytest.raises(ValueError, match="keys of params"):
        opt.step(params, {"a": np.ones(3)})
    with pytest.raises(ValueError, match="gradient 'b' has shape"):
        opt.step(params, {"a": np.ones(3), "b": np.ones(3)})
    with pytest.raises(ValueError, match="unexpected \\['c'\\]"):
        opt.step({**params, "c": np.ones(1)}, {"a": np.ones(3), "b": np.ones(2)})
    with pytest.raises(ValueError, match="C-contiguous"):
        opt.step({"a": np.ones(6)[::2], "b": params["b"]}, {"a": np.ones(3), "b": np.ones(2)})
    np.testing.assert_array_equal(params["a"], 1.0)
    np.testing.assert_array_equal(params["b"], 1.0)
    assert opt.step_count == 0


def test_lr_setter_validates():
    opt = get_optimizer("adam").factory({"w": np.zeros(2)})
    opt.lr = 0.5
    assert opt.options["lr"] == 0.5
    with pytest.raises(ValueError, match="'lr'"):
        opt.lr = -1.0


# ---- checkpoints: state_dict round trip continues bit-exactly ---------------------------------

def _npz_round_trip(state):
    # What a checkpoint does: arrays and numbers only, loaded back without pickle.
    buffer = io.BytesIO()
    np.savez(buffer, **state)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as f:
        return {key: f[key] for key in f.files}


@pytest.mark.parametrize("spec", BUILTIN_OPTIMIZERS, ids=lambda s: s.name)
@pytest.mark.parametrize("through_npz", [False, True])
def test_state_dict_round_trip_continues_bit_exactly(spec, through_npz):
    options = {"nesterov": True} if spec.name == "momentum" else {}
    params, grads = _trajectory_setup(seed=1, steps=8)
    opt = spec.factory(params, lr=0.02, **options)
    for g in grads[:4]:
        opt.step(params, g)
    state = opt.state_dict()
    for value in state.values():
        assert isinstance(value, (np.ndarray, int, float, bool))
    saved_params = {n: p.copy() for n, p in params.items()}
    for g in grads[4:]:
        opt.step(params, g)

    resumed_params = saved_params
    resumed = spec.factory(resumed_params)  # default options: load_state_dict restores them
    resumed.load_state_dict(_npz_round_trip(state) if through_npz else state)
    assert resumed.options == opt.options and resumed.step_count == 4
    for g in grads[4:]:
        resumed.step(resumed_params, g)
    for n in params:
        np.testing.assert_array_equal(resumed_params[n], params[n])
    new_state = resumed.state_dict()
    for key, value in opt.state_dict().items():
        np.testing.assert_array_equal(new_state[key], value)


def test_state_dict_is_a_copy():
    params = {"w": np.ones(3)}
    opt = get_optimizer("adam").factory(params)
    state = opt.state_dict()
    opt.step(params, {"w": np.ones(3)})
    np.testing.assert_array_equal(state["exp_avg.w"], 0.0)
    assert state["step"] == 0 and opt.state_dict()["step"] == 1


def test_load_state_dict_rejects_mismatches_and_changes_nothing():
    params = {"w": np.ones(3)}
    opt = get_optimizer("momentum").factory(params)
    good = opt.state_dict()
    with pytest.raises(ValueError, match="missing keys \\['velocity.w'\\]"):
        opt.load_state_dict({k: v for k, v in good.items() if k != "velocity.w"})
    with pytest.raises(ValueError, match="unexpected keys \\['extra'\\]"):
        opt.load_state_dict({**good, "extra": 1})
    with pytest.raises(ValueError, match="'velocity.w' has shape"):
        opt.load_state_dict({**good, "velocity.w": np.ones(4), "step": 3})
    with pytest.raises(ValueError, match="'momentum' must be in"):
        opt.load_state_dict({**good, "momentum": 2.0, "step": 3})
    assert opt.step_count == 0 and opt.options["momentum"] == 0.9


# ---- gradient clipping ------------------------------------------------------------------------

def _grads(seed, scale_, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {name: (rng.standard_normal(shape) * scale_).astype(dtype) for name, shape in SHAPES.items()}


@pytest.mark.torch
@pytest.mark.parametrize("scale_,max_norm", [(5.0, 1.0), (0.01, 1.0), (1.0, 3.0), (3.0, 0.5)])
def test_clip_by_norm_matches_torch(scale_, max_norm):
    torch = pytest.importorskip("torch")
    grads = _grads(0, scale_)
    tparams = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads.values()]
    for tp, g in zip(tparams, grads.values()):
        tp.grad = torch.tensor(g.copy())
    total = torch.nn.utils.clip_grad_norm_(tparams, max_norm, foreach=False)
    norm = clip_gradients(grads, max_norm, "norm")
    assert isinstance(norm, float)
    np.testing.assert_allclose(norm, total.item(), rtol=1e-12)
    for tp, g in zip(tparams, grads.values()):
        np.testing.assert_allclose(g, tp.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_by_value_is_the_course_clip(dtype):
    grads = _grads(2, 10.0, dtype)
    expected = {n: np.clip(g, -5, 5) for n, g in grads.items()}
    expected_norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
    norm = clip_gradients(grads, 5.0, "value")
    np.testing.assert_allclose(norm, expected_norm, rtol=1e-12)
    for n in grads:
        assert grads[n].dtype == dtype
        np.testing.assert_array_equal(grads[n], expected[n])


@pytest.mark.parametrize("mode", ["value", "norm"])
def test_clip_none_only_measures(mode):
    grads = _grads(3, 10.0)
    before = {n: g.copy() for n, g in grads.items()}
    norm = clip_gradients(grads, None, mode)
    np.testing.assert_allclose(norm, math.sqrt(sum(np.sum(g ** 2) for g in before.values())))
    for n in grads:
        np.testing.assert_array_equal(grads[n], before[n])


def test_clip_gradients_errors():
    grads = _grads(0, 1.0)
    with pytest.raises(ValueError, match="clip mode must be one of \\('value', 'norm'\\), got 'l2'"):
        clip_gradients(grads, 1.0, "l2")
    with pytest.raises(ValueError, match="'clip' must be in \\(0, inf\\], got -1.0"):
        clip_gradients(grads, -1.0, "norm")
    with pytest.raises(ValueError, match="C-contiguous"):
        clip_gradients({"w": np.ones((4, 4))[:, ::2]}, 1.0, "value")


def test_clip_norm_reports_nan():
    grads = {"w": np.array([1.0, np.nan])}
    assert math.isnan(clip_gradients(grads, 1.0, "norm"))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), seed=st.integers(0, 10**6), dtype=st.sampled_from(DTYPES),
       clip=st.sampled_from([None, 1e-3, 0.5, 3.0, 1e6]), mode=st.sampled_from(["value", "norm"]))
def test_clip_flat_is_clip_gradients_bit_for_bit(n, seed, dtype, clip, mode):
    # The trainer's one-call clip must give the same norm and the same bits as the general path.
    g = (np.random.default_rng(seed).normal(size=n) * 3).astype(dtype)
    expected = g.copy()
    norm_expected = clip_gradients({"all": expected}, clip, mode)
    norm = clip_flat(g, clip, mode)
    assert norm == norm_expected
    np.testing.assert_array_equal(g, expected)


def test_clip_flat_non_finite_and_checked_fallback():
    g = np.array([1.0, np.nan, 10.0])
    assert math.isnan(clip_flat(g, 1.0, "norm")) and g[2] == 10.0  # a NaN norm scales nothing
    g = np.array([np.inf, 1.0])
    assert clip_flat(g, 1.0, "norm") == math.inf and g[1] == 0.0  # an infinite one scales by 0
    g = np.array([3.0, -10.0])
    assert clip_flat(g, 5, "value") == pytest.approx(math.hypot(3, 10)) and g.tolist() == [3.0, -5.0]  # int: checked path
    with pytest.raises(ValueError, match="'clip' must be in \\(0, inf\\], got -1.0"):
        clip_flat(g, -1.0, "value")
    with pytest.raises(ValueError, match="clip mode must be one of"):
        clip_flat(g, 1.0, "l2")
