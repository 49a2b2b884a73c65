"""Linear probing on frozen features: logistic regression on standardised pooled encoder features.

The standard read-out of a self-supervised encoder (e.g. Goyal et al., "Scaling and Benchmarking
Self-Supervised Visual Representation Learning", ICCV 2019): features are extracted once with the
frozen encoder, standardised on the training set, and a multinomial logistic regression is fitted
for each labelled subset, its L2 strength chosen on the validation split. Fitting takes
milliseconds, so many label budgets and seeds cost one forward pass over the data. (The trainable
alternative is :class:`~medlearn.tasks.ImageClassifier` with ``freeze_backbone=True``.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler
from torch import nn

__all__ = ["extract_features", "Features", "linear_probe", "ProbeResult"]


@dataclass
class Features:
    """Pooled features ``x (N, F)``, integer labels ``y (N,)`` and case names."""

    x: np.ndarray
    y: np.ndarray
    names: list[str]

    def subset(self, names: Iterable[str]) -> Features:
        """The rows of ``names``, in that order (every name must be present)."""
        index = {n: i for i, n in enumerate(self.names)}
        rows = [index[n] for n in names]
        return Features(self.x[rows], self.y[rows], [self.names[i] for i in rows])


@torch.no_grad()
def extract_features(encoder: nn.Module, batches: Iterable[dict[str, Any]],
                     device: str | torch.device = "cpu") -> Features:
    """Run a frozen encoder (eval mode) over batches ``{"image", "label", "name"}``.

    Args:
        encoder: maps ``(B, C, *spatial)`` to ``(B, F)`` (a factory :class:`~medlearn.nn.Backbone`).
        batches: a data loader.
        device: where to run.
    """
    was_training = encoder.training
    encoder.eval().to(device)
    xs, ys, names = [], [], []
    for b in batches:
        xs.append(encoder(b["image"].to(device)).float().cpu().numpy())
        ys.append(np.asarray(b["label"]).reshape(-1))
        names.extend(list(b["name"]))
    encoder.train(was_training)
    return Features(np.concatenate(xs), np.concatenate(ys).astype(int), names)


@dataclass
class ProbeResult:
    """Test accuracy and balanced accuracy of the probe, and the chosen L2 strength ``C``."""

    accuracy: float
    balanced_accuracy: float
    c: float
    val_accuracy: float


def linear_probe(train: Features, val: Features, test: Features,
                 cs: Sequence[float] = (0.01, 0.1, 1.0, 10.0), seed: int = 0) -> ProbeResult:
    """Fit logistic regression on standardised ``train`` features; pick ``C`` on ``val``; score ``test``."""
    scaler = StandardScaler().fit(train.x)
    xtr, xva, xte = scaler.transform(train.x), scaler.transform(val.x), scaler.transform(test.x)
    best: tuple[float, float, LogisticRegression] | None = None
    for c in cs:
        clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(xtr, train.y)
        acc = float((clf.predict(xva) == val.y).mean())
        if best is None or acc > best[0]:
            best = (acc, c, clf)
    assert best is not None
    val_acc, c, clf = best
    pred = clf.predict(xte)
    return ProbeResult(float((pred == test.y).mean()), float(balanced_accuracy_score(test.y, pred)), c, val_acc)
