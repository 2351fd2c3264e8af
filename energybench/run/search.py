"""Learning-rate search per (backbone, task, method), READ's protocol, driven by Optuna's TPE sampler.

Each trial is a run like any other: its own child process, its own row in
results.jsonl (``role: trial``, ``trial: {study, number, params}``), keyed by
the hash of its configuration. The studies live in Optuna's journal storage
``search.journal`` in the output directory; this driver, which holds the
output directory's lock, is its only writer (as for results.jsonl).

Resuming: a trial still RUNNING in the journal was cut off when the driver
died. It is marked FAIL (not counted) and its parameters are enqueued, so the
next ``ask`` returns the same learning rate, hence the same run id: if the
run had finished and its row was appended, the row is reused; otherwise the
run starts again. Finished trials are never repeated. The sampler is
re-seeded at every ask with ``seed + trials finished``, so a search that was
interrupted proposes the same values as one that was not.

Studies advance in rounds, one trial of every unfinished study per round,
so runs of different studies can execute side by side (``--jobs``, Ray).
A trial whose run fails (e.g. the loss diverged at a high learning rate)
counts as a finished trial with state FAIL. With ``pruner: median`` each
trial carries the finished trials' validation curves and Optuna's
MedianPruner stops it early inside its own process (:mod:`.prune`); it is
told PRUNED. Every trial's validation scores are reported to the study. The best trial's learning rate
then trains the suite's seeds (:func:`energybench.run.plan.expand`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Callable

from energybench.run.blocks import SearchSettings
from energybench.run.plan import RunSpec, expand
from energybench.run.prune import PRUNE_KEY, pruning_payload
from energybench.suite import Suite, stable_hash

JOURNAL_FILE = "search.journal"
SUMMARY_FILE = "search.json"
Key = tuple[str, str, str]  # (backbone label, task, method label)
Dispatch = Callable[[list[RunSpec]], dict[str, dict]]


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def base_specs(suite: Suite) -> dict[Key, RunSpec]:
    """One spec per (backbone, task, method) at the suite's first seed: what each trial varies."""
    seed = suite.seeds[0]
    return {(s.backbone.display, s.task.name, s.method.display): s for s in expand(suite) if s.seed == seed}


def study_name(key: Key, base: RunSpec, settings: SearchSettings) -> str:
    """Names the study by what it searches; a changed range or training setup starts a new study
    (raising ``trials`` continues the old one)."""
    cfg = base.config()
    cfg["training"] = {k: v for k, v in cfg["training"].items() if k != "learning_rate"}
    tag = stable_hash({"search": settings.model_dump(exclude={"trials"}), "base": cfg})
    return f"{' · '.join(key)} · {tag}"


def trial_spec(base: RunSpec, study: str, number: int, lr: float) -> RunSpec:
    spec = base.model_copy(update={"training": base.training.model_copy(update={"learning_rate": lr}),
                                   "role": "trial",
                                   "trial": {"study": study, "number": number, "params": {"learning_rate": lr}}})
    return spec.model_copy(update={"run_id": stable_hash(spec.config())})


def finished(study) -> list:
    """Trials that count: completed, or failed because their run failed (not cut off by a kill)."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (t.state == TrialState.FAIL and "run_failed" in t.user_attrs)]


def recover(study) -> int:
    """Mark trials a killed driver left RUNNING as FAIL and enqueue their parameters again; returns how many."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, ))
    for t in stale:
        study.tell(t.number, state=TrialState.FAIL)
        if t.params:
            study.enqueue_trial(dict(t.params), skip_if_exists=False)
    return len(stale)


