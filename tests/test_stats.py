"""stats.py: the intervals and rules every headline number rests on, pinned with exact expected values on
constructed cases (a planted change to the level, to pairing, to a threshold or to NaN handling fails here)."""
import numpy as np
import pytest

import stats as S


def test_interval_is_the_central_95_percent_of_a_known_distribution():
    grid = np.arange(10001, dtype=float)  # the percentiles of 0..10000 are exact
    assert S.LEVEL == 0.95
    exact = lambda x: pytest.approx(x, abs=1e-9)  # noqa: E731 (float rounding only)
    assert S.interval(grid) == exact((250.0, 9750.0))
    assert S.interval(grid, level=0.9) == exact((500.0, 9500.0))
    assert S.interval(np.append(grid, np.nan)) == exact((250.0, 9750.0))  # NaN draws are ignored
    assert np.isnan(S.interval(np.full(5, np.nan))).all()


def test_paired_difference_cancels_the_seed_luck_that_unpaired_keeps():
    """A = B + 2 within every seed, seeds far apart and no item noise: paired, every resample is exactly 2;
    unpaired, the seeds' spread enters and the interval holds 0."""
    base = [1.0, 5.0, 9.0]
    a = [np.full(100, m + 2.0) for m in base]
    b = [np.full(100, m) for m in base]
    paired = S.bootstrap_difference(a, b, paired=True)
    assert paired.min() == pytest.approx(2.0, abs=1e-9) and paired.max() == pytest.approx(2.0, abs=1e-9)
    assert S.difference(a, b, paired=True) == pytest.approx((2.0, 2.0, 2.0), abs=1e-9)
    d, lo, hi = S.difference(a, b, paired=False)
    assert d == 2.0 and lo < 0 < 2.0 < hi and hi - lo > 8
    with pytest.raises(ValueError, match="same seeds"):
        S.bootstrap_difference(a, b[:2], paired=True)


def test_cell_bootstrap_draws_seeds_then_items():
    """One seed: the interval comes from the items alone (about 2 x 1.96 / sqrt(400) for unit spread); seeds
    that disagree widen it beyond the items' own noise; NaN items (ungrammatical samples) are left out."""
    rng = np.random.default_rng(0)
    noisy, quiet = [rng.normal(0, 1.0, 400)], [rng.normal(0, 0.01, 400)]
    width = lambda x: np.subtract(*S.interval(S.bootstrap_mean(x))[::-1])  # noqa: E731
    assert 0.15 < width(noisy) < 0.25
    assert width(quiet) == pytest.approx(width(noisy) / 100, rel=0.3)
    spread = [rng.normal(mu, 0.1, 500) for mu in (-1.0, 0.0, 1.0)]
    assert width(spread) > 1.0
    assert S.pooled_mean([np.array([np.nan, 1.0, 3.0]), np.array([5.0])]) == 3.0
    assert np.nanmean(S.bootstrap_mean([np.array([np.nan, 1.0, 3.0])])) == pytest.approx(2.0, abs=0.2)


def test_sign_marks_an_interval_that_holds_zero():
    assert S.sign((0.5, 0.1, 0.9)) == 1 and S.sign((-0.5, -0.9, -0.1)) == -1
    assert S.sign((0.5, -0.1, 0.9)) == 0 and S.sign((0.5, 0.0, 0.9)) == 0  # a bound at 0 is within noise


def test_stability_rule_just_inside_and_just_outside():
    """Two estimates agree when each mean lies inside the other's interval, bounds included."""
    first = (1.0, 0.0, 2.0)
    assert S.agree(first, (2.0, 1.0, 3.0))  # each mean exactly on the other's bound
    assert not S.agree(first, (2.0001, 1.0, 3.0))  # just outside the first's interval
    assert not S.agree(first, (1.5, 1.001, 3.0))  # the first's mean just outside the second's
    assert S.agree((1.0, 0.9, 1.1), (1.0, 0.9, 1.1))


def test_fixed_tolerance_just_inside_and_just_outside():
    assert S.within(0.0099, 0.01) and S.within(-0.0099, 0.01)
    assert not S.within(0.01, 0.01) and not S.within(-0.0101, 0.01)

