"""The gain predictor: ridge fit against hand computations, leave-one-student-out, file round trip, scan output."""
import json
import random

import numpy as np
import pytest

from timm_gkt.evaluation.predictor import (
    FEATURES, VERSION, Predictor, annotate_scan, fit, fit_ridge, format_prediction, leave_one_student_out,
    pair_features,
)

TRUE = {'rho_pos': 0.4, 'rho_neg': -0.3, 'top1_diff': 0.02, 'flip_entropy': 0.0, 'student_top1': -0.01}


def synthetic_rows(noise: float = 0.0, students: int = 5, teachers: int = 6, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for s in range(students):
        s_top1 = 80 + 2 * s + rng.random()
        for t in range(teachers):
            f = {'rho_pos': rng.uniform(1, 8), 'rho_neg': rng.uniform(1, 8), 'top1_diff': rng.uniform(-6, 6),
                 'flip_entropy': rng.uniform(1.5, 2.3), 'student_top1': s_top1}
            delta = 0.2 + sum(TRUE[k] * f[k] for k in FEATURES) + noise * rng.gauss(0, 1)
            rows.append({'student': f's{s}', 'teacher': f't{t}', 'delta': delta, **f})
    return rows


def test_ridge_with_one_feature_matches_the_closed_form():
    rows = [{'student': 'a', 'delta': d, 'rho_pos': x} for x, d in [(1.0, 0.5), (2.0, 0.9), (4.0, 2.1)]]
    mean, scale, coef, intercept = fit_ridge(rows, alpha=2.0, features=('rho_pos',))
    x = np.array([1.0, 2.0, 4.0])
    z = (x - x.mean()) / x.std()
    y = np.array([0.5, 0.9, 2.1])
    assert mean[0] == pytest.approx(7 / 3) and scale[0] == pytest.approx(x.std())
    assert coef[0] == pytest.approx((z @ (y - y.mean())) / (z @ z + 2.0))
    assert intercept == pytest.approx(y.mean())


def test_noise_free_linear_data_is_recovered_and_validates_perfectly():
    rows = synthetic_rows()
    p = fit(rows, alpha=1e-9, fitted_on={'pairs': len(rows), 'students': 5})
    for r in rows[:7]:
        y, lo, hi = p.predict(r)
        assert y == pytest.approx(r['delta'], abs=1e-6)
        assert hi - lo == pytest.approx(2 * p.interval_halfwidth)
    # student_top1 is constant within a student, so leave-one-student-out extrapolates it: still exact
    v = leave_one_student_out(rows, alpha=1e-9)
    assert v['students'] == 5 and v['pairs'] == 30
    assert v['spearman'] == pytest.approx(1.0) and v['mae'] < 1e-6
    assert p.validation['mae'] < 1e-6 and 'predicted' not in p.validation


def test_the_interval_comes_from_held_out_students_not_the_fit():
    rows = synthetic_rows(noise=0.3, students=6, seed=1)
    p = fit(rows, alpha=1.0)
    v = leave_one_student_out(rows, alpha=1.0)
    assert p.interval_halfwidth == pytest.approx(1.96 * v['residual_sd'])
    in_sample = np.std([r['delta'] - p.predict(r)[0] for r in rows], ddof=1)
    assert v['residual_sd'] > in_sample  # held-out errors are the larger, honest ones
    assert 0.7 < v['spearman'] <= 1.0  # the signal (SD ~1.7 points) dominates the noise (0.3)


def test_fewer_than_three_students_is_refused():
    with pytest.raises(ValueError, match='at least 3 students'):
        fit(synthetic_rows(students=2))


def test_coefficients_file_round_trip_and_version(tmp_path):
    p = fit(synthetic_rows(noise=0.1), fitted_on={'pairs': 30, 'students': 5, 'description': 'synthetic'})
    path = tmp_path / 'predictor.json'
    p.save(path)
    assert Predictor.load(path) == p
    data = json.loads(path.read_text())
    assert data['version'] == VERSION and data['features'] == list(FEATURES)
    path.write_text(json.dumps({**data, 'version': VERSION + 1}))
    assert Predictor.load(path) is None  # a file from another version is not used
    assert Predictor.load(tmp_path / 'missing.json') is None


SCAN = {'student': 'local-dir:zoo/vit_a', 'student_name': 'vit_a', 'student_top1': 86.0, 'teachers': [
    {'name': 'strong', 'spec': 'local-dir:zoo/strong', 'teacher_top1': 92.0, 'rho_pos': 7.0, 'rho_neg': 1.0,
     'flip_entropy': 2.0},
    {'name': 'mid', 'spec': 'local-dir:zoo/mid', 'teacher_top1': 88.0, 'rho_pos': 5.0, 'rho_neg': 3.0,
     'flip_entropy': 2.1},
    {'name': 'weak', 'spec': 'local-dir:zoo/weak', 'teacher_top1': 80.0, 'rho_pos': 2.0, 'rho_neg': 8.0,
     'flip_entropy': 1.9},
]}


def hand_predictor() -> Predictor:
    # Δ = 0.1 ρpos - 0.05 ρneg (no standardisation), ±0.25
    return Predictor(FEATURES, (0.0,) * 5, (1.0,) * 5, (0.1, -0.05, 0.0, 0.0, 0.0), 0.0, 1.0, 0.25,
                     {'pairs': 56, 'students': 8, 'description': 'zoo study'}, {'spearman': 0.61, 'mae': 0.12})


def test_annotate_scan_predicts_each_teacher_and_orders_the_suggested_sequence():
    result = annotate_scan(json.loads(json.dumps(SCAN)), hand_predictor())
    by_name = {t['name']: t for t in result['teachers']}
    assert by_name['strong']['predicted_delta'] == pytest.approx(0.65)
    assert by_name['mid']['predicted_delta'] == pytest.approx(0.35)
    assert by_name['weak']['predicted_delta'] == pytest.approx(-0.2)
    assert by_name['mid']['predicted_interval'] == pytest.approx([0.1, 0.6])
    # helpful teachers only, in ascending teacher top-1 (the sequential default)
    assert result['suggested_sequence'] == ['local-dir:zoo/mid', 'local-dir:zoo/strong']
    lines = format_prediction(result)
    assert 'fitted on 56 pairs of 8 students (zoo study)' in lines[0] and 'Spearman 0.61, MAE 0.12' in lines[0]
    assert lines[1].split()[:2] == ['strong', '+0.65'] and lines[-1].endswith('mid -> local-dir:zoo/strong')


def test_without_a_fitted_predictor_scan_says_so():
    result = annotate_scan(json.loads(json.dumps(SCAN)), None)
    assert result['predictor'] is None and 'predicted_delta' not in result['teachers'][0]
    assert format_prediction(result) == [
        'predicted gain: no fitted predictor in this installation (run python -m studies.zoo.study fit-predictor)']


def test_pair_features_from_a_scan_entry():
    assert pair_features(86.0, SCAN['teachers'][0]) == {'rho_pos': 7.0, 'rho_neg': 1.0, 'top1_diff': 6.0,
                                                        'flip_entropy': 2.0, 'student_top1': 86.0}
