"""The smart-meter analytics benchmark tasks of Liu et al. (2016), as NumPy kernels.

Every kernel takes a batch of households (a matrix, one row each) and is vectorised
across them; engines call it on the whole matrix (embedded) or on one partition of
households at a time (Spark), so both return the same numbers.

References
----------
X. Liu, L. Golab, W. Golab, I. F. Ilyas, S. Jin, "Smart Meter Data Analytics: Systems,
Algorithms, and Benchmarking", ACM Transactions on Database Systems 42(1), 2016:
Sec. 3.1 (consumption histograms), 3.2 (3-line thermal sensitivity), 3.3 (periodic
autoregression daily profiles), 3.4 (similarity search).
B. J. Birt, G. R. Newsham, I. Beausoleil-Morrison, M. M. Armstrong, N. Saldanha,
I. H. Rowlands, "Disaggregating categories of electrical energy end-use from whole-house
hourly data", Energy and Buildings 50, 2012 (the 3-line model).
O. Ardakanian, N. Koochakzadeh, R. P. Singh, L. Golab, S. Keshav, "Computing electricity
consumption profiles from household smart meter data", EDBT/ICDT Workshops 2014 (PAR).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "HIST_BUCKETS",
    "PAR_COLD_C",
    "PAR_COOL_C",
    "PAR_HEAT_C",
    "PAR_LAGS",
    "Par",
    "ThreeLine",
    "anomaly",
    "histogram",
    "par",
    "similarity",
    "threeline",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

HIST_BUCKETS = 10
PAR_LAGS = 3
#: PAR temperature terms: max(T - 20, 0), max(16 - T, 0), max(5 - T, 0) [degC]
PAR_COOL_C = 20.0
PAR_HEAT_C = 16.0
PAR_COLD_C = 5.0


# ----------------------------------------------------------------------------- histogram


def histogram(x: F64, buckets: int = HIST_BUCKETS, *, chunk: int = 128
              ) -> tuple[I64, F64, F64]:
    """Equal-width consumption histogram per household.

    Bucket of a value ``v``: ``min(floor(((v - lo) / (hi - lo)) * buckets), buckets - 1)``
    with ``lo``, ``hi`` the household's minimum and maximum (bucket 0 when ``hi == lo``);
    NaN values are not counted. The formula is evaluated in exactly this order, as the
    Spark SQL of the same task does, so both count identically. Rows are processed
    ``chunk`` at a time (cache-sized blocks).

    Returns
    -------
    counts : ndarray of int64, shape (H, buckets)
    lo, hi : ndarray of float64, shape (H,)
        Minimum and maximum [kWh] (NaN for a household without values).
    """
    h = x.shape[0]
    counts = np.zeros((h, buckets), np.int64)
    lo = np.full(h, np.nan)
    hi = np.full(h, np.nan)
    if x.shape[1] == 0:
        return counts, lo, hi

    def part(first: int, last: int) -> None:
        for s in range(first, last, chunk):
            xc = x[s:s + chunk]
            with _quiet():
                lo_c = np.fmin.reduce(xc, axis=1)  # ignores NaN
                hi_c = np.fmax.reduce(xc, axis=1)
            width = hi_c - lo_c
            b = xc - lo_c[:, None]
            b /= np.where(width > 0, width, np.inf)[:, None]  # flat household: bucket 0
            b *= buckets
            np.floor(b, out=b)
            np.minimum(b, buckets - 1, out=b)
            b[np.isnan(b)] = buckets  # uncounted slot
            off = np.arange(len(xc), dtype=np.int64)[:, None] * (buckets + 1)
            c = np.bincount((b.astype(np.int64) + off).ravel(), minlength=len(xc) * (buckets + 1))
            counts[s:s + chunk] = c.reshape(len(xc), buckets + 1)[:, :buckets]
            lo[s:s + chunk], hi[s:s + chunk] = lo_c, hi_c

    _split_rows(part, h, chunk)
    return counts, lo, hi


def _split_rows(fn: Callable[[int, int], None], h: int, chunk: int) -> None:
    """Run ``fn(first, last)`` over the rows ``[0, h)`` on one thread per CPU (at most
    4), in slices of whole chunks; ``fn`` writes disjoint rows of its outputs and its
    NumPy work releases the GIL."""
    workers = min(4, os.cpu_count() or 1, max(1, h // (8 * chunk)))
    if workers <= 1:
        fn(0, h)
        return
    step = -(-h // (workers * chunk)) * chunk
    with ThreadPoolExecutor(workers) as ex:
        for f in [ex.submit(fn, a, min(h, a + step)) for a in range(0, h, step)]:
            f.result()


# ----------------------------------------------------------------------------- 3-line


@dataclass(frozen=True, slots=True)
class ThreeLine:
    """3-line fits of one percentile, one row per household (NaN when not fitted).

    The model is continuous piecewise linear in temperature ``T`` [degC]::

        y = a + s1 T + (s2 - s1) max(T - k1, 0) + (s3 - s2) max(T - k2, 0)

    so ``s1`` is the heating gradient (left), ``s2`` the base (middle) and ``s3`` the
    cooling gradient (right) [kWh/degC]; ``k1 < k2`` are the breakpoints [degC].
    """

    k1: F64
    k2: F64
    a: F64
    s1: F64
    s2: F64
    s3: F64
    sse: F64
    points: I64


def percentile_points(x: F64, temp: F64, qs: tuple[float, ...]) -> tuple[F64, F64]:
    """The ``qs`` percentiles of consumption at each integer temperature.

    Hours are grouped by ``round(T)``; returns the temperatures ``(B,)`` and the
    percentiles ``(Q, H, B)`` (linear interpolation as ``np.nanpercentile``, NaN where a
    household has no value). Each group's block is sorted along hours (a vectorised
    sort, several times faster than the selection inside ``np.percentile``).
    """
    ok = ~np.isnan(temp)
    tb = np.rint(temp[ok])
    order = np.argsort(tb, kind="stable")
    tb = tb[order]
    cols_of = np.flatnonzero(ok)[order]
    bins, starts = np.unique(tb, return_index=True)
    ends = np.r_[starts[1:], len(tb)]
    out = np.full((len(qs), x.shape[0], len(bins)), np.nan)
    q = np.true_divide(np.asarray(qs, np.float64), 100)
    for j, (a, b) in enumerate(zip(starts, ends)):  # loop over temperature bins, not reads
        block = np.sort(x[:, cols_of[a:b]], axis=1)  # NaN sorts last
        out[:, :, j] = _sorted_quantiles(block, q)
    return bins.astype(np.float64), out


def _sorted_quantiles(v: F64, q: F64) -> F64:
    """Quantiles ``q`` (Q,) of each row of ``v`` (rows sorted, NaN last) by NumPy's
    ``linear`` method (``np.nanpercentile``'s default), shape (Q, rows)."""
    rows, m = v.shape
    n = ((~np.isnan(v)).sum(axis=1) if m and np.isnan(v[:, -1]).any()
         else np.full(rows, m, np.int64))
    out = np.full((len(q), rows), np.nan)
    has = np.flatnonzero(n > 0)
    if len(has) == 0:
        return out
    nn = np.asarray(n, np.float64)[has]
    vv = v[has]
    for k, qk in enumerate(q):
        virtual = qk * (nn - 1)
        lo = np.floor(virtual)
        gamma = virtual - lo
        lo_i = lo.astype(np.int64)
        hi_i = np.minimum(lo_i + 1, nn.astype(np.int64) - 1)
        a = np.take_along_axis(vv, lo_i[:, None], axis=1)[:, 0]
        b = np.take_along_axis(vv, hi_i[:, None], axis=1)[:, 0]
        diff = b - a
        r = a + diff * gamma  # NumPy's _lerp, including its form for gamma >= 0.5
        r = np.where(gamma >= 0.5, b - diff * (1 - gamma), r)
        out[k, has] = r
    return out


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence NumPy's all-NaN-slice warning (those slices stay NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _design(tt: F64, i: int, j: int) -> F64:
    return np.column_stack([np.ones_like(tt), tt, np.maximum(tt - tt[i], 0.0),
                            np.maximum(tt - tt[j], 0.0)])


def _fit_group(tt: F64, yy: F64, *, chunk: int = 2048) -> tuple[F64, F64, F64, F64, F64]:
    """Best breakpoint pair of each column of ``yy`` (B, n); returns k1, k2, coef (n, 4)
    [a, b, c, d], sse and nothing else.

    The SSE of every (household, pair) is ``|y|^2 - |Q_p^T y|^2`` with ``Q_p`` the
    orthonormal basis of pair ``p``'s design: one matrix product of the households
    (``chunk`` at a time) with all the bases side by side; pairs are then scanned in
    order (the first pair wins among SSEs within 1e-9 relative).
    """
    nb, n = yy.shape
    ynorm = (yy * yy).sum(axis=0)
    tol = 1e-9 * (1.0 + ynorm)
    pairs = [(i, j) for i in range(1, nb - 2) for j in range(i + 1, nb - 1)]
    qall = np.concatenate([np.linalg.qr(_design(tt, i, j))[0] for i, j in pairs], axis=1)
    ys = np.ascontiguousarray(yy.T)  # (n, B): a BLAS product
    best_pair = np.zeros(n, np.int64)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        proj = ys[s:e] @ qall  # (m, 4P)
        proj *= proj
        sse = np.ascontiguousarray(
            (ynorm[s:e, None] - proj.reshape(e - s, len(pairs), 4).sum(axis=2)).T)  # (P, m)
        best_sse = np.full(e - s, np.inf)
        bp = np.zeros(e - s, np.int64)
        t = tol[s:e]
        for p in range(len(pairs)):  # O(B^2) pairs, vectorised over households
            better = sse[p] < best_sse - t
            np.copyto(best_sse, sse[p], where=better)
            bp[better] = p
        best_pair[s:e] = bp
    coef = np.zeros((n, 4))
    sse_exact = np.zeros(n)
    k1 = np.zeros(n)
    k2 = np.zeros(n)
    for p in np.unique(best_pair):  # exact fit of each winning pair
        cols = np.flatnonzero(best_pair == p)
        i, j = pairs[p]
        a = _design(tt, i, j)
        c = np.linalg.pinv(a) @ yy[:, cols]
        r = yy[:, cols] - a @ c
        coef[cols] = c.T
        sse_exact[cols] = (r * r).sum(axis=0)
        k1[cols], k2[cols] = tt[i], tt[j]
    return k1, k2, coef, sse_exact, ynorm


def fit_three_line(t: F64, y: F64) -> ThreeLine:
    """Fit the 3-line model to points ``(t[b], y[h, b])`` of every household.

    Breakpoints are searched over the interior points (``t[1] .. t[B-2]``, ``k1 < k2``);
    for each pair the least-squares fit is one projection shared by all households
    (households with a missing point are fitted on their own). The pair of least SSE
    wins, the first one (lowest ``k1``, then ``k2``) among SSEs within ``1e-9`` relative.
    """
    h, nb = y.shape
    res = {k: np.full(h, np.nan) for k in ("k1", "k2", "a", "s1", "s2", "s3", "sse")}
    points = (~np.isnan(y)).sum(axis=1)
    complete = ~np.isnan(y).any(axis=1)
    groups: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]] = []
    if complete.any():
        groups.append((np.flatnonzero(complete), np.ones(nb, bool)))
    for r in np.flatnonzero(~complete):  # rare: households missing a temperature bin
        groups.append((np.array([r]), ~np.isnan(y[r])))
    for rows, use in groups:
        tt = t[use]
        if len(tt) < 4:
            continue
        k1, k2, coef, sse, _ = _fit_group(tt, y[np.ix_(rows, np.flatnonzero(use))].T)
        res["k1"][rows], res["k2"][rows] = k1, k2
        res["a"][rows] = coef[:, 0]
        res["s1"][rows] = coef[:, 1]
        res["s2"][rows] = coef[:, 1] + coef[:, 2]
        res["s3"][rows] = coef[:, 1] + coef[:, 2] + coef[:, 3]
        res["sse"][rows] = sse
    return ThreeLine(points=points, **res)


