"""Linear probe: how well a frozen backbone's pooled features classify a new dataset.

The protocol of transfer studies (e.g. Kornblith et al., *Do Better ImageNet Models
Transfer Better?*): standardize features, fit a multinomial logistic regression for each
regularization ``C`` on the training split, keep the ``C`` with the best validation top-1,
refit on train + validation and report top-1 and mean per-class accuracy on the test split.
Mean per-class accuracy is the number to quote for unbalanced sets (Caltech-256, SUN-397).
"""

import os
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from .features import image_folder, pooled_features

DEFAULT_CS: Tuple[float, ...] = tuple(10.0**e for e in range(-4, 3))


def split_indices(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int = 0
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified train / validation / test indices; a test fraction of 0 gives no test split."""
    index = np.arange(len(labels))
    test = np.array([], dtype=int)
    if test_fraction > 0:
        index, test = train_test_split(index, test_size=test_fraction, stratify=labels, random_state=seed)
    train, val = train_test_split(
        index, test_size=val_fraction / (1 - test_fraction), stratify=labels[index], random_state=seed
    )
    return np.sort(train), np.sort(val), np.sort(test)


def make_classifier(c: float, max_iter: int = 1000) -> Pipeline:
    """The probe for one regularization strength (smaller ``c``: stronger L2 penalty)."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))


@dataclass
class ProbeResult:
    c: float
    top1: float
    mean_per_class: float
    val_top1: Dict[float, float]
    n_train: int
    n_val: int
    n_test: int

    def to_dict(self) -> dict:
        out = asdict(self)
        out["val_top1"] = {str(c): a for c, a in self.val_top1.items()}
        return out


def linear_probe(
    train: Tuple[np.ndarray, np.ndarray],
    val: Tuple[np.ndarray, np.ndarray],
    test: Tuple[np.ndarray, np.ndarray],
    cs: Sequence[float] = DEFAULT_CS,
    max_iter: int = 1000,
) -> ProbeResult:
    """Choose C on ``val``, refit on train + val, score on ``test``; each is (features, labels).

    Accuracies are fractions in [0, 1]. Ties in validation accuracy go to the smaller C.
    """
    (x_tr, y_tr), (x_val, y_val), (x_te, y_te) = train, val, test
    if len(np.unique(y_tr)) < 2:
        raise ValueError("the training split must contain at least two classes")
    val_top1 = {}
    for c in sorted(cs):
        val_top1[c] = float(accuracy_score(y_val, make_classifier(c, max_iter).fit(x_tr, y_tr).predict(x_val)))
    best = max(val_top1, key=lambda c: (val_top1[c], -c))
    final = make_classifier(best, max_iter).fit(np.concatenate([x_tr, x_val]), np.concatenate([y_tr, y_val]))
    predicted = final.predict(x_te)
    return ProbeResult(
        c=best,
        top1=float(accuracy_score(y_te, predicted)),
        mean_per_class=float(balanced_accuracy_score(y_te, predicted)),
        val_top1=val_top1,
        n_train=len(y_tr),
        n_val=len(y_val),
        n_test=len(y_te),
    )


def probe_features(
    features: np.ndarray,
    labels: np.ndarray,
    splits: Tuple[np.ndarray, np.ndarray, np.ndarray],
    test_features: Optional[Tuple[np.ndarray, np.ndarray]] = None,
    cs: Sequence[float] = DEFAULT_CS,
) -> ProbeResult:
    """:func:`linear_probe` on index ``splits`` of one feature matrix; a separate test set
    (``test_features`` = (features, labels)) replaces the test split when given."""
    train, val, test = splits
    test_set = test_features if test_features is not None else (features[test], labels[test])
    if len(test_set[1]) == 0:
        raise ValueError("there is no test set: give a test fraction above 0 or a separate test folder")
    return linear_probe((features[train], labels[train]), (features[val], labels[val]), test_set, cs)


def run_probe(
    cfg: CfgNode,
    weights: str,
    data: str,
    stages: Sequence[str],
    cache_dir: Optional[str],
    test_data: str = "",
    size: int = 224,
    batch_size: int = 32,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    cs: Sequence[float] = DEFAULT_CS,
    seed: int = 0,
    device: Optional[torch.device] = None,
) -> Dict[str, ProbeResult]:
    """``{stage: ProbeResult}`` of the backbone of ``cfg`` + ``weights`` on ``data``."""
    paths, labels, classes = image_folder(data, cfg.INPUT.FORMAT)
    splits = split_indices(labels, val_fraction, 0.0 if test_data else test_fraction, seed)
    image_paths = paths
    if test_data:
        test_paths, test_labels, test_classes = image_folder(test_data, cfg.INPUT.FORMAT)
        if test_classes != classes:
            raise ValueError(f"{test_data} has classes {test_classes[:5]}..., {data} has {classes[:5]}...")
        # Both folders in one pass: a random init is drawn anew at every build, and the test
        # features must come from the network the classifier is fitted on. Absolute test paths
        # stay themselves under ``data`` (os.path.join drops the root).
        image_paths = paths + [os.path.abspath(os.path.join(test_data, p)) for p in test_paths]
    feats = pooled_features(cfg, weights, data, image_paths, stages, size, cache_dir, batch_size, device)
    results = {}
    for stage in stages:
        test_set = (feats[stage][len(paths) :], test_labels) if test_data else None
        results[stage] = probe_features(feats[stage][: len(paths)], labels, splits, test_set, cs)
    return results
