"""GLUE metrics, computed with scikit-learn and scipy rather than by hand.

Both are imported when a metric is first computed, not with this module: the
training loop's modules import it, and scipy.stats plus sklearn.metrics cost
~2 s of every CLI start (``estimate``, ``report``, ``compare``) that never
scores anything."""

from __future__ import annotations

import math

import numpy as np


def _finite(x: float) -> float:
    return 0.0 if math.isnan(x) else float(x)


def compute_metrics(metric: str, predictions, references) -> tuple[float, dict[str, float]]:
    """(score, every metric separately) for one of the GLUE metric kinds.

    Scores are in [0, 100] (or [-100, 100] for correlations), as GLUE tables
    print them. A correlation of a constant prediction is undefined; it is
    reported as 0, not NaN, since it carries no signal.
    """
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    preds, refs = np.asarray(predictions), np.asarray(references)
    if metric == "accuracy":
        acc = 100 * accuracy_score(refs, preds)
        return acc, {"accuracy": acc}
    if metric == "matthews":
        mcc = 100 * matthews_corrcoef(refs, preds)
        return mcc, {"matthews": mcc}
    if metric == "f1_accuracy":
        acc = 100 * accuracy_score(refs, preds)
        f1 = 100 * f1_score(refs, preds, zero_division=0)
        return (acc + f1) / 2, {"f1": f1, "accuracy": acc}
    if metric == "pearson_spearman":
        if np.all(preds == preds[0]) or np.all(refs == refs[0]):
            p = s = 0.0
        else:
            p = 100 * _finite(pearsonr(preds, refs)[0])
            s = 100 * _finite(spearmanr(preds, refs)[0])
        return (p + s) / 2, {"pearson": p, "spearman": s}
    if metric == "exact_match":  # generated answer strings against reference strings, whitespace-trimmed
        hits = [str(p).strip() == str(r).strip() for p, r in zip(predictions, references)]
        em = 100 * sum(hits) / len(hits) if hits else 0.0
        return em, {"exact_match": em}
    raise ValueError(f"unknown metric {metric!r}")
