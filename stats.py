"""Intervals for the reports: bootstrap means and differences, over seeds and items, paired or not.

A cell is a list of per-seed item arrays (seed i's 1,000 sample scores, say). Its bootstrap draws seeds with
replacement, then items within each drawn seed, and takes the mean of the pooled items (NaN items ignored),
so the interval holds both sources of noise. A difference A - B is *paired* when A's and B's seed i share
their luck (the same initial weights and data order): one draw of seed indices serves both, so what the two
share cancels; unpaired, each side draws its own seeds. Intervals are percentile intervals.

report.py's claims on real data resample the benchmark items of two models instead (paired by item).
"""
import numpy as np

N_BOOT = 2000
LEVEL = 0.95


def interval(values: np.ndarray, level: float = LEVEL) -> tuple:
    """(low, high): the central `level` percentile interval of the bootstrap values (NaN draws ignored)."""
    values = np.asarray(values, dtype=float)
    if np.isnan(values).all():
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    lo, hi = np.nanpercentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def pooled_mean(per_seed: list) -> float:
    """The mean over every item of every seed (NaN items ignored): the cell's point estimate."""
    items = np.concatenate([np.asarray(x, dtype=float) for x in per_seed])
    return float(np.nanmean(items)) if not np.isnan(items).all() else float("nan")


def _resampled_means(per_seed: list, seed_draws: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n_boot,) means of the pooled items of the drawn seeds (seed_draws: (n_boot, seeds) indices), each
    occurrence of a seed with its own resample of that seed's items; vectorised one seed at a time."""
    sums, counts = np.zeros(seed_draws.shape), np.zeros(seed_draws.shape)
    for i, x in enumerate(per_seed):
        where = np.nonzero(seed_draws == i)
        if len(where[0]):
            draw = x[rng.integers(0, len(x), (len(where[0]), len(x)))]  # (occurrences, items)
            sums[where], counts[where] = np.nansum(draw, 1), (~np.isnan(draw)).sum(1)
    total = counts.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):  # a draw of only NaN items (no grammatical sample)
        return np.where(total > 0, sums.sum(1) / np.maximum(total, 1), np.nan)  # has no mean


def bootstrap_mean(per_seed: list, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(n_boot,) bootstrap means of a cell: seeds drawn with replacement, then items within each seed."""
    per_seed = [np.asarray(x, dtype=float) for x in per_seed]
    rng = np.random.default_rng(seed)
    return _resampled_means(per_seed, rng.integers(0, len(per_seed), (n_boot, len(per_seed))), rng)


def bootstrap_difference(a: list, b: list, paired: bool = True, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(n_boot,) bootstrap values of mean(A) - mean(B). Paired: a[i] and b[i] are the same seed, and one draw
    of seed indices serves both (the lists must be as long); unpaired: each side draws its own."""
    a, b = [np.asarray(x, dtype=float) for x in a], [np.asarray(x, dtype=float) for x in b]
    rng = np.random.default_rng(seed)
    if paired:
        if len(a) != len(b):
            raise ValueError(f"a paired difference needs the same seeds on both sides ({len(a)} and {len(b)} given)")
        draws = rng.integers(0, len(a), (n_boot, len(a)))
        return _resampled_means(a, draws, rng) - _resampled_means(b, draws, rng)
    draws_a, draws_b = rng.integers(0, len(a), (n_boot, len(a))), rng.integers(0, len(b), (n_boot, len(b)))
    return _resampled_means(a, draws_a, rng) - _resampled_means(b, draws_b, rng)


def difference(a: list, b: list, paired: bool = True, n_boot: int = N_BOOT) -> tuple:
    """(mean(A) - mean(B), low, high) with its 95% bootstrap interval."""
    lo, hi = interval(bootstrap_difference(a, b, paired, n_boot))
    return pooled_mean(a) - pooled_mean(b), lo, hi


def sign(diff: tuple) -> int:
    """0 when the interval (low, high) holds 0 (within noise), else the sign of the difference."""
    d, lo, hi = diff
    return 0 if lo <= 0 <= hi else (1 if d > 0 else -1)


def agree(first: tuple, second: tuple) -> bool:
    """Two estimates (mean, low, high) of one quantity agree when each mean lies inside the other's interval."""
    return first[1] <= second[0] <= first[2] and second[1] <= first[0] <= second[2]


def within(move: float, tolerance: float) -> bool:
    """A move smaller than a fixed tolerance (the smallest effect a report claims to resolve)."""
    return abs(move) < tolerance


def paired_bootstrap(items_a: dict, items_b: dict, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Resampled differences of the macro score (mean over tasks of per-task accuracy), A minus B, for two
    models scored on the same benchmark items: the same items drawn for both, independently within each
    task. Returns (n_boot,)."""
    rng = np.random.default_rng(seed)
    diffs = np.zeros(n_boot)
    tasks = sorted(set(items_a) & set(items_b))
    for t in tasks:
        d = np.array([int(a) - int(b) for a, b in zip(items_a[t], items_b[t])], dtype=np.float64)
        for lo in range(0, n_boot, 50):  # 50 resamples at a time bounds memory on 20k-item tasks
            idx = rng.integers(0, len(d), size=(min(50, n_boot - lo), len(d)))
            diffs[lo:lo + len(idx)] += d[idx].mean(1)
    return diffs / max(1, len(tasks))
