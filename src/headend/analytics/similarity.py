"""Top-k cosine similarity of households (Liu et al. 2016, Sec. 3.4): exact and projected.

Two kernels with one contract (the ``k`` best other households of each row, best first,
their cosines computed exactly in float64, equal cosines ranking the lower row first):

``exact``
    Every pair: float64 matrix products in row blocks, O(H^2 T) flops. At the paper's
    shape (27,300 x 8,760) that is 6.5e12 multiply-adds, several minutes on two cores.
``projected``
    Candidates from a reduced space, then an exact re-rank:

    1. the unit-normalised series ``u`` (H, T) are projected on an orthonormal basis
       ``V`` (T, d) of the top ``d`` principal directions (uncentred) of a seeded sample
       of ``sample`` households (``p = u V``);
    2. ``p p^T`` (float32 GEMM in row blocks, O(H^2 d)) ranks the others of each row;
       the ``candidates`` best are kept (``np.argpartition``);
    3. each candidate's cosine is recomputed exactly (float64 dot product of the full
       series) and the ``k`` best of them are returned.

    Every returned cosine is exact; a true neighbour is missed only when it is not
    among the candidates. Because ``V`` is orthonormal, ``u_i . u_j = p_i . p_j +
    r_i . r_j`` with residuals ``r`` of norm ``sqrt(1 - |p|^2)``: the neighbours are
    exact whenever the data lie in the span of ``V`` (rank <= d) and whenever
    ``candidates >= H - 1``. On other data recall@k is measured (docs/analytics.md).

``auto`` (the default) is ``exact`` up to :data:`AUTO_EXACT_MAX` households and
``projected`` above.
"""

from __future__ import annotations

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


def basis(u: F64, dims: int, sample: int, seed: int = 0) -> F64:
    """Orthonormal ``(T, d)`` basis of the top ``d`` principal directions (uncentred)
    of a seeded sample of rows; ``d <= min(dims, sample, T)``."""
    h, t = u.shape
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(h, size=min(sample, h), replace=False))
    s = u[pick]
    g = s @ s.T  # (n, n) Gram matrix: eigenvectors -> right singular vectors
    w, e = np.linalg.eigh(g)
    keep = np.argsort(w)[::-1][:min(dims, t)]
    keep = keep[w[keep] > w.max() * 1e-12] if w.max() > 0 else keep[:0]
    v = s.T @ (e[:, keep] / np.sqrt(w[keep]))  # (T, d), orthonormal up to rounding
    q, _ = np.linalg.qr(v)  # re-orthonormalise
    return q


def projected_topk(u: F64, rows: I64, kk: int, *, dims: int = 128, candidates: int = 64,
                   sample: int = 2000, block: int = 2048, seed: int = 0
                   ) -> tuple[I64, F64]:
    """Top-``kk`` by exact cosine among the ``candidates`` best in the projected space."""
    h = u.shape[0]
    c = min(max(candidates, kk), h - 1)
    v = basis(u, dims, sample, seed)
    p = (u @ v).astype(np.float32)  # (H, d)
    pt = np.ascontiguousarray(p.T)
    other = np.empty((len(rows), kk), np.int64)
    cos = np.empty((len(rows), kk))
    for s in range(0, len(rows), block):
        r = rows[s:s + block]
        a = p[r] @ pt  # (b, H) float32 approximate cosines
        a[np.arange(len(r)), r] = -np.inf
        cand = np.argpartition(-a, c - 1, axis=1)[:, :c].astype(np.int64)
        exact = np.empty(cand.shape)
        for i, ri in enumerate(r):  # exact float64 re-rank: one small GEMV per row
            exact[i] = u[cand[i]] @ u[ri]
        other[s:s + len(r)], cos[s:s + len(r)] = _rank(cand, exact, kk)
    return other, cos


def top_k(x: F64, k: int = 10, *, rows: I64 | None = None, method: str = "auto",
          block: int = 1024, dims: int = 128, candidates: int = 64, sample: int = 2000
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
    u = unit_rows(x)
    if method == "exact" or (method == "auto" and h <= AUTO_EXACT_MAX):
        return exact_topk(u, rows, kk, block)
    return projected_topk(u, rows, kk, dims=dims, candidates=candidates, sample=sample)


def recall_at_k(found: I64, truth: I64) -> float:
    """Share of the true neighbours (rows of ``truth``) that ``found`` contains."""
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth))
    return hits / truth.size if truth.size else 1.0
