"""Linear centered kernel alignment (Kornblith et al., ICML 2019) between two representations.

CKA compares what two layers *encode* about a set of inputs, independently of how: it is
invariant to orthogonal transforms and isotropic scaling of either representation (so two
networks that differ by a rotation of their channels score 1) but not to arbitrary
invertible linear maps, which makes it meaningful for wide layers where almost any two
representations are linearly related.
"""

from typing import Dict, Mapping

import numpy as np


def _centered(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be [examples, features], got shape {x.shape}")
    return x - x.mean(axis=0, keepdims=True)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of ``x`` [n, p] and ``y`` [n, q], whose rows are the same n examples.

    HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with linear kernels, computed in whichever
    of the feature-space form (cost ~ n p q) and the Gram form (~ n^2 (p + q)) is cheaper;
    the two are equal.
    """
    x, y = _centered(x, "x"), _centered(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must describe the same examples: {x.shape[0]} vs {y.shape[0]} rows")
    n, p = x.shape
    q = y.shape[1]
    if p * q <= n * (p + q):
        cross = np.linalg.norm(y.T @ x) ** 2
        norm_x, norm_y = np.linalg.norm(x.T @ x), np.linalg.norm(y.T @ y)
    else:
        gram_x, gram_y = x @ x.T, y @ y.T
        cross = float(np.sum(gram_x * gram_y))
        norm_x, norm_y = np.linalg.norm(gram_x), np.linalg.norm(gram_y)
    for name, norm in (("x", norm_x), ("y", norm_y)):
        if norm == 0:
            raise ValueError(f"{name} is constant over the examples; CKA is undefined")
    return float(cross / (norm_x * norm_y))


def cka_matrix(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> Dict[str, Dict[str, float]]:
    """``{layer_a: {layer_b: CKA}}`` for every pair of layers of two networks."""
    return {la: {lb: linear_cka(xa, xb) for lb, xb in b.items()} for la, xa in a.items()}
