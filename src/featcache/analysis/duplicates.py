"""Near-duplicate pairs from two signals, and the groups they form.

Each candidate pair (found by the vector search or the hash search) gets both similarities,
exactly: the centred cosine of the full cached vectors and the cosine of the perceptual hashes
(``1 - 2·Hamming/64``). Its `similarity` is their mean, which ranks it: small self-similar
pictures (digits) have many look-alikes by either signal alone, but a resized, re-encoded or
shifted copy is close by both. Pairs at or above `group_similarity` (or very close by one
signal alone) join a group; groups are the connected components (scipy.sparse.csgraph).
Everything here works on distinct image keys: rows sharing a key are exact duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featcache.analysis.folds import one_blas_thread
from featcache.analysis.neighbours import (
    VectorIndex,
    hash_candidates,
    hash_similarity,
    vector_neighbours,
)
from featcache.errors import ConfigError

__all__ = ["NearDuplicateConfig", "NearPairs", "connected_groups", "near_duplicate_pairs"]


@dataclass(frozen=True)
class NearDuplicateConfig:
    """Thresholds of the near-duplicate search (cosines in [-1, 1]).

    `list_similarity`: pairs listed (mean of both cosines); `group_similarity`: pairs grouped;
    `vector_alone` / `hash_alone`: one signal that high groups a pair by itself (the other
    may be missing: no hash recorded, or a copy the network maps elsewhere).
    """

    neighbours: int = 10
    search_dims: int = 128
    cell_rows: int = 4096
    probes: int = 3
    list_similarity: float = 0.6
    group_similarity: float = 0.85
    vector_alone: float = 0.97
    hash_alone: float = 0.94  # at most 2 of 64 bits apart

    def __post_init__(self) -> None:
        for name in ("neighbours", "search_dims", "cell_rows", "probes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"The '{name}' must be >= 1. Got {getattr(self, name)}.")
        for name in ("list_similarity", "group_similarity", "vector_alone", "hash_alone"):
            value = getattr(self, name)
            if not -1.0 <= value <= 1.0:
                raise ConfigError(f"The '{name}' must be a cosine in [-1, 1]. Got {value}.")


@dataclass(frozen=True)
class NearPairs:
    """Pairs of distinct keys (indices into the key list), ranked by `similarity`."""

    a: np.ndarray
    b: np.ndarray
    vector: np.ndarray  # centred cosine of the full vectors
    hash: np.ndarray  # cosine of the hashes (nan where a hash is missing)
    similarity: np.ndarray
    grouped: np.ndarray  # bool: the pair joins a group
    neighbours_exact: bool
    knn_index: np.ndarray  # (K, k) nearest keys by vector, for the outlier score
    knn_similarity: np.ndarray
    vectors: VectorIndex


def near_duplicate_pairs(
    X: np.ndarray,
    hashes: np.ndarray | None,
    has_hash: np.ndarray | None,
    config: NearDuplicateConfig,
    *,
    seed: int = 0,
) -> NearPairs:
    """Candidate pairs of the rows of `X` (one per distinct key), scored by both signals.

    `hashes` is (K, 40) uint8, `has_hash` marks rows whose hash is known.
    """
    with one_blas_thread():
        return _pairs(X, hashes, has_hash, config, seed)


def _pairs(
    X: np.ndarray,
    hashes: np.ndarray | None,
    has_hash: np.ndarray | None,
    config: NearDuplicateConfig,
    seed: int,
) -> NearPairs:
    vi = VectorIndex.build(X)
    nb = vector_neighbours(
        vi,
        config.neighbours,
        search_dims=config.search_dims,
        cell_rows=config.cell_rows,
        probes=config.probes,
        seed=seed,
    )
    rows = np.repeat(np.arange(len(X)), nb.index.shape[1])
    cols = nb.index.ravel()
    # A pair listed at `list_similarity` (the mean of both cosines, each at most 1) that is
    # below list - 0.1 by one signal is above list + 0.1 by the other, and found by that
    # one's search: each search only passes on its own pairs from list - 0.1 up.
    keep = (cols >= 0) & (nb.similarity.ravel() >= config.list_similarity - 0.1)
    parts = [np.stack([rows[keep], cols[keep]], axis=1)]
    if hashes is not None and has_hash is not None and has_hash.any():
        known = np.flatnonzero(has_hash)
        ha, hb = hash_candidates(hashes[known], seed=seed)
        close = hash_similarity(hashes[known], ha, hb) >= config.list_similarity - 0.1
        parts.append(np.stack([known[ha[close]], known[hb[close]]], axis=1))
    pairs = np.concatenate(parts)
    low, high = pairs.min(axis=1).astype(np.int64), pairs.max(axis=1).astype(np.int64)
    unique = np.unique(low * len(X) + high)
    a, b = (unique // len(X)).astype(np.intp), (unique % len(X)).astype(np.intp)
    vector = vi.cosine(a, b)
    hash_sim = np.full(len(a), np.nan)
    if hashes is not None and has_hash is not None:
        both = has_hash[a] & has_hash[b]
        hash_sim[both] = hash_similarity(hashes, a[both], b[both])
    # Without a hash for both, the vector alone speaks (halfway to its own threshold).
    similarity = np.where(np.isnan(hash_sim), vector, (vector + np.nan_to_num(hash_sim)) / 2)
    keep = similarity >= config.list_similarity
    keep |= vector >= config.vector_alone
    keep |= np.nan_to_num(hash_sim, nan=-1.0) >= config.hash_alone
    a, b, vector, hash_sim, similarity = (v[keep] for v in (a, b, vector, hash_sim, similarity))
    grouped = (
        (similarity >= config.group_similarity)
        | (vector >= config.vector_alone)
        | (np.nan_to_num(hash_sim, nan=-1.0) >= config.hash_alone)
    )
    order = np.argsort(-similarity, kind="stable")
    return NearPairs(
        a[order],
        b[order],
        vector[order],
        hash_sim[order],
        similarity[order],
        grouped[order],
        nb.exact,
        nb.index,
        nb.similarity,
        vi,
    )


def connected_groups(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component number of each of `n` nodes linked by edges (a[i], b[i])."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return np.asarray(labels, dtype=np.int64)