def threeline(x: F64, temp: F64, percentiles: tuple[float, ...] = (10.0, 90.0)
              ) -> dict[float, ThreeLine]:
    """3-line thermal-sensitivity regression of each household, per percentile.

    Parameters
    ----------
    x : ndarray, shape (H, T)
        Hourly consumption [kWh].
    temp : ndarray, shape (T,)
        Temperature at the same hours [degC].
    """
    bins, y = percentile_points(x, temp, percentiles)
    return {q: fit_three_line(bins, y[i]) for i, q in enumerate(percentiles)}


# ----------------------------------------------------------------------------- PAR


@dataclass(frozen=True, slots=True)
class Par:
    """PAR coefficients, shape (H, 24, 7): ``[c, a1, a2, a3, b_cool, b_heat, b_cold]``;
    ``n`` days used per (household, hour); ``rmse`` of the fit [kWh]."""

    coef: F64
    n: I64
    rmse: F64


PAR_TERMS = ("intercept", "ar1", "ar2", "ar3", "cool", "heat", "cold")


def par(x: F64, temp: F64, *, chunk: int = 256) -> Par:
    """Periodic autoregression of each household's daily profile.

    For hour of day ``k`` (UTC) and day ``d``::

        x[d,k] = c + a1 x[d-1,k] + a2 x[d-2,k] + a3 x[d-3,k]
                 + b_cool max(T[d,k] - 20, 0) + b_heat max(16 - T[d,k], 0)
                 + b_cold max(5 - T[d,k], 0)

    fitted by least squares over the days where all terms are known (minimum-norm
    solution when a term never varies, e.g. no day above 20 degC). Households are
    processed ``chunk`` at a time; each (household, hour) fit is independent of the
    chunking.

    Parameters
    ----------
    x : ndarray, shape (H, 24 * D)
        Hourly consumption [kWh], columns whole days.
    temp : ndarray, shape (24 * D,)
        Temperature [degC].
    """
    h, ncol = x.shape
    d = ncol // 24
    n = d - PAR_LAGS
    p = len(PAR_TERMS)
    coef = np.full((h, 24, p), np.nan)
    used = np.zeros((h, 24), np.int64)
    rmse = np.full((h, 24), np.nan)
    if n <= 0:
        return Par(coef, used, rmse)
    tt = temp[: d * 24].reshape(d, 24).T[:, PAR_LAGS:]  # (24, n)
    tf = np.stack([np.maximum(tt - PAR_COOL_C, 0.0), np.maximum(PAR_HEAT_C - tt, 0.0),
                   np.maximum(PAR_COLD_C - tt, 0.0)])  # (3, 24, n)
    tnan = np.isnan(tt)

    def part(first: int, last: int) -> None:
        for s in range(first, last, chunk):
            y = x[s:s + chunk, : d * 24].reshape(-1, d, 24).transpose(0, 2, 1)  # (hc, 24, d)
            hc = y.shape[0]
            valid = ~np.isnan(y)
            y0 = np.where(valid, y, 0.0)
            w = valid[..., PAR_LAGS:] & ~tnan[None]
            for lag in range(1, PAR_LAGS + 1):
                w &= valid[..., PAR_LAGS - lag:d - lag]
            wf = w.astype(np.float64)
            # features in rows (hc, 24, p, n): each feature a contiguous series of days
            f = np.empty((hc, 24, p, n))
            f[:, :, 0, :] = wf
            for lag in range(1, PAR_LAGS + 1):
                np.multiply(y0[..., PAR_LAGS - lag:d - lag], wf, out=f[:, :, lag, :])
            for j in range(3):
                np.multiply(np.nan_to_num(tf[j])[None], wf, out=f[:, :, PAR_LAGS + 1 + j, :])
            t = y0[..., PAR_LAGS:] * wf
            xtx = f @ f.swapaxes(-1, -2)  # (hc, 24, p, p)
            xty = (f @ t[..., None])[..., 0]
            c = (np.linalg.pinv(xtx, hermitian=True) @ xty[..., None])[..., 0]
            resid = t - (c[..., None, :] @ f)[..., 0, :]
            k = w.sum(axis=-1)
            with np.errstate(invalid="ignore", divide="ignore"):
                rmse[s:s + hc] = np.sqrt((resid * resid).sum(axis=-1) / k)
            c[k == 0] = np.nan
            coef[s:s + hc] = c
            used[s:s + hc] = k

    _split_rows(part, h, chunk)
    return Par(coef, used, rmse)


