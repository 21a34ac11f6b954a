"""Metrics: pass@k against known values, bootstrap interval coverage in a simulated paired design,
the p-value's behaviour, and path-diversity normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.diversity import diversity, edit_distance, normalize_code, normalize_lean, normalize_math
from analysis.metrics import Estimate, mean_pass_at_k, paired_bootstrap, pass_at_k
from analysis.tables import cell, interval_pp, p_text, signed_pp


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (10, 3, 1, 0.3),
        (10, 0, 1, 0.0),
        (10, 10, 1, 1.0),
        (10, 3, 5, 1 - math.comb(7, 5) / math.comb(10, 5)),
        (5, 2, 4, 1.0),  # n - c < k: every draw of 4 contains a correct one
        (200, 13, 10, 1 - math.comb(187, 10) / math.comb(200, 10)),
    ],
)
def test_pass_at_k_known_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_pass_at_k_is_the_expectation_over_subsets():
    """pass@k = P(at least one correct among k drawn without replacement): check by brute force."""
    import itertools

    n, c, k = 6, 2, 3
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_k_rejects_bad_input():
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError):
        pass_at_k(5, 2, 6)
    assert mean_pass_at_k(np.array([4, 4]), np.array([0, 4]), 1) == 0.5


def _simulate(rng: np.random.Generator, n_seeds: int, n_problems: int, delta: float):
    """Binary outcomes of arms A and B on the same problems and seeds; problem difficulty and a per-seed
    training effect per arm are random. Returns (d = A - B, seeds x problems)."""
    a = rng.normal(0, 1.5, n_problems)
    b_a, b_b = rng.normal(0, 0.3, n_seeds), rng.normal(0, 0.3, n_seeds)
    sig = lambda x: 1 / (1 + np.exp(-x))
    y_a = rng.random((n_seeds, n_problems)) < sig(a[None, :] + delta + b_a[:, None])
    y_b = rng.random((n_seeds, n_problems)) < sig(a[None, :] + b_b[:, None])
    return y_a.astype(float) - y_b.astype(float)


def _true_difference(delta: float) -> float:
    rng = np.random.default_rng(12345)
    a = rng.normal(0, 1.5, 400_000)
    b_a, b_b = rng.normal(0, 0.3, 400_000), rng.normal(0, 0.3, 400_000)
    sig = lambda x: 1 / (1 + np.exp(-x))
    return float(np.mean(sig(a + delta + b_a) - sig(a + b_b)))


def test_bootstrap_interval_covers_the_true_difference():
    """Nominal 95 %: in 200 simulated paired experiments the interval must cover the truth >= 90 % of the time."""
    delta = 0.4
    truth = _true_difference(delta)
    rng = np.random.default_rng(7)
    covered = 0
    for i in range(200):
        est = paired_bootstrap(_simulate(rng, n_seeds=5, n_problems=100, delta=delta), n_boot=1000, seed=i)
        covered += est.low <= truth <= est.high
    assert covered / 200 >= 0.90, covered


def test_p_value_is_small_for_a_real_effect_and_uniformish_under_the_null():
    rng = np.random.default_rng(3)
    strong = paired_bootstrap(_simulate(rng, 3, 300, delta=1.0), seed=0)
    assert strong.p_value < 0.01 and strong.low > 0
    nulls = [paired_bootstrap(_simulate(rng, 3, 100, delta=0.0), n_boot=200, seed=i).p_value for i in range(100)]
    assert 0.01 <= np.mean(np.array(nulls) < 0.05) <= 0.12  # about 5 % false positives


def test_bootstrap_shape_errors_and_degenerate_input():
    with pytest.raises(ValueError):
        paired_bootstrap(np.zeros(5))
    est = paired_bootstrap(np.zeros((3, 10)))
    assert (est.mean, est.low, est.high, est.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert (est.n_seeds, est.n_problems) == (3, 10)
    assert est.pp() == "+0.0 [+0.0, +0.0]"


def test_an_asymmetric_interval_is_shown_by_its_ends_not_as_plus_minus():
    """A bootstrap interval [+0.0, +7.5] around +2.5 is not '+2.5 ± 3.8' (issue 15)."""
    est = Estimate(mean=0.025, low=0.0, high=0.075, p_value=0.2, n_seeds=3, n_problems=40)
    assert est.pp() == "+2.5 [+0.0, +7.5]"
    assert "±" not in est.pp()


def test_number_formats_are_one_per_kind():
    """Rates to 3 decimals (1.0 included), p-values to 3 decimals or '<0.001', counts as integers."""
    assert [cell(v) for v in (1.0, 0.5, 0.0, 3.0, float("nan"), 7)] == ["1.000", "0.500", "0.000", "3", "-", "7"]
    assert [p_text(p) for p in (1.0, 0.04, 0.0004)] == ["1.000", "0.040", "<0.001"]
    assert signed_pp(-0.01) == "-1.0" and interval_pp(-0.0123, 0.2) == "[-1.2, +20.0]"


def test_code_normalisation_ignores_names_docstrings_and_spacing():
    a = 'def add_one(value):\n    """Add one."""\n    return value + 1\n'
    b = "```python\ndef f(x):  return x+1\n```"
    assert normalize_code(a) == normalize_code(b)
    assert normalize_code("def f(x): return x - 1") != normalize_code(a)
    assert normalize_code("def f(x) return") == ("def", "f(x)", "return")  # unparsable: tokens


def test_math_and_lean_normalisation():
    assert normalize_math(" 8*8=64. 64+67=131. #### 131") == ("8", "8", "64", "64", "67", "131", "131")
    assert normalize_math("1,000 + 5 = 1,005") == ("1000", "5", "1005")
    assert normalize_lean("  nlinarith [sq_nonneg (x - 1)]\n  · simp at h\n```") == ("nlinarith", "simp")


def test_diversity_counts_distinct_forms_and_distance():
    same = diversity("mbpp", ["def f(a): return a*2", "def g(b):\n    return b * 2"])
    assert same == {"n": 2, "distinct": 1, "mean_edit_distance": 0.0}
    two = diversity("arith", [" 1+2=3. #### 3", " 2+1=3. #### 3", " 1+2=3. #### 3"])
    assert two["n"] == 3 and two["distinct"] == 2 and 0 < two["mean_edit_distance"] <= 1
    assert edit_distance(("a", "b"), ("a", "c", "b")) == 1
