"""Shared statistics: the paper's relative change of a probability, and confidence intervals for
figures and summaries (one rule everywhere: Student t, scipy)."""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import numpy as np
from jaxtyping import Float

__all__ = ["mean_ci", "relative_change"]


def mean_ci(
    x: Union[Sequence[float], Float[np.ndarray, "n_samples ..."]], level: float = 0.95
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over samples (axis 0) and its ``level`` confidence interval (Student t with n - 1
    degrees of freedom, ``scipy.stats.t``); the interval is the mean itself for one sample.
    NaN and None entries are dropped per point.

    Args:
        x: ``[n_samples]`` or ``[n_samples, n_points, ...]`` values.
        level: confidence level in (0, 1).

    Returns:
        ``(mean, low, high)``: floats for 1-D input, else arrays ``[n_points, ...]``; NaN where a
        point has no value.
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
    out = (mean, mean - half, mean + half)
    return tuple(float(v) for v in out) if a.ndim == 1 else out


def relative_change(p_new: float, p_base: float) -> float:
    """``(p_new - p_base) / p_base * 100`` in percent (the paper's metric, official
    ``relative_diff``); NaN when ``p_base`` is not positive."""
    return (p_new - p_base) / p_base * 100.0 if p_base > 0 else float("nan")
