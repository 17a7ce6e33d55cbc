"""Predicted KL+DP gain before training: a small ridge regression on what ``scan`` measures.

The model maps a pair's scan features (ρpos, ρneg, teacher minus student top-1, flip entropy,
student top-1) to KL+DP's Δtransf. It is fitted on the zoo study (``studies/zoo/study.py``), validated
leave-one-student-out (every student's pairs predicted by a model that never saw that student), and
its coefficients live in ``predictor.json`` beside this module. The interval is the
leave-one-student-out error, not the in-sample one: it says how far a prediction for a *new*
student has been off. On other data (ImageNet, your folders) read the numbers as a ranking of
teachers, not as a promise.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

FEATURES = ('rho_pos', 'rho_neg', 'top1_diff', 'flip_entropy', 'student_top1')
COEFFICIENTS = Path(__file__).with_name('predictor.json')
VERSION = 1


def pair_features(student_top1: float, teacher: dict) -> dict[str, float]:
    """The features of one scanned teacher (an entry of ``scan()['teachers']``)."""
    return {'rho_pos': teacher['rho_pos'], 'rho_neg': teacher['rho_neg'],
            'top1_diff': teacher['teacher_top1'] - student_top1, 'flip_entropy': teacher['flip_entropy'],
            'student_top1': student_top1}


@dataclass(frozen=True)
class Predictor:
    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    alpha: float
    interval_halfwidth: float  # 95% half-width from the leave-one-student-out residuals
    fitted_on: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)
    version: int = VERSION

    def predict(self, feats: dict[str, float]) -> tuple[float, float, float]:
        """(predicted Δtransf, lower, upper) in points."""
        x = (np.array([feats[f] for f in self.features]) - np.array(self.mean)) / np.array(self.scale)
        y = float(self.intercept + x @ np.array(self.coef))
        return y, y - self.interval_halfwidth, y + self.interval_halfwidth

    def save(self, path: Path = COEFFICIENTS) -> None:
        tmp = Path(path).with_suffix('.tmp')
        tmp.write_text(json.dumps(asdict(self), indent=2) + '\n')
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path = COEFFICIENTS) -> 'Predictor | None':
        path = Path(path)
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        if data.get('version') != VERSION:
            return None
        return cls(**{**data, 'features': tuple(data['features']), 'mean': tuple(data['mean']),
                      'scale': tuple(data['scale']), 'coef': tuple(data['coef'])})


def _design(rows: list[dict], features=FEATURES) -> tuple[np.ndarray, np.ndarray]:
    return np.array([[r[f] for f in features] for r in rows], dtype=float), np.array([r['delta'] for r in rows])


def fit_ridge(rows: list[dict], alpha: float = 1.0, features=FEATURES) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Ridge on standardised features (the intercept is not penalised): (mean, scale, coef, intercept)."""
    x, y = _design(rows, features)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    coef = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - y.mean()))
    return mean, scale, coef, float(y.mean())


def leave_one_student_out(rows: list[dict], alpha: float = 1.0, features=FEATURES) -> dict:
    """Every student's pairs predicted by a fit on the other students: Spearman ρ, MAE, residual SD."""
    from ..report.stats import spearman
    students = sorted({r['student'] for r in rows})
    predicted, actual = [], []
    for s in students:
        train = [r for r in rows if r['student'] != s]
        test = [r for r in rows if r['student'] == s]
        mean, scale, coef, intercept = fit_ridge(train, alpha, features)
        x, y = _design(test, features)
        predicted += list(intercept + ((x - mean) / scale) @ coef)
        actual += list(y)
    residuals = np.array(actual) - np.array(predicted)
    return {'students': len(students), 'pairs': len(rows), 'spearman': spearman(predicted, actual),
            'mae': float(np.abs(residuals).mean()), 'residual_sd': float(residuals.std(ddof=1)),
            'predicted': [float(v) for v in predicted], 'actual': [float(v) for v in actual]}


def fit(rows: list[dict], alpha: float = 1.0, fitted_on: dict | None = None, features=FEATURES) -> Predictor:
    """Fit on all rows (``{'student', 'delta', *features}``); the interval comes from leave-one-student-out."""
    if len({r['student'] for r in rows}) < 3:
        raise ValueError('the predictor needs pairs from at least 3 students to validate leave-one-student-out')
    validation = leave_one_student_out(rows, alpha, features)
    mean, scale, coef, intercept = fit_ridge(rows, alpha, features)
    return Predictor(features=tuple(features), mean=tuple(map(float, mean)), scale=tuple(map(float, scale)),
                     coef=tuple(map(float, coef)), intercept=intercept, alpha=alpha,
                     interval_halfwidth=1.96 * validation['residual_sd'], fitted_on=dict(fitted_on or {}),
                     validation={k: v for k, v in validation.items() if k not in ('predicted', 'actual')})


def annotate_scan(result: dict, predictor: Predictor | None, max_sequence: int = 3) -> dict:
    """Add ``predicted_delta`` (with ``predicted_interval``) per teacher and a suggested sequential run."""
    if predictor is None:
        result['predictor'] = None
        return result
    for t in result['teachers']:
        y, lo, hi = predictor.predict(pair_features(result['student_top1'], t))
        t['predicted_delta'], t['predicted_interval'] = round(y, 3), [round(lo, 3), round(hi, 3)]
    helpful = sorted((t for t in result['teachers'] if t['predicted_delta'] > 0),
                     key=lambda t: -t['predicted_delta'])[:max_sequence]
    # sequential runs go in ascending teacher top-1 (METHOD.md), the default of --teacher-order
    sequence = sorted(helpful, key=lambda t: t['teacher_top1'])
    result['suggested_sequence'] = [t['spec'] for t in sequence]
    result['predictor'] = {'fitted_on': predictor.fitted_on, 'validation': predictor.validation,
                           'interval': '95%, from leave-one-student-out errors', 'version': predictor.version}
    return result


def format_prediction(result: dict) -> list[str]:
    """The lines ``scan`` prints under its table."""
    p = result.get('predictor')
    if not p:
        return ['predicted gain: no fitted predictor in this installation (run python -m studies.zoo.study fit-predictor)']
    v, on = p['validation'], p['fitted_on']
    lines = [f"predicted KL+DP Δtransf (95% interval), fitted on {on.get('pairs', '?')} pairs of "
             f"{on.get('students', '?')} students ({on.get('description', 'the zoo study')}); leave-one-student-out "
             f"Spearman {v['spearman']:.2f}, MAE {v['mae']:.2f} points. Elsewhere, read it as a ranking, not a promise:"]
    for t in sorted(result['teachers'], key=lambda t: -t['predicted_delta']):
        lo, hi = t['predicted_interval']
        lines.append(f"  {t['name']:16s}{t['predicted_delta']:+7.2f}  [{lo:+.2f}, {hi:+.2f}]")
    seq = result.get('suggested_sequence') or []
    lines.append('suggested sequential run: ' + (' -> '.join(seq) if seq else 'none (no teacher is predicted to help)'))
    return lines
