"""Performance predictors for LINAS: one regressor per measured objective, fitted on real evaluations.

An SVR with an RBF kernel on standardised features and targets (Cummings et al.'s LINAS uses such
light regressors; they fit in milliseconds on a few hundred points), or ridge regression. Quality is
measured two ways each round: 5-fold cross-validated Kendall tau and MAE on the trials seen so far,
and prospectively, on the previous round's candidates once they have been evaluated for real.
Perplexity is learned (and its MAE reported) on the log scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import kendalltau
from sklearn.compose import TransformedTargetRegressor
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from nas.errors import SearchConfigError

PREDICTORS = ("svr", "ridge")


def make_predictor(kind: str) -> TransformedTargetRegressor:
    if kind == "svr":
        model = make_pipeline(StandardScaler(), SVR(kernel="rbf", C=10.0, epsilon=0.05, gamma="scale"))
    elif kind == "ridge":
        model = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    else:
        raise SearchConfigError(f"Unknown search.linas.predictor {kind!r}; available: {list(PREDICTORS)}.")
    return TransformedTargetRegressor(regressor=model, transformer=StandardScaler())


@dataclass
class PredictorQuality:
    """How well a predictor ranks and fits sub-networks it was not trained on."""

    kendall_tau: float
    mae: float
    n: int

    @classmethod
    def of(cls, true: np.ndarray, predicted: np.ndarray) -> PredictorQuality:
        tau = kendalltau(true, predicted).statistic if len(true) > 1 and np.ptp(true) > 0 else float("nan")
        return cls(float(tau), float(np.mean(np.abs(true - predicted))), len(true))

    def to_dict(self) -> dict[str, float]:
        return {"kendall_tau": self.kendall_tau, "mae": self.mae, "n": self.n}


def fit_predictor(kind: str, features: np.ndarray, target: np.ndarray, seed: int) -> tuple[object, PredictorQuality]:
    """A predictor fitted on all points, and its 5-fold cross-validated quality."""
    folds = min(5, len(target))
    quality = PredictorQuality(float("nan"), float("nan"), 0)
    if folds >= 2:
        cv = KFold(n_splits=folds, shuffle=True, random_state=seed)
        predicted = cross_val_predict(make_predictor(kind), features, target, cv=cv)
        quality = PredictorQuality.of(target, predicted)
    model = make_predictor(kind).fit(features, target)
    return model, quality
