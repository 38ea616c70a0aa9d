"""Do two feature spaces agree on which images are alike? k-nearest-neighbour overlap.

Li et al. (*An Analysis of Pre-Training on Object Detection*, 2019) report an asymmetry:
images close in a detection network's feature space are close in a classification
network's space, but not the reverse. A symmetric score (same k both ways) cannot show
that, so the overlap here is directional: of image i's ``k`` nearest neighbours in space
A, the fraction that are among its ``K >= k`` nearest neighbours in space B. With
``K == k`` the two directions coincide; with ``K > k`` A -> B is high when A's
neighbourhoods are *refinements* of B's.
"""

from typing import Dict, Optional

import numpy as np
from sklearn.neighbors import NearestNeighbors


def knn_indices(x: np.ndarray, k: int, metric: str = "cosine") -> np.ndarray:
    """``[n, k]`` indices of each row's k nearest other rows (itself excluded), nearest first."""
    x = np.asarray(x, dtype=np.float64)
    if not 1 <= k < len(x):
        raise ValueError(f"k must be in [1, {len(x) - 1}] for {len(x)} examples, got {k}")
    # With no query, scikit-learn returns the neighbours of the fitted points, each
    # point excluded from its own list.
    return NearestNeighbors(n_neighbors=k, metric=metric).fit(x).kneighbors(return_distance=False)


def neighbor_overlap(
    a: np.ndarray, b: np.ndarray, k: int, big_k: Optional[int] = None, metric: str = "cosine"
) -> np.ndarray:
    """Per image, the fraction of its k nearest neighbours in ``a`` that are among its
    ``big_k`` (default k) nearest neighbours in ``b``. Rows of a and b are the same images."""
    if len(a) != len(b):
        raise ValueError(f"a and b must describe the same images: {len(a)} vs {len(b)} rows")
    big_k = k if big_k is None else big_k
    if big_k < k:
        raise ValueError(f"big_k ({big_k}) must be at least k ({k})")
    near_a, near_b = knn_indices(a, k, metric), knn_indices(b, big_k, metric)
    return np.array([len(set(na) & set(nb)) / k for na, nb in zip(near_a, near_b)])


def overlap_both_ways(
    a: np.ndarray, b: np.ndarray, k: int, big_k: Optional[int] = None, metric: str = "cosine"
) -> Dict[str, float]:
    """Mean :func:`neighbor_overlap` in both directions: ``{"a_to_b", "b_to_a"}``."""
    return {
        "a_to_b": float(neighbor_overlap(a, b, k, big_k, metric).mean()),
        "b_to_a": float(neighbor_overlap(b, a, k, big_k, metric).mean()),
    }
