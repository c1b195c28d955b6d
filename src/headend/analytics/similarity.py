"""Top-k cosine similarity of households (Liu et al. 2016, Sec. 3.4): exact and projected.

Two kernels with one contract (the ``k`` best other households of each row, best first,
their cosines computed exactly in float64, equal cosines ranking the lower row first):

``exact``
    Every pair: float64 matrix products in row blocks, O(H^2 T) flops. At the paper's
    shape (27,300 x 8,760) that is 6.5e12 multiply-adds, several minutes on two cores.
``projected``
    Candidates from a reduced space, then an exact re-rank:

    1. the unit-normalised series ``u`` (H, T) are projected on an orthonormal basis
       ``V`` (T, d) approximating the top ``d`` principal directions (uncentred) of a
       seeded sample of ``sample`` households (``p = u V``; randomised range finder);
    2. ``p p^T`` (float32 GEMM in row blocks, O(H^2 d)) ranks the others of each row;
       the ``candidates`` best are kept (``np.argpartition``);
    3. the candidates are screened with float32 cosines of the full series; the best
       ``exact`` (16) of them get their exact cosine (float64 dot product of the full
       series), which ranks the ``k`` returned.

    Every returned cosine is exact; a true neighbour is missed only when it is not
    among the candidates or the float32 screen drops it (differences below ~1e-6). Because ``V`` is orthonormal, ``u_i . u_j = p_i . p_j +
    r_i . r_j`` with residuals ``r`` of norm ``sqrt(1 - |p|^2)``: the neighbours are
    exact whenever the data lie in the span of ``V`` (rank <= d) and whenever
    ``candidates >= H - 1`` (up to the float32 screen). On other data recall@k is measured (docs/analytics.md).

``auto`` (the default) is ``exact`` up to :data:`AUTO_EXACT_MAX` households and
``projected`` above.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["AUTO_EXACT_MAX", "METHODS", "exact_topk", "projected_topk", "recall_at_k",
           "top_k", "unit_rows"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: ``auto`` uses the exact kernel up to this many households
AUTO_EXACT_MAX = 4096
METHODS = ("auto", "exact", "projected")


def unit_rows(x: F64) -> F64:
    """Rows scaled to unit Euclidean norm, NaN as 0; rows of zeros stay zero."""
    z = np.nan_to_num(x)
    norm = np.sqrt(np.einsum("ij,ij->i", z, z))
    with np.errstate(invalid="ignore", divide="ignore"):
        z /= np.where(norm > 0, norm, np.inf)[:, None]
    return z


def _rank(cand: I64, vals: F64, kk: int) -> tuple[I64, F64]:
    """The ``kk`` best of each row of ``(cand, vals)``: cosine descending, then row."""
    if cand.shape[1] > kk:
        part = np.argpartition(-vals, kk - 1, axis=1)[:, :kk]
        cand = np.take_along_axis(cand, part, axis=1)
        vals = np.take_along_axis(vals, part, axis=1)
    order = np.lexsort((cand, -vals), axis=-1)
    return np.take_along_axis(cand, order, axis=1), np.take_along_axis(vals, order, axis=1)


def exact_topk(u: F64, rows: I64, kk: int, block: int = 1024) -> tuple[I64, F64]:
    """Exact top-``kk`` of ``rows`` against every row of unit-norm ``u`` (float64)."""
    other = np.empty((len(rows), kk), np.int64)
    cos = np.empty((len(rows), kk))
    for s in range(0, len(rows), block):
        r = rows[s:s + block]
        c = u[r] @ u.T  # (b, H)
        c[np.arange(len(r)), r] = -np.inf
        part = np.argpartition(-c, kk - 1, axis=1)[:, :kk]
        other[s:s + len(r)], cos[s:s + len(r)] = _rank(
            part, np.take_along_axis(c, part, axis=1), kk)
    return other, cos


def basis(u: npt.NDArray[np.floating[Any]], dims: int, sample: int, seed: int = 0, power: int = 2) -> F64:
    """Orthonormal ``(T, d)`` basis approximating the top ``d`` principal directions
    (uncentred) of a seeded sample of rows, ``d = min(dims, sample, T)``.

    Randomised range finder with ``power`` power iterations (Halko, Martinsson, Tropp,
    SIAM Review 53(2), 2011, Alg. 4.4): ``Y = S^T (S S^T)^q S^T Omega`` orthonormalised
    by QR after each product.
    """
    h, t = u.shape
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(h, size=min(sample, h), replace=False))
    s = u[pick].astype(np.float64)
    d = min(dims, len(pick), t)
    q, _ = np.linalg.qr(s.T @ rng.standard_normal((len(pick), d)))  # (T, d)
    for _ in range(power):
        q, _ = np.linalg.qr(s.T @ (s @ q))
    return q


def _cutoffs(a: npt.NDArray[np.float32], c: int, stride: int = 16) -> npt.NDArray[np.float32]:
    """Per row a value below which the ``c`` largest of the row most likely do not lie:
    the ``2 c / stride``-th largest of every ``stride``-th column (about ``2 c`` values
    of the row reach it); ``-inf`` (no cut) for short rows."""
    n = a.shape[1]
    if n < 64 * c:
        return np.full(a.shape[0], -np.inf, np.float32)
    rank = -(-2 * c // stride)
    return np.partition(a[:, ::stride], -rank, axis=1)[:, -rank]


def _top(row: npt.NDArray[np.float32], c: int, cut: float) -> I64:
    """Indices of the ``c`` largest values of ``row`` (``np.argpartition``), looking only
    at the values ``>= cut`` when there are at least ``c`` of them."""
    cols = np.flatnonzero(row >= cut) if cut > -np.inf else None
    if cols is None or len(cols) < c:
        return np.argpartition(row, len(row) - c)[len(row) - c:].astype(np.int64)
    return cols[np.argpartition(row[cols], len(cols) - c)[len(cols) - c:]].astype(np.int64)


def projected_topk(z: F64, rows: I64, kk: int, *, dims: int = 64, candidates: int = 128,
                   exact: int = 16, sample: int = 2000, block: int = 1024, seed: int = 0,
                   workers: int | None = None) -> tuple[I64, F64]:
    """Top-``kk`` by exact cosine among candidates from the projected space.

    ``z`` (H, T) are the series with NaN as 0. For each row the ``candidates`` best in
    the ``dims``-dimensional subspace are screened with float32 cosines of the full
    series, and the ``max(exact, kk)`` best of those get their exact float64 cosine
    ``z_i . z_j / (|z_i| |z_j|)``, which ranks the result. Row blocks run on
    ``workers`` threads (default: one per CPU; NumPy releases the GIL in the partition
    and the products).
    """
    h = z.shape[0]
    c = min(max(candidates, kk), h - 1)
    m = min(max(exact, kk), c)
    norm = np.sqrt(np.einsum("ij,ij->i", z, z))
    inv = np.where(norm > 0, 1.0 / np.where(norm > 0, norm, 1.0), 0.0)
    u32 = np.empty(z.shape, np.float32)
    for s in range(0, h, 4096):  # unit rows in float32, without a float64 temporary
        np.multiply(z[s:s + 4096], inv[s:s + 4096, None], out=u32[s:s + 4096],
                    casting="same_kind")
    v = basis(u32, dims, sample, seed).astype(np.float32)
    p = u32 @ v  # (H, d)
    pt = np.ascontiguousarray(p.T)
    other = np.empty((len(rows), kk), np.int64)
    cos = np.empty((len(rows), kk))

    def run(s: int) -> None:
        r = rows[s:s + block]
        a = p[r] @ pt  # (b, H) float32 approximate cosines
        a[np.arange(len(r)), r] = -np.inf
        cut = _cutoffs(a, c)
        best = np.empty((len(r), m), np.int64)
        val = np.empty((len(r), m))
        for i, ri in enumerate(r):
            ci = _top(a[i], c, cut[i])
            if c > m:  # float32 screen over the full series
                sc = np.einsum("ct,t->c", u32[ci], u32[ri])
                ci = ci[np.argpartition(sc, c - m)[c - m:]]
            best[i] = ci
            val[i] = np.einsum("ct,t->c", z[ci], z[ri]) * (inv[ci] * inv[ri])  # exact
        other[s:s + len(r)], cos[s:s + len(r)] = _rank(best, val, kk)

    n = workers or os.cpu_count() or 1
    starts = range(0, len(rows), block)
    if n <= 1 or len(rows) <= block:
        for s in starts:
            run(s)
    else:
        with ThreadPoolExecutor(n) as ex:
            list(ex.map(run, starts))
    return other, cos


def top_k(x: F64, k: int = 10, *, rows: I64 | None = None, method: str = "auto",
          block: int = 1024, dims: int = 64, candidates: int = 128, sample: int = 2000
          ) -> tuple[I64, F64]:
    """See :func:`headend.analytics.liu.similarity`."""
    if method not in METHODS:
        from headend.errors import ConfigError

        raise ConfigError(f"unknown similarity method {method!r}; choose one of "
                          f"{', '.join(METHODS)}")
    h = x.shape[0]
    rows = np.arange(h) if rows is None else np.asarray(rows, np.int64)
    kk = min(k, h - 1)
    if kk <= 0:
        return np.empty((len(rows), 0), np.int64), np.empty((len(rows), 0))
    if method == "exact" or (method == "auto" and h <= AUTO_EXACT_MAX):
        return exact_topk(unit_rows(x), rows, kk, block)
    z = np.nan_to_num(x) if np.isnan(x).any() else x
    return projected_topk(z, rows, kk, dims=dims, candidates=candidates, sample=sample)


def recall_at_k(found: I64, truth: I64) -> float:
    """Share of the true neighbours (rows of ``truth``) that ``found`` contains."""
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth))
    return hits / truth.size if truth.size else 1.0
