"""Optuna's median pruner, applied inside a trial's own process at each periodic validation.

The study's storage has one writer, the driver (:mod:`energybench.run.search`),
and a trial runs in a child process, so the child cannot ask the study. The
driver instead hands the trial, in its spec, the intermediate validation
scores of the trials finished when it was asked. Here they are loaded into an
in-memory Optuna study beside the running trial, and Optuna's own
``MedianPruner`` decides after every validation, exactly as it would on the
real study at that moment (trials finishing meanwhile in the same round are
not seen, as with any batch of parallel trials). A pruned run stops training,
finishes as usual (test score, inference) and says ``pruned`` in its row; the
driver then tells the study the trial was PRUNED, with its intermediate scores.
"""

from __future__ import annotations

from typing import Any, Callable

PRUNE_KEY = "prune"


def pruning_payload(settings, finished_trials: list) -> dict[str, Any]:
    """What a trial's spec carries for pruning: the pruner's settings and the finished trials' curves."""
    return {"pruner": settings.pruner, "startup_trials": settings.pruner_startup_trials,
            "warmup_steps": settings.pruner_warmup_steps,
            "curves": [{str(k): float(v) for k, v in t.intermediate_values.items()} for t in finished_trials
                       if t.intermediate_values]}


class MedianPruning:
    """``on_validation`` that reports each validation score and answers True when Optuna would prune."""

    def __init__(self, payload: dict[str, Any]):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(
            n_startup_trials=payload["startup_trials"], n_warmup_steps=payload["warmup_steps"]))
        for curve in payload["curves"]:
            values = {int(k): v for k, v in curve.items()}
            self.study.add_trial(optuna.trial.create_trial(value=max(values.values()), intermediate_values=values))
        self.trial = self.study.ask()
        self.pruned_at: int | None = None

    def __call__(self, step: int, examples: int, score: float) -> bool:
        self.trial.report(float(score), step)
        if self.trial.should_prune():
            self.pruned_at = step
            return True
        return False


def chain(*callbacks: Callable[[int, int, float], Any]) -> Callable[[int, int, float], bool]:
    """Call every callback (the curve recorder first); stop when any asks to."""

    def call(step: int, examples: int, score: float) -> bool:
        return any([bool(cb(step, examples, score)) for cb in callbacks])

    return call
