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
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from nas.errors import SearchConfigError

PREDICTORS = ("svr", "ridge")


def _estimator(kind: str) -> SVR | Ridge:
    if kind == "svr":
        return SVR(kernel="rbf", C=10.0, epsilon=0.05, gamma="scale")
    if kind == "ridge":
        return Ridge(alpha=1.0)
    raise SearchConfigError(f"Unknown search.linas.predictor {kind!r}; available: {list(PREDICTORS)}.")


def make_predictor(kind: str) -> TransformedTargetRegressor:
    """The predictor as one scikit-learn estimator (what `FastPredictor.fit` computes, with every check)."""
    return TransformedTargetRegressor(
        regressor=make_pipeline(StandardScaler(), _estimator(kind)), transformer=StandardScaler()
    )


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


class FastPredictor:
    """`make_predictor(kind)` fitted and predicting without the checks and clones of scikit-learn's wrappers,
    which cost far more than the arithmetic here: a dozen fits a round on a few dozen points, and predictions for
    the few hundred candidates LINAS scores at a time, 50 times a round. The same operations in the same order (the
    scalers, then the SVR's libsvm or the ridge's product), so the same numbers to the last bit (a test holds them
    equal); LINAS's rankings, and so its search, depend on them."""

    def __init__(self, x_scaler: StandardScaler, model: SVR | Ridge, y_scaler: StandardScaler) -> None:
        self.model = model
        self.x_mean, self.x_scale = x_scaler.mean_, x_scaler.scale_
        self.y_mean, self.y_scale = y_scaler.mean_, y_scaler.scale_

    @classmethod
    def fit(cls, kind: str, features: np.ndarray, target: np.ndarray) -> FastPredictor:
        """What `make_predictor(kind).fit(features, target)` computes: the target standardised as a column, the
        features standardised, the estimator fitted on both."""
        model = _estimator(kind)
        column = np.asarray(target, dtype=np.float64).reshape(-1, 1)
        y_scaler = StandardScaler().fit(column)
        x_scaler = StandardScaler()
        model.fit(x_scaler.fit_transform(features), y_scaler.transform(column).squeeze(axis=1))
        return cls(x_scaler, model, y_scaler)

    def predict(self, features: np.ndarray) -> np.ndarray:
        x = np.array(features, dtype=np.float64, order="C")
        x -= self.x_mean  # StandardScaler.transform, in place as there
        x /= self.x_scale
        if isinstance(self.model, SVR):
            scaled = self.model._dense_predict(x)  # libsvm, as SVR.predict calls it after its checks
        else:
            scaled = x @ self.model.coef_.T + self.model.intercept_
        y = np.array(scaled, dtype=np.float64).reshape(-1, 1)
        y *= self.y_scale  # StandardScaler.inverse_transform of the target
        y += self.y_mean
        return y[:, 0]


def fit_predictor(
    kind: str, features: np.ndarray, target: np.ndarray, seed: int
) -> tuple[FastPredictor, PredictorQuality]:
    """A predictor fitted on all points, and its 5-fold cross-validated quality (`cross_val_predict`'s folds,
    fits and predictions, without its dispatch machinery)."""
    model = FastPredictor.fit(kind, features, target)  # first: an unknown kind fails before any fold
    folds = min(5, len(target))
    quality = PredictorQuality(float("nan"), float("nan"), 0)
    if folds >= 2:
        predicted = np.empty(len(target))
        for train, test in KFold(n_splits=folds, shuffle=True, random_state=seed).split(features):
            predicted[test] = FastPredictor.fit(kind, features[train], target[train]).predict(features[test])
        quality = PredictorQuality.of(target, predicted)
    return model, quality
