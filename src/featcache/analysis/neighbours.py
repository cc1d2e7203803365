"""Neighbour search on cached vectors and on perceptual hashes, memory bounded.

Vectors are compared by the cosine of their *centred* versions (the dataset mean removed), so
vectors that share a large common component, as ReLU features do, do not all look alike.

Search: every row against every other is N² pairs (2.7 billion for GTSRB-sized data); on two
shared cores even the elementwise pass over them takes minutes. So rows are first projected
on their leading principal directions (`search_dims`, from a sample) and sorted into cells by
spherical k-means; each row is compared, by matrix products, with the rows of the
`probes` cells nearest to its own. With one cell (up to `cell_rows` rows) that is the exact
brute-force search; near-duplicates (cosine ≥ 0.9) sit in the same or a neighbouring cell.
Candidate pairs are then re-scored exactly on the full vectors. Why not faiss: its exact
index does the same matrix products (no gain), its fast ones are this same inverted-file
idea, and it would be a compiled dependency for one function.
Hashes are searched by locality-sensitive hashing on random subsets of their bits.

X may be an in-memory array or a `featcache.store.StoredRows` (vectors left in the store's
shards): every pass reads `_CHUNK` rows at a time through `_read`, so the working set is the
search space (`search_dims` floats a row) plus one block, whatever the full dimension.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from featcache.data.phash import HASH_BITS, base_hash, hash_distance
from featcache.errors import ConfigError

__all__ = [
    "Neighbours",
    "VectorIndex",
    "hash_candidates",
    "hash_similarity",
    "vector_neighbours",
]

_CHUNK = 2048  # rows per block: a block of products stays within ~40 MB
# Rows searched at once: their products with a pool of candidates (~12k) stay in the CPU's
# cache for the top-k pass that follows (measured: 2x faster products than 2,048 rows).
_SEARCH_ROWS = 512


def _read(X: Any, index: slice | np.ndarray) -> np.ndarray:
    """Rows of X (an array, or a row source read on demand such as `StoredRows`)."""
    if hasattr(X, "read_rows"):
        rows = np.arange(X.shape[0])[index] if isinstance(index, slice) else np.asarray(index)
        block: np.ndarray = X.read_rows(rows)
        return block
    return np.asarray(X[index])


@dataclass(frozen=True)
class VectorIndex:
    """What the full-dimension re-scoring needs: the mean, each row's centred norm and x·mean."""

    X: Any  # an array or a row source (`StoredRows`), read a block at a time
    mean: np.ndarray
    norms: np.ndarray
    dot_mean: np.ndarray

    @classmethod
    def build(cls, X: Any) -> VectorIndex:
        mean = np.zeros(X.shape[1])
        for start in range(0, len(X), _CHUNK):
            mean += _read(X, slice(start, start + _CHUNK)).sum(axis=0, dtype=np.float64)
        mean = (mean / max(1, len(X))).astype(np.float32)
        dot_mean = np.empty(len(X), np.float64)
        squares = np.empty(len(X), np.float64)
        for start in range(0, len(X), _CHUNK):
            block = _read(X, slice(start, start + _CHUNK))
            dot_mean[start : start + len(block)] = block @ mean
            squares[start : start + len(block)] = np.einsum("ij,ij->i", block, block)
        centred = squares - 2 * dot_mean + float(mean @ mean)
        norms = np.sqrt(np.maximum(centred, 0.0))
        norms[norms < 1e-12] = 1.0  # a row equal to the mean: cosine 0 with everything
        return cls(X, mean, norms, dot_mean)

    def unit_block(self, start: int, stop: int) -> np.ndarray:
        block: np.ndarray = _read(self.X, slice(start, stop)) - self.mean
        block /= self.norms[start:stop, None].astype(np.float32)
        return block

    def cosine(self, a: np.ndarray, b: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """Exact centred cosine of the row pairs (a[i], b[i])."""
        out = np.empty(len(a), np.float64)
        mm = float(self.mean @ self.mean)
        for s in range(0, len(a), chunk):
            ia, ib = a[s : s + chunk], b[s : s + chunk]
            xa, xb = _read(self.X, ia), _read(self.X, ib)
            dots = np.einsum("ij,ij->i", xa, xb, dtype=np.float64)
            out[s : s + chunk] = (dots - self.dot_mean[ia] - self.dot_mean[ib] + mm) / (
                self.norms[ia] * self.norms[ib]
            )
        return np.clip(out, -1.0, 1.0)


@dataclass(frozen=True)
class Neighbours:
    """The `k` nearest rows of every row (by centred cosine in the search space), best first."""

    index: np.ndarray  # (N, k) row numbers, -1 where a row has fewer than k others
    similarity: np.ndarray  # (N, k) cosine, -inf where missing
    exact: bool  # True when the search compared every pair in the full dimension


def _project(vi: VectorIndex, dims: int, seed: int) -> np.ndarray:
    """Unit rows projected on `dims` principal directions (from a sample), renormalised."""
    n, d = vi.X.shape
    if dims >= d:
        Z = np.empty((n, d), np.float32)
        for start in range(0, n, _CHUNK):
            Z[start : start + _CHUNK] = vi.unit_block(start, min(n, start + _CHUNK))
        return Z
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, 8 * dims + 1024), replace=False))
    S = ((_read(vi.X, sample) - vi.mean) / vi.norms[sample, None]).astype(np.float64)
    # Randomised range finder with two power iterations (Halko et al. 2011); the small
    # orthonormalisations go through an eigendecomposition of (l x l) Gram matrices.
    Y = S.T @ rng.standard_normal((len(sample), dims + 16))
    for _ in range(3):
        Q = _orthonormal(Y)
        Y = S.T @ (S @ Q)
    Q = _orthonormal(Y)
    _, _, vt = np.linalg.svd(S @ Q, full_matrices=False)
    basis = (Q @ vt.T)[:, :dims].astype(np.float32)
    Z = np.empty((n, dims), np.float32)
    for start in range(0, n, _CHUNK):
        Z[start : start + _CHUNK] = vi.unit_block(start, min(n, start + _CHUNK)) @ basis
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    Z /= np.maximum(norms, 1e-12)
    return Z