def run_searches(suite: Suite, out: Path, dispatch: Dispatch, echo: Callable[[str], None] = print) -> dict[Key, float]:
    """Run (or finish) every study; return the chosen learning rate per (backbone, task, method)."""
    optuna = _optuna()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    settings: SearchSettings = suite.search
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning on some storages
        storage = JournalStorage(JournalFileBackend(str(out / JOURNAL_FILE)))
    bases = base_specs(suite)
    studies = {}
    for key, base in bases.items():
        name = study_name(key, base, settings)
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
        n = recover(study)
        if n:
            echo(f"search {' · '.join(key)}: {n} trial(s) cut off last time; their learning rates are tried again")
        studies[key] = study
    done = sum(min(len(finished(s)), settings.trials) for s in studies.values())
    total = settings.trials * len(studies)
    echo(f"learning-rate search: {len(studies)} stud{'y' if len(studies) == 1 else 'ies'} × {settings.trials} trials "
         f"(TPE, {settings.low:g}–{settings.high:g}{', log' if settings.log else ''}); {done} of {total} done")
    while True:
        batch = []
        for key, study in studies.items():
            n_done = len(finished(study))
            if n_done >= settings.trials:
                continue
            study.sampler = optuna.samplers.TPESampler(seed=settings.seed + n_done,
                                                       n_startup_trials=settings.startup_trials)
            trial = study.ask()
            lr = trial.suggest_float(settings.parameter, settings.low, settings.high, log=settings.log)
            spec = trial_spec(bases[key], study.study_name, trial.number, lr)
            if settings.pruner != "none":
                complete = [t for t in finished(study) if t.state == TrialState.COMPLETE]  # as MedianPruner counts
                spec.trial[PRUNE_KEY] = pruning_payload(settings, complete)
            trial.set_user_attr("run_id", spec.run_id)
            batch.append((study, trial, spec))
        if not batch:
            break
        rows = dispatch([spec for _, _, spec in batch])
        for study, trial, spec in batch:
            row = rows.get(spec.run_id)
            score = row.get("val_score") if row else None
            reported: set[int] = set()
            for point in (row or {}).get("curve") or []:  # the validation scores, for the pruner and the record
                if point.get("val_score") is not None and int(point["step"]) not in reported:
                    trial.report(float(point["val_score"]), int(point["step"]))
                    reported.add(int(point["step"]))
            if row is not None and row.get("status") == "ok" and row.get("pruned_at_step") is not None:
                study.tell(trial, state=TrialState.PRUNED)
            elif row is not None and row.get("status") == "ok" and score is not None:
                study.tell(trial, float(score))
            else:
                why = (row or {}).get("error") or "the run recorded no validation score"
                trial.set_user_attr("run_failed", str(why)[:500])
                study.tell(trial, state=TrialState.FAIL)
    chosen = _choose(suite, studies, echo)
    _write_summary(out, studies, chosen)
    return chosen


def _choose(suite: Suite, studies: dict, echo: Callable[[str], None]) -> dict[Key, float]:
    chosen = {}
    for key, study in studies.items():
        complete = [t for t in finished(study) if t.state.name == "COMPLETE"]  # not pruned, not failed
        if not complete:
            echo(f"search {' · '.join(key)}: no trial finished; final runs keep the configured learning rate")
            continue
        best = max(complete, key=lambda t: (t.value, -t.number))  # ties: the earliest trial
        chosen[key] = float(best.params[suite.search.parameter])
        echo(f"search {' · '.join(key)}: learning rate {chosen[key]:.3g} (val {best.value:.2f}, trial {best.number}, "
             f"{len(finished(study))} trials)")
    return chosen


def _write_summary(out: Path, studies: dict, chosen: dict[Key, float]) -> None:
    """search.json: every study's trials and the value chosen (the journal stays the source of truth)."""
    doc = []
    for key, study in studies.items():
        trials = [{"number": t.number, "state": t.state.name, "params": t.params, "value": t.value,
                   "run_id": t.user_attrs.get("run_id"), "run_failed": t.user_attrs.get("run_failed")}
                  for t in study.get_trials(deepcopy=False)]
        doc.append({"backbone": key[0], "task": key[1], "method": key[2], "study": study.study_name,
                    "chosen_learning_rate": chosen.get(key), "trials": trials})
    (out / SUMMARY_FILE).write_text(json.dumps(doc, indent=2), encoding="utf-8")
