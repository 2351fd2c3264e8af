"""GLUE metrics against formulas written out here (numpy arithmetic and hand ranks, not scipy/sklearn)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from energybench.tasks.metrics import compute_metrics


def _pearson(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    dx, dy = x - x.mean(), y - y.mean()
    return float((dx * dy).sum() / math.sqrt((dx ** 2).sum() * (dy ** 2).sum()))


def test_stsb_score_is_the_mean_of_pearson_and_spearman_on_non_monotone_data():
    preds, refs = [1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 3.0, 2.0, 5.0, 20.0]
    # ranks of refs: 1 3 2 4 5 → d = 0 -1 1 0 0 → Spearman = 1 - 6·2/(5·24) = 0.9
    spearman = 100 * (1 - 6 * 2 / (5 * (25 - 1)))
    pearson = 100 * _pearson(preds, refs)
    assert abs(pearson - spearman) > 5  # the data tell the two apart
    score, m = compute_metrics("pearson_spearman", preds, refs)
    assert m["spearman"] == pytest.approx(spearman)
    assert m["pearson"] == pytest.approx(pearson)
    assert score == pytest.approx((pearson + spearman) / 2)


def test_stsb_constant_prediction_scores_zero_not_nan():
    score, m = compute_metrics("pearson_spearman", [2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
    assert (score, m["pearson"], m["spearman"]) == (0.0, 0.0, 0.0)


def test_matthews_on_an_imperfect_prediction():
    preds, refs = [1, 1, 0, 0, 1, 0], [1, 0, 0, 0, 1, 1]
    tp, tn, fp, fn = 2, 2, 1, 1  # counted by hand
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))  # = 3/9
    score, m = compute_metrics("matthews", preds, refs)
    assert score == pytest.approx(100 * mcc) == pytest.approx(100 / 3)
    assert m == {"matthews": pytest.approx(100 / 3)}
    score, _ = compute_metrics("matthews", [0, 1, 0, 1], [1, 0, 1, 0])  # always wrong
    assert score == pytest.approx(-100.0)


def test_accuracy_and_f1_of_the_positive_class():
    score, m = compute_metrics("accuracy", [1, 0, 0, 1, 1], [1, 1, 0, 0, 1])
    assert score == pytest.approx(60.0) and m == {"accuracy": pytest.approx(60.0)}
    # positive class 1: tp 2, fp 1, fn 1 → precision 2/3, recall 2/3, F1 2/3; accuracy 3/5
    score, m = compute_metrics("f1_accuracy", [1, 0, 0, 1, 1], [1, 1, 0, 0, 1])
    assert m["f1"] == pytest.approx(200 / 3) and m["accuracy"] == pytest.approx(60.0)
    assert score == pytest.approx((200 / 3 + 60) / 2)


def test_unknown_metric_is_an_error_naming_it():
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        compute_metrics("bleu", [1], [1])


def test_exact_match_counts_whitespace_trimmed_equal_strings_only():
    score, parts = compute_metrics("exact_match", [" 42", "7 ", "13", "5"], ["42", "7", "31", "5"])
    assert score == parts["exact_match"] == 75.0  # 3 of 4; "13" vs "31" is no match either way round


def test_a_constant_prediction_scores_zero_correlation_without_asking_scipy():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy warns (ConstantInputWarning) on a constant input
        score, parts = compute_metrics("pearson_spearman", [2.5, 2.5, 2.5], [1.0, 2.0, 4.0])
    assert (score, parts["pearson"], parts["spearman"]) == (0.0, 0.0, 0.0)


def test_metric_names_read_from_a_file_match_by_value_not_identity():
    name = "".join(["accu", "racy"])  # a string built at run time, as a parsed suite's is: not interned
    assert compute_metrics(name, [1, 0, 1, 1], [1, 0, 0, 1])[0] == 75.0
