"""Sampling kernels against NumPy references; samplers: reproducibility, supports, options."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from numbarnn import get_sampler
from numbarnn.kernels import sampling as k
from numbarnn.optimizers import UnknownOptionError
from numbarnn.samplers import BUILTIN_SAMPLERS, Sampler, SamplerSpec

DTYPES = (np.float32, np.float64)
FAST = settings(max_examples=30, deadline=None)
sizes = st.integers(min_value=1, max_value=60)
seeds = st.integers(min_value=0, max_value=2**32 - 1)
dtypes = st.sampled_from(DTYPES)


# ---- plain NumPy references -------------------------------------------------------------------

def ref_categorical(probs, u):
    # np.random.choice's rule: normalised cdf, searchsorted side='right'
    cdf = probs.astype(np.float64).cumsum()
    cdf /= cdf[-1]
    return int(cdf.searchsorted(u, side="right"))


def ref_softmax(logits, temperature):
    z = logits.astype(np.float64) / temperature
    e = np.exp(z - z.max())
    return e / e.sum()


def ref_descending(probs):
    return np.argsort(-probs.astype(np.float64), kind="stable")


def ref_top_k(probs, kk):
    keep = ref_descending(probs)[:kk]
    out = np.zeros(probs.shape, np.float64)
    out[keep] = probs[keep]
    return out / out.sum(), set(keep.tolist())


def ref_top_p(probs, p):
    order = ref_descending(probs)
    p64 = probs.astype(np.float64)
    cum = np.cumsum(p64[order])
    reached = np.nonzero(cum >= p * p64.sum())[0]
    n_keep = reached[0] + 1 if reached.size else probs.size
    keep = order[:n_keep]
    out = np.zeros(probs.shape, np.float64)
    out[keep] = p64[keep]
    return out / out.sum(), set(keep.tolist())


def random_probs(seed, n, dtype, zeros=True):
    rng = np.random.default_rng(seed)
    probs = rng.random(n) ** 3
    if zeros and n > 2:
        probs[rng.integers(0, n, size=n // 3)] = 0.0
    if probs.sum() == 0:
        probs[0] = 1.0
    return (probs / probs.sum()).astype(dtype)


# ---- kernels ----------------------------------------------------------------------------------

@FAST
@given(n=sizes, seed=seeds, dtype=dtypes)
def test_sample_categorical_is_inverse_cdf(n, seed, dtype):
    probs = random_probs(seed, n, dtype)
    for u in np.random.default_rng(seed + 1).random(20).tolist() + [0.0, 1.0 - 2**-53]:
        i = k.sample_categorical(probs, u)
        assert i == ref_categorical(probs, u)
        assert probs[i] > 0


@FAST
@given(n=st.integers(2, 60), seed=seeds)
def test_sample_categorical_matches_generator_choice(n, seed):
    probs = random_probs(seed, n, np.float64)
    a, b = np.random.default_rng(seed), np.random.default_rng(seed)
    for _ in range(10):
        assert k.sample_categorical(probs, a.random()) == b.choice(n, p=probs)


def test_sample_categorical_unnormalised_and_boundaries():
    probs = np.array([1.0, 0.0, 3.0])  # cdf (0.25, 0.25, 1)
    assert k.sample_categorical(probs, 0.0) == 0
    assert k.sample_categorical(probs, 0.2499) == 0
    assert k.sample_categorical(probs, 0.25) == 2  # side='right' skips the zero entry
    assert k.sample_categorical(probs, 0.999999) == 2


@pytest.mark.parametrize("probs,u,needle", [
    (np.array([0.5, 0.5]), 1.0, "u must be in [0, 1)"),
    (np.array([0.5, 0.5]), -0.1, "u must be in [0, 1)"),
    (np.array([0.5, -0.5]), 0.3, "non-negative"),
    (np.array([0.5, np.nan]), 0.3, "non-negative"),
    (np.array([0.0, 0.0]), 0.3, "positive sum"),
    (np.array([np.inf, 1.0]), 0.3, "finite, positive sum"),
])
def test_sample_categorical_rejects_bad_input(probs, u, needle):
    with pytest.raises(ValueError) as info:
        k.sample_categorical(probs, u)
    assert needle in str(info.value)


@FAST
@given(n=sizes, seed=seeds, dtype=dtypes)
def test_argmax_matches_numpy(n, seed, dtype):
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 3, size=n).astype(dtype)  # many ties: the first one wins
    assert k.argmax(x) == np.argmax(x)
    x[rng.integers(0, n)] = np.nan
    assert k.argmax(x) == np.argmax(x)


@FAST
@given(n=sizes, seed=seeds, dtype=dtypes, temperature=st.floats(0.05, 20.0))
def test_apply_temperature_is_softmax(n, seed, dtype, temperature):
    logits = (np.random.default_rng(seed).standard_normal(n) * 30).astype(dtype)
    out = np.empty(n, np.float64)
    k.apply_temperature(logits, temperature, out)
    np.testing.assert_allclose(out, ref_softmax(logits, temperature), rtol=1e-12, atol=1e-300)
    out32 = np.empty(n, np.float32)
    k.apply_temperature(logits, temperature, out32)
    np.testing.assert_allclose(out32, ref_softmax(logits, temperature), rtol=1e-5, atol=1e-30)


def test_apply_temperature_does_not_overflow_and_rejects_bad_temperature():
    out = np.empty(3)
    k.apply_temperature(np.array([1000.0, 999.0, -1000.0]), 0.01, out)
    assert np.all(np.isfinite(out)) and out[0] == 1.0
    with pytest.raises(ValueError, match="temperature must be > 0"):
        k.apply_temperature(np.zeros(3), 0.0, out)


@FAST
@given(n=sizes, seed=seeds, dtype=dtypes, kk=st.integers(1, 70))
def test_top_k_filter(n, seed, dtype, kk):
    probs = random_probs(seed, n, dtype, zeros=False)
    probs[: n // 2] = probs[n - 1]  # ties: lower indices are kept first
    out = np.empty(n, np.float64)
    k.top_k_filter(probs, kk, out)
    expected, keep = ref_top_k(probs, kk)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    assert set(np.nonzero(out)[0].tolist()) <= keep and len(keep) == min(kk, n)


def test_top_k_ties_break_by_lower_index():
    out = np.empty(5)
    k.top_k_filter(np.array([0.1, 0.3, 0.2, 0.3, 0.1]), 2, out)
    np.testing.assert_allclose(out, [0, 0.5, 0, 0.5, 0])
    k.top_k_filter(np.array([0.2, 0.2, 0.2, 0.2, 0.2]), 2, out)
    np.testing.assert_allclose(out, [0.5, 0.5, 0, 0, 0])
    with pytest.raises(ValueError, match="k must be >= 1"):
        k.top_k_filter(np.array([1.0]), 0, out[:1])


@FAST
@given(n=sizes, seed=seeds, dtype=dtypes, p=st.floats(0.01, 1.0))
def test_top_p_filter(n, seed, dtype, p):
    probs = random_probs(seed, n, dtype)
    out = np.empty(n, np.float64)
    k.top_p_filter(probs, p, out)
    expected, keep = ref_top_p(probs, p)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    kept = np.nonzero(out)[0]
    assert set(kept.tolist()) <= keep
    assert probs.astype(np.float64)[kept].sum() >= p * probs.astype(np.float64).sum() * (1 - 1e-12)


def test_top_p_filter_examples():
    out = np.empty(4)
    k.top_p_filter(np.array([0.1, 0.5, 0.15, 0.25]), 0.7, out)  # 0.5 + 0.25 = 0.75 >= 0.7
    np.testing.assert_allclose(out, [0, 0.5 / 0.75, 0, 0.25 / 0.75])
    k.top_p_filter(np.array([0.1, 0.5, 0.15, 0.25]), 0.01, out)  # always at least one
    np.testing.assert_allclose(out, [0, 1, 0, 0])
    with pytest.raises(ValueError, match="p must be in \\(0, 1\\]"):
        k.top_p_filter(np.array([1.0]), 1.5, out[:1])


def test_kernels_callable_from_user_njit_code():
    @njit
    def pick(logits, u):
        probs = np.empty(logits.shape[0])
        k.apply_temperature(logits, 0.5, probs)
        filtered = np.empty_like(probs)
        k.top_k_filter(probs, 2, filtered)
        return k.sample_categorical(filtered, u), k.argmax(logits)

    assert pick(np.array([0.0, 2.0, 1.0, -1.0]), 0.99) == (2, 1)


def test_no_fastmath_in_sampling_kernels():
    for name in ("sample_categorical", "argmax", "apply_temperature", "top_k_filter", "top_p_filter"):
        assert not getattr(k, name).targetoptions.get("fastmath"), name


# ---- samplers -------------------------------------------------------------------------------

STOCHASTIC = [s for s in BUILTIN_SAMPLERS if not s.is_beam]


def logits_rows(seed, n_rows=40, V=12):
    return np.random.default_rng(seed).standard_normal((n_rows, V)) * 2


def test_builtin_names_and_defaults():
    assert [s.name for s in BUILTIN_SAMPLERS] == ["categorical", "greedy", "temperature", "top_k",
                                                  "top_p", "beam"]
    defaults = {s.name: dict(s.defaults) for s in BUILTIN_SAMPLERS}
    assert defaults == {"categorical": {}, "greedy": {}, "temperature": {"temperature": 1.0},
                        "top_k": {"k": 10, "temperature": 1.0}, "top_p": {"p": 0.9, "temperature": 1.0},
                        "beam": {"beam_width": 5}}
    for spec in BUILTIN_SAMPLERS:
        assert isinstance(spec, SamplerSpec)
        sampler = spec.factory()
        assert isinstance(sampler, Sampler) and sampler.options == dict(spec.defaults)
        assert spec.is_beam == sampler.is_beam == (spec.name == "beam")


@pytest.mark.parametrize("spec", STOCHASTIC, ids=lambda s: s.name)
@pytest.mark.parametrize("dtype", DTYPES)
def test_reproducible_from_a_seed(spec, dtype):
    sampler = spec.factory()
    rows = logits_rows(0).astype(dtype)
    first = [sampler.choose(row, np.random.default_rng(7)) for row in rows]
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    a = [sampler.choose(row, rng_a) for row in rows]
    b = [spec.factory().choose(row, rng_b) for row in rows]
    assert a == b
    assert all(isinstance(i, int) and 0 <= i < rows.shape[1] for i in a + first)


def test_categorical_matches_numpy_choice():
    sampler = get_sampler("categorical").factory()
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    for row in logits_rows(1):
        assert sampler.choose(row, rng_a) == rng_b.choice(row.size, p=ref_softmax(row, 1.0))


def test_temperature_matches_numpy_choice():
    sampler = get_sampler("temperature").factory(temperature=0.7)
    rng_a, rng_b = np.random.default_rng(4), np.random.default_rng(4)
    for row in logits_rows(2):
        assert sampler.choose(row, rng_a) == rng_b.choice(row.size, p=ref_softmax(row, 0.7))


def test_greedy_is_argmax_and_draws_nothing():
    sampler = get_sampler("greedy").factory()
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    rows = logits_rows(3)
    rows[0, :] = 1.0  # all tied: the first
    for row in rows:
        assert sampler.choose(row, rng) == int(np.argmax(row))
    assert rng.bit_generator.state == state


def test_top_k_never_outside_the_top_k():
    kk = 3
    sampler = get_sampler("top_k").factory(k=kk, temperature=2.0)
    rng = np.random.default_rng(5)
    seen = set()
    for row in logits_rows(4, n_rows=300, V=10):
        i = sampler.choose(row, rng)
        assert i in set(ref_descending(row)[:kk].tolist())
        seen.add(int(np.argsort(-row, kind="stable").tolist().index(i)))
    assert seen == {0, 1, 2}  # every rank inside the top k does get picked


def test_top_p_never_outside_the_nucleus():
    p = 0.6
    sampler = get_sampler("top_p").factory(p=p)
    rng = np.random.default_rng(6)
    for row in logits_rows(5, n_rows=300, V=10):
        _, nucleus = ref_top_p(ref_softmax(row, 1.0), p)
        assert sampler.choose(row, rng) in nucleus


@pytest.mark.parametrize("spec", STOCHASTIC, ids=lambda s: s.name)
def test_distribution_sums_to_one_and_choose_uses_it(spec):
    sampler = spec.factory()
    rows = logits_rows(8, n_rows=10)
    for row in rows:
        probs = sampler.distribution(row)
        assert probs.dtype == np.float64 and probs.shape == row.shape
        np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-12)
        rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
        assert probs[sampler.choose(row, rng_a)] > 0
        if spec.name != "greedy":
            assert sampler.choose(row, rng_b) == ref_categorical(probs, np.random.default_rng(9).random())


def test_beam_sampler_is_flagged_and_not_chosen_from():
    spec = get_sampler("beam")
    sampler = spec.factory(beam_width=3)
    assert spec.is_beam and sampler.is_beam and sampler.beam_width == 3
    with pytest.raises(NotImplementedError, match="beam search runs in the trainer"):
        sampler.choose(np.zeros(3), np.random.default_rng(0))


@pytest.mark.parametrize("name,options,needle", [
    ("temperature", {"temperature": 0.0}, "'temperature' must be in (0, inf], got 0.0"),
    ("temperature", {"temperature": -2}, "'temperature' must be in (0, inf], got -2"),
    ("temperature", {"temperature": "hot"}, "'temperature' must be a number"),
    ("top_k", {"k": 0}, "'k' must be an integer >= 1, got 0"),
    ("top_k", {"k": 2.5}, "'k' must be an integer >= 1, got 2.5"),
    ("top_k", {"k": True}, "'k' must be an integer >= 1, got True"),
    ("top_k", {"temperature": float("nan")}, "'temperature'"),
    ("top_p", {"p": 0.0}, "'p' must be in (0, 1], got 0.0"),
    ("top_p", {"p": 1.01}, "'p' must be in (0, 1], got 1.01"),
    ("beam", {"beam_width": 0}, "'beam_width' must be an integer >= 1, got 0"),
])
def test_bad_option_values_raise_value_error(name, options, needle):
    with pytest.raises(ValueError) as info:
        get_sampler(name).factory(**options)
    assert needle in str(info.value) and repr(name) in str(info.value)


@pytest.mark.parametrize("spec", BUILTIN_SAMPLERS, ids=lambda s: s.name)
def test_unknown_option_lists_the_accepted_ones(spec):
    with pytest.raises(UnknownOptionError) as info:
        spec.factory(tempreature=0.5)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    message = str(info.value)
    assert "'tempreature'" in message and repr(spec.name) in message
    assert "accepted options: " + (", ".join(spec.defaults) or "none") in message
    if "temperature" in spec.defaults:
        assert "did you mean 'temperature'" in message


def test_bad_logits_row():
    sampler = get_sampler("categorical").factory()
    with pytest.raises(ValueError, match="1-D float array"):
        sampler.choose(np.zeros((2, 3)), np.random.default_rng(0))
    with pytest.raises(ValueError, match="1-D float array"):
        sampler.choose(np.array([1, 2]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="non-negative"):
        sampler.choose(np.array([0.0, np.nan]), np.random.default_rng(0))