def _top_k(S: np.ndarray, k: int, block: int = 64) -> np.ndarray:
    """Column indices of each row's `k` largest values (unordered).

    Through the maxima of blocks of `block` columns: the k largest values lie in the k
    blocks with the largest maxima, so a full partition runs only on those. A block maximum
    is a fast reduction; a partition of every value was most of the search's time.
    """
    rows, cols = S.shape
    if cols <= 8 * block or k * block * 4 >= cols:
        top: np.ndarray = np.argpartition(-S, k - 1, axis=1)[:, :k]
        return top
    pad = (-cols) % block
    if pad:
        S = np.concatenate([S, np.full((rows, pad), -np.inf, S.dtype)], axis=1)
    maxima = S.reshape(rows, -1, block).max(axis=2)
    blocks = np.argpartition(-maxima, k - 1, axis=1)[:, :k]
    candidates = (blocks[:, :, None] * block + np.arange(block)).reshape(rows, -1)
    values = np.take_along_axis(S, candidates, axis=1)
    best = np.argpartition(-values, k - 1, axis=1)[:, :k]
    chosen: np.ndarray = np.take_along_axis(candidates, best, axis=1)
    return chosen


def _orthonormal(Y: np.ndarray) -> np.ndarray:
    """An orthonormal basis of Y's columns (Y is tall and thin)."""
    values, vectors = np.linalg.eigh(Y.T @ Y)
    keep = values > values.max() * 1e-10
    basis: np.ndarray = Y @ (vectors[:, keep] / np.sqrt(values[keep]))
    return basis