# ----------------------------------------------------------------------------- similarity


def similarity(x: F64, k: int = 10, *, rows: npt.NDArray[np.int64] | None = None,
               block: int = 1024, method: str = "auto", candidates: int = 128,
               dims: int = 64) -> tuple[I64, F64]:
    """Top-``k`` most similar households by cosine similarity of their series.

    Missing hours count as 0. A household's own row is excluded; equal cosines rank the
    lower row first (a tie across the k-th place keeps an arbitrary one of them); a
    household of all zeros has cosine 0 with every other. Returned cosines are exact
    (float64 dot products of the unit-normalised series).

    ``method="exact"`` compares every pair (float64 matrix products in blocks of
    ``block`` households, O(H^2 T) flops); ``"projected"`` re-ranks exactly the
    ``candidates`` best of each row in a ``dims``-dimensional principal subspace
    (O(H^2 dims + H candidates T); recall measured, see
    :mod:`headend.analytics.similarity`); ``"auto"`` is exact up to
    :data:`~headend.analytics.similarity.AUTO_EXACT_MAX` households.

    Parameters
    ----------
    x : ndarray, shape (H, T)
        Every household (the candidates).
    k : int
        Neighbours per household.
    rows : ndarray of int64, optional
        Rows to find neighbours for (default: all); Spark passes its partition's rows.

    Returns
    -------
    other : ndarray of int64, shape (R, k')
        Row index of each neighbour, best first; ``k' = min(k, H - 1)``.
    cosine : ndarray of float64, shape (R, k')

    Raises
    ------
    ConfigError
        Unknown ``method``.
    """
    from headend.analytics.similarity import top_k

    return top_k(x, k, rows=rows, method=method, block=block, dims=dims,
                 candidates=candidates)


