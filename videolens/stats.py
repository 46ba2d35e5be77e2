"""Shared statistics: the paper's relative change of a probability, and confidence intervals for
figures and summaries. One rule everywhere: a metric with a bounded range (a probability in
[0, 1], a relative change of a probability in [-100 %, +inf)) gets the percentile bootstrap
interval of its mean (``scipy.stats.bootstrap``, 2000 resamples, fixed seed), which never leaves
the range; an unbounded one the Student t interval."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
from jaxtyping import Float

__all__ = ["mean_ci", "relative_change", "PROBABILITY", "RELATIVE_CHANGE"]

PROBABILITY = (0.0, 1.0)
"""The range of a probability (``mean_ci(..., bounds=PROBABILITY)``)."""
RELATIVE_CHANGE = (-100.0, float("inf"))
"""The range of ``relative_change`` in percent: a probability can fall by at most all of it."""
_RESAMPLES = 2000


def mean_ci(
    x: Union[Sequence[float], Float[np.ndarray, "n_samples ..."]], level: float = 0.95,
    bounds: Optional[Tuple[float, float]] = None,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over samples (axis 0) and its ``level`` confidence interval; the interval is the mean
    itself for one sample (or identical values). NaN and None entries are dropped per point.

    Without ``bounds``: Student t with n - 1 degrees of freedom (``scipy.stats.t``). With
    ``bounds`` (the metric's range, e.g. ``PROBABILITY`` or ``RELATIVE_CHANGE``): the percentile
    bootstrap of the mean (``scipy.stats.bootstrap``, 2000 resamples, seed 0: the same numbers on
    every run), which lies within the samples' range and so within the metric's (a t interval of
    three relative changes can reach -210 %).

    Args:
        x: ``[n_samples]`` or ``[n_samples, n_points, ...]`` values.
        level: confidence level in (0, 1).
        bounds: ``(low, high)`` range of the metric, or None for an unbounded one.

    Returns:
        ``(mean, low, high)``: floats for 1-D input, else arrays ``[n_points, ...]``; NaN where a
        point has no value.

    Raises:
        ValueError: ``level`` outside (0, 1).
    """
    from scipy import stats

    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    a = np.asarray([np.nan if v is None else v for v in x] if not isinstance(x, np.ndarray) else x, dtype=float)
    n = np.sum(~np.isnan(a), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.nanmean(a, axis=0) if a.size else np.full(a.shape[1:], np.nan)
        sd = np.nanstd(a, axis=0, ddof=1) if a.shape[0] > 1 else np.zeros_like(mean)
        t = stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1))
        half = np.where(n > 1, t * sd / np.sqrt(np.maximum(n, 1)), 0.0)
    mean = np.where(n > 0, mean, np.nan)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = _bootstrap(a, np.atleast_1d(mean), level)
        low, high = np.clip(low, *bounds).reshape(mean.shape), np.clip(high, *bounds).reshape(mean.shape)
    out = (mean, low, high)
    return tuple(float(v) for v in out) if a.ndim == 1 else out


def _bootstrap(a: np.ndarray, mean: np.ndarray, level: float) -> Tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean of each point of ``a [n, ...]`` (NaN dropped)."""
    from scipy import stats

    cols = a.reshape(a.shape[0], -1)
    low, high = mean.reshape(-1).copy(), mean.reshape(-1).copy()
    for j in range(cols.shape[1]):
        v = cols[:, j][~np.isnan(cols[:, j])]
        if len(v) < 2 or np.all(v == v[0]):
            continue
        res = stats.bootstrap((v,), np.mean, confidence_level=level, n_resamples=_RESAMPLES, method="percentile",
                              vectorized=True, random_state=np.random.default_rng(0))
        low[j], high[j] = res.confidence_interval
    return low, high


def relative_change(p_new: float, p_base: float) -> float:
    """``(p_new - p_base) / p_base * 100`` in percent (the paper's metric, official
    ``relative_diff``); NaN when ``p_base`` is not positive."""
    return (p_new - p_base) / p_base * 100.0 if p_base > 0 else float("nan")