def _cells(Z: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means (10 rounds, from a sample): each row's cell, and the centroids."""
    rng = np.random.default_rng(seed)
    sample = Z[rng.choice(len(Z), size=min(len(Z), 64 * count), replace=False)]
    centroids = sample[rng.choice(len(sample), size=count, replace=False)].copy()
    for _ in range(10):
        near = np.argmax(sample @ centroids.T, axis=1)
        for c in range(count):
            members = sample[near == c]
            if len(members):
                centroids[c] = members.sum(axis=0)
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    cell = np.empty(len(Z), np.intp)
    for start in range(0, len(Z), _CHUNK):
        cell[start : start + _CHUNK] = np.argmax(Z[start : start + _CHUNK] @ centroids.T, axis=1)
    return cell, centroids


def vector_neighbours(
    vi: VectorIndex,
    k: int = 10,
    *,
    search_dims: int = 128,
    cell_rows: int = 4096,
    probes: int = 3,
    seed: int = 0,
) -> Neighbours:
    """The `k` nearest rows of every row; exact (full dimension, all pairs) if N ≤ `cell_rows`."""
    if k < 1 or search_dims < 1 or cell_rows < 1 or probes < 1:
        raise ConfigError(
            f"k, search_dims, cell_rows and probes must be >= 1. Got {k}, {search_dims}, "
            f"{cell_rows}, {probes}."
        )
    n = len(vi.X)
    # A single cell is searched exactly, in the full dimension.
    Z = _project(vi, search_dims if n > cell_rows else vi.X.shape[1], seed)
    count = max(1, -(-n // cell_rows))
    if count == 1:
        cell = np.zeros(n, np.intp)
        centroids = np.zeros((1, Z.shape[1]), np.float32)
    else:
        cell, centroids = _cells(Z, count, seed)
    probes = min(probes, count)
    nearest_cells = np.argsort(-(centroids @ centroids.T), axis=1)[:, :probes]
    k_eff = min(k, max(0, n - 1))
    index = np.full((n, k), -1, np.intp)
    similarity = np.full((n, k), -np.inf, np.float32)
    members = [np.flatnonzero(cell == c) for c in range(count)]
    for c in range(count):
        rows = members[c]
        if not len(rows) or not k_eff:
            continue
        pool = np.concatenate([members[p] for p in nearest_cells[c]])
        candidates = Z[pool]
        for start in range(0, len(rows), _SEARCH_ROWS):
            part = rows[start : start + _SEARCH_ROWS]
            S = Z[part] @ candidates.T
            S[pool[None, :] == part[:, None]] = -np.inf  # not oneself
            kk = min(k_eff, len(pool) - 1)
            if kk < 1:
                continue
            top = _top_k(S, kk)
            sims = np.take_along_axis(S, top, axis=1)
            order = np.argsort(-sims, axis=1, kind="stable")
            index[part, :kk] = pool[np.take_along_axis(top, order, axis=1)]
            similarity[part, :kk] = np.take_along_axis(sims, order, axis=1)
    exact = count == 1
    return Neighbours(index, similarity, exact)


def hash_similarity(records: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of the hashes of rows a[i] and b[i] read as ±1 vectors: 1 - 2·Hamming/64, with
    the Hamming distance of the closest shifted variants (`featcache.data.phash`)."""
    return 1.0 - 2.0 * hash_distance(records, a, b) / HASH_BITS


def hash_candidates(
    hashes: np.ndarray,  # (N, 40) records; the unshifted hashes are searched
    *,
    tables: int = 16,
    bits_per_table: int = 12,
    window: int = 32,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (i < j) whose hashes agree on all bits of at least one random bit subset.

    Two hashes `h` bits apart out of 64 meet in one table with probability about
    ((64 - h) / 64) ** bits_per_table: with 16 tables of 12 bits, 97% at h = 8, 75% at
    h = 12. Rows are sorted by their bits in each table and paired with the next `window`
    rows of the same bits, which bounds the work where many pictures share a hash (flat ones).
    """
    bits = np.unpackbits(base_hash(hashes), axis=1)
    rng = np.random.default_rng(seed)
    weights = (1 << np.arange(bits_per_table)).astype(np.int64)
    found_a: list[np.ndarray] = []
    found_b: list[np.ndarray] = []
    for _ in range(tables):
        chosen = rng.choice(bits.shape[1], size=bits_per_table, replace=False)
        code = bits[:, chosen].astype(np.int64) @ weights
        order = np.argsort(code, kind="stable")
        ranked = code[order]
        for offset in range(1, min(window, len(order) - 1) + 1):
            same = ranked[:-offset] == ranked[offset:]
            if not same.any():
                break
            found_a.append(order[:-offset][same])
            found_b.append(order[offset:][same])
    if not found_a:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    a, b = np.concatenate(found_a), np.concatenate(found_b)
    low, high = np.minimum(a, b), np.maximum(a, b)
    unique = np.unique(low.astype(np.int64) * len(hashes) + high)
    return (unique // len(hashes)).astype(np.intp), (unique % len(hashes)).astype(np.intp)
