"""Near-duplicate pairs from two signals, and the groups they form.

Each candidate pair (found by the vector search or the hash search) gets both similarities,
exactly: the centred cosine of the full cached vectors and the cosine of the perceptual hashes
(``1 - 2·Hamming/64``). Its `similarity` is their mean, which ranks it.

A pair joins a group only when **both signals agree** (`NearDuplicateConfig.agreement`): the
hashes at most a few bits apart *and* the vectors close, the closer the hashes the lower the
vector cosine asked for. Neither signal alone is enough, measured on plain data with no
copies (README, "doctor"): small self-similar pictures (digit scans) have look-alikes 2–4 bits
apart by the hash, and with random weights blank or textured patches have vector cosines up to
0.9999 with hashes that disagree. A pair without a hash on both sides is listed, never
grouped (exact copies share a content key and need no rule). Groups are the connected
components (scipy.sparse.csgraph). Everything here works on distinct image keys: rows sharing
a key are exact duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from featcache.analysis.folds import one_blas_thread
from featcache.analysis.neighbours import (
    VectorIndex,
    hash_candidates,
    hash_similarity,
    vector_neighbours,
)
from featcache.data.phash import HASH_BITS
from featcache.errors import ConfigError

__all__ = [
    "AGREEMENT",
    "NearDuplicateConfig",
    "NearPairs",
    "agreeing",
    "connected_groups",
    "near_duplicate_pairs",
]


#: (hash bits apart at most, vector cosine at least): a pair meeting one row is grouped.
#: Calibrated (README, "doctor"): no pair of distinct plain pictures met any row; every
#: planted copy (resized, JPEG re-encoded, shifted one pixel) met one.
AGREEMENT: tuple[tuple[int, float], ...] = ((0, 0.7), (2, 0.95), (4, 0.98))


@dataclass(frozen=True)
class NearDuplicateConfig:
    """Thresholds of the near-duplicate search (cosines in [-1, 1]).

    `list_similarity`: candidate pairs kept (mean of both cosines); `agreement`: rows of
    (hash bits apart at most, vector cosine at least), a pair meeting any row is grouped;
    `review`: how many of the closest pairs that are *not* grouped are listed beside the
    grouped ones, for a person to look at. `rescore_pairs`: candidates re-scored on the full
    vectors besides those the hashes could group (at most the largest `agreement` bits
    apart, always re-scored): the ones the searches found closest. Each re-score reads two
    scattered vectors; a million images give up to ten million candidates, and only the
    grouped pairs and the `review` closest others are listed.
    """

    neighbours: int = 10
    search_dims: int = 128
    cell_rows: int = 4096
    probes: int = 3
    list_similarity: float = 0.6
    agreement: tuple[tuple[int, float], ...] = AGREEMENT
    review: int = 50
    rescore_pairs: int = 200_000

    def __post_init__(self) -> None:
        for name in ("neighbours", "search_dims", "cell_rows", "probes", "rescore_pairs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"The '{name}' must be >= 1. Got {getattr(self, name)}.")
        if not -1.0 <= self.list_similarity <= 1.0:
            raise ConfigError(
                f"The 'list_similarity' must be a cosine in [-1, 1]. Got {self.list_similarity}."
            )
        if self.review < 0:
            raise ConfigError(f"The 'review' must be >= 0. Got {self.review}.")
        for row in self.agreement:
            if len(row) != 2 or not 0 <= row[0] <= HASH_BITS or not -1.0 <= row[1] <= 1.0:
                raise ConfigError(
                    f"The 'agreement' rows must be (hash bits in 0..{HASH_BITS}, vector cosine "
                    f"in [-1, 1]). Got {row}."
                )


@dataclass(frozen=True)
class NearPairs:
    """Pairs of distinct keys (indices into the key list), ranked by `similarity`."""

    a: np.ndarray
    b: np.ndarray
    vector: np.ndarray  # centred cosine of the full vectors
    hash: np.ndarray  # cosine of the hashes (nan where a hash is missing)
    similarity: np.ndarray
    grouped: np.ndarray  # bool: both signals agree (`NearDuplicateConfig.agreement`)
    neighbours_exact: bool
    knn_index: np.ndarray  # (K, k) nearest keys by vector, for the outlier score
    knn_similarity: np.ndarray
    vectors: VectorIndex


def near_duplicate_pairs(
    X: Any,  # an array or a row source (StoredRows)
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
    X: Any,
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
    found = [nb.similarity.ravel()[keep].astype(np.float64)]  # each search's own cosine
    if hashes is not None and has_hash is not None and has_hash.any():
        known = np.flatnonzero(has_hash)
        ha, hb = hash_candidates(hashes[known], seed=seed)
        near = hash_similarity(hashes[known], ha, hb)
        close = near >= config.list_similarity - 0.1
        parts.append(np.stack([known[ha[close]], known[hb[close]]], axis=1))
        found.append(near[close])
    pairs = np.concatenate(parts)
    low, high = pairs.min(axis=1).astype(np.int64), pairs.max(axis=1).astype(np.int64)
    unique, where = np.unique(low * len(X) + high, return_inverse=True)
    a, b = (unique // len(X)).astype(np.intp), (unique % len(X)).astype(np.intp)
    hash_sim = np.full(len(a), np.nan)
    if hashes is not None and has_hash is not None:
        both = has_hash[a] & has_hash[b]
        hash_sim[both] = hash_similarity(hashes, a[both], b[both])
    a, b, hash_sim = _bounded(a, b, hash_sim, where, np.concatenate(found), config)
    vector = vi.cosine(a, b)
    # Without a hash for both, the vector alone ranks the pair (it is never grouped).
    similarity = np.where(np.isnan(hash_sim), vector, (vector + np.nan_to_num(hash_sim)) / 2)
    grouped = agreeing(vector, hash_sim, config.agreement)
    keep = (similarity >= config.list_similarity) | grouped
    a, b, vector, hash_sim, similarity, grouped = (
        v[keep] for v in (a, b, vector, hash_sim, similarity, grouped)
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


def _bounded(
    a: np.ndarray,
    b: np.ndarray,
    hash_sim: np.ndarray,
    where: np.ndarray,
    found: np.ndarray,
    config: NearDuplicateConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidates worth re-scoring on the full vectors, sorted by `a` (the re-score
    then reads the `a` side in storage order): every pair the hashes could group, and of
    the others the `rescore_pairs` that their search (vectors or hashes) found closest.
    `found[i]` is that search's cosine for entry `where[i]` of the candidates."""
    score = np.full(len(a), -np.inf)
    np.maximum.at(score, where, found)
    most_bits = max((bits for bits, _ in config.agreement), default=-1)
    bits = np.where(np.isnan(hash_sim), np.inf, np.rint((1.0 - np.nan_to_num(hash_sim)) * 32))
    groupable = bits <= most_bits
    others = np.flatnonzero(~groupable)
    if len(others) > config.rescore_pairs:
        best = np.argpartition(-score[others], config.rescore_pairs - 1)
        others = others[best[: config.rescore_pairs]]
    keep = np.sort(np.concatenate([np.flatnonzero(groupable), others]))
    return a[keep], b[keep], hash_sim[keep]


def agreeing(
    vector: np.ndarray, hash_sim: np.ndarray, agreement: tuple[tuple[int, float], ...]
) -> np.ndarray:
    """Pairs where both signals agree: hashes at most `bits` apart and vectors at least
    `cosine` close, for some row (bits, cosine) of `agreement`. No hash: never."""
    bits = np.where(np.isnan(hash_sim), np.inf, np.rint((1.0 - np.nan_to_num(hash_sim)) * 32))
    out = np.zeros(len(vector), bool)
    for most, cosine in agreement:
        out |= (bits <= most) & (vector >= cosine)
    return out


def connected_groups(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component number of each of `n` nodes linked by edges (a[i], b[i])."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return np.asarray(labels, dtype=np.int64)