# ----------------------------------------------------------------------------- anomaly


def anomaly(daily: F64, day: int, *, threshold: float = 3.0, min_history: int = 7
            ) -> tuple[F64, F64, F64, F64, npt.NDArray[np.bool_]]:
    """Daily consumption of ``day`` against the household's own previous days.

    ``z = (E[day] - mean(E[:day])) / std(E[:day])`` with the sample standard deviation
    (``ddof = 1``) over the complete previous days; anomalous when ``|z| > threshold``
    and at least ``min_history`` days exist. NaN ``z`` when the history is too short or
    flat.

    Returns
    -------
    total, mean, std, z : ndarray, shape (H,)
        [kWh], [kWh], [kWh], [-].
    flag : ndarray of bool, shape (H,)
    """
    hist = daily[:, :day]
    ok = ~np.isnan(hist)
    n = ok.sum(axis=1)
    hz = np.where(ok, hist, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = hz.sum(axis=1) / n
        var = (np.where(ok, hist - mean[:, None], 0.0) ** 2).sum(axis=1) / (n - 1)
        std = np.sqrt(var)
        total = daily[:, day]
        z = (total - mean) / std
    short = (n < max(min_history, 2)) | ~(std > 0)
    z = np.where(short, np.nan, z)
    mean = np.where(n > 0, mean, np.nan)
    std = np.where(n > 1, std, np.nan)
    flag = ~np.isnan(z) & (np.abs(z) > threshold)
    return total, mean, std, z, flag
