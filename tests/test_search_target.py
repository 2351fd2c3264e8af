"""Learning-rate search and cost to target, driven through the real runner with a scripted executor.

The executor stands in for training: a run's validation scores are a fixed
function of its learning rate and seed, so what the search must choose and
where a target is reached are known independently of the code under test.
The end-to-end versions with real (tiny) training are in test_search_target_e2e.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from energybench.regress.metrics import METRICS
from energybench.results import RunResult, read_rows
from energybench.run.runner import run_suite
from energybench.run.target import scan_to_target
from energybench.suite import SuiteError, load_suite, parse_suite

BEST_LR = 1.0e-3


def fake_curve(lr: float, seed: int, method: str) -> list[dict]:
    """Scores rise over 4 validations to a peak that is highest at BEST_LR; full_ft a little better."""
    peak = 90.0 - 10.0 * abs(math.log10(lr) - math.log10(BEST_LR)) + (2.0 if method == "full_ft" else 0.0) + seed
    return [{"step": s, "examples": 16 * s, "val_score": peak - 6.0 + 2.0 * i, "wall_s": 0.5 * s,
             "energy_kwh": 1e-6 * s, "provenance": {}, "reasons": {}}
            for i, s in enumerate((2, 4, 6, 8))]


class ScriptedExecutor:
    """Yields rows computed from each spec; ``die_at`` raises (the driver 'killed') at that trial count."""

    name = "local"

    def __init__(self, die_at: int | None = None, die_after_row: bool = False):
        self.executed: list = []
        self.die_at, self.die_after_row = die_at, die_after_row
        self.trials_seen = 0

    def prepare(self, suite, n):
        return []

    def close(self):
        pass

    def run(self, specs, events):
        for spec in specs:
            if spec.role == "trial":
                if self.die_at is not None and self.trials_seen == self.die_at and not self.die_after_row:
                    raise KeyboardInterrupt("driver killed mid-trial")
                self.trials_seen += 1
            self.executed.append(spec)
            lr = spec.training.learning_rate
            curve = fake_curve(lr, spec.seed, spec.method.name)
            row = RunResult(run_id=spec.run_id, suite=spec.suite, backbone=spec.backbone.display, task=spec.task.name,
                            method=spec.method.display, method_name=spec.method.name, seed=spec.seed,
                            config=spec.config(), status="ok", val_score=max(p["val_score"] for p in curve),
                            score=50.0, curve=curve)
            yield spec, row
            if spec.role == "trial" and self.die_after_row and self.trials_seen == self.die_at + 1:
                raise KeyboardInterrupt("driver killed after the trial's row, before Optuna was told")


def suite_text(out: Path, methods: str = "[{name: full_ft}, {name: lora}]", seeds: str = "[0, 1]",
               extra: str = "search: {trials: 4, low: 1.0e-5, high: 1.0e-1, seed: 3}") -> str:
    return (f"name: st\noutput_dir: {out}\nbackbones: [{{name: tiny-t5}}]\ntasks: [{{name: synth-sst2}}]\n"
            f"methods: {methods}\nseeds: {seeds}\n{extra}\n")


def _suite(tmp_path: Path, name: str = "suite.yaml", **kw):
    path = tmp_path / name
    path.write_text(suite_text(tmp_path / "out", **kw), encoding="utf-8")
    return load_suite(path)


def test_four_trial_search_writes_trial_rows_then_final_seeds_with_the_best_lr(tmp_path):
    suite = _suite(tmp_path)
    ex = ScriptedExecutor()
    summary = run_suite(suite, executor=ex, echo=lambda m: None)
    rows = read_rows(tmp_path / "out" / "results.jsonl")
    trials = [r for r in rows if r["role"] == "trial"]
    finals = [r for r in rows if r["role"] == "final"]
    assert len(trials) == 8 and len(finals) == 4 and (summary.ok, summary.trials) == (4, 8)
    assert rows[: len(trials)] == trials, "every trial finishes before the final runs start"
    for method in ("full_ft", "lora"):
        mine = [r for r in trials if r["method"] == method]
        assert sorted(r["trial"]["number"] for r in mine) == [0, 1, 2, 3]
        assert all(r["seed"] == 0 for r in mine), "trials train with the suite's first seed"
        lrs = [r["trial"]["params"]["learning_rate"] for r in mine]
        assert all(1e-5 <= lr <= 1e-1 for lr in lrs) and len(set(lrs)) == 4
        best = max(lrs, key=lambda lr: max(p["val_score"] for p in fake_curve(lr, 0, method)))
        used = {r["seed"]: r["config"]["training"]["learning_rate"] for r in finals if r["method"] == method}
        assert used == {0: best, 1: best}
    doc = json.loads((tmp_path / "out" / "search.json").read_text())
    assert {d["method"]: len(d["trials"]) for d in doc} == {"full_ft": 4, "lora": 4}


@pytest.mark.parametrize("after_row", [False, True], ids=["before its row", "after its row"])
def test_search_killed_mid_trial_finishes_without_repeating_finished_trials(tmp_path, after_row):
    suite = _suite(tmp_path, methods="[{name: lora}]", seeds="[0]")
    first = ScriptedExecutor(die_at=2, die_after_row=after_row)
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, executor=first, echo=lambda m: None)
    before = read_rows(tmp_path / "out" / "results.jsonl")
    assert len(before) == (3 if after_row else 2)
    cut_lr = first.executed[-1].training.learning_rate if after_row else None
    second = ScriptedExecutor()
    notes: list[str] = []
    run_suite(suite, executor=second, echo=notes.append)
    assert any("cut off last time" in n for n in notes)
    rows = read_rows(tmp_path / "out" / "results.jsonl")
    assert rows[: len(before)] == before
    trials = [r for r in rows if r["role"] == "trial"]
    assert len(trials) == 4 and len({r["run_id"] for r in trials}) == 4
    again = [s for s in second.executed if s.role == "trial"]
    done_ids = {r["run_id"] for r in before}
    assert not any(s.run_id in done_ids for s in again), "a finished trial ran again"
    assert len(again) == (1 if after_row else 2)
    if after_row:
        assert cut_lr in [r["trial"]["params"]["learning_rate"] for r in trials]

    # the resumed search proposes what an uninterrupted one does (the sampler is re-seeded per ask)
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "suite.yaml").write_text(suite_text(clean / "out", methods="[{name: lora}]", seeds="[0]"))
    run_suite(load_suite(clean / "suite.yaml"), executor=ScriptedExecutor(), echo=lambda m: None)
    clean_rows = read_rows(clean / "out" / "results.jsonl")
    lrs = sorted(r["config"]["training"]["learning_rate"] for r in rows)
    assert lrs == sorted(r["config"]["training"]["learning_rate"] for r in clean_rows)


def test_relative_target_uses_the_seed_matched_reference_and_waits_for_it(tmp_path):
    suite = _suite(tmp_path, extra="target: {relative_to: full_ft, fraction: 0.97}",
                   methods="[{name: lora}, {name: full_ft}]")  # the reference is listed last: order must not matter
    ex = ScriptedExecutor()
    run_suite(suite, executor=ex, echo=lambda m: None)
    order = [s.method.name for s in ex.executed]
    assert order == ["full_ft", "full_ft", "lora", "lora"], "the reference runs first"
    rows = {(r["method"], r["seed"]): r for r in read_rows(tmp_path / "out" / "results.jsonl")}
    lr = suite.training.learning_rate
    for seed in (0, 1):
        ref_best = max(p["val_score"] for p in fake_curve(lr, seed, "full_ft"))
        row = rows[("lora", seed)]
        assert row["target"]["score"] == pytest.approx(0.97 * ref_best)
        assert row["target"]["reference_run_id"] == rows[("full_ft", seed)]["run_id"]
        first = next((p for p in fake_curve(lr, seed, "lora") if p["val_score"] >= 0.97 * ref_best), None)
        if first is None:
            assert row["to_target"] is None and row["to_target_reason"].startswith("not reached")
        else:
            assert row["to_target"]["step"] == first["step"] and row["to_target"]["wall_s"] == first["wall_s"]
        own = rows[("full_ft", seed)]
        assert own["target"]["score"] == pytest.approx(0.97 * ref_best)  # the reference is held to its own best
        assert own["to_target"] is not None


def test_absolute_target_never_reached_is_null_with_the_best_score_and_its_step(tmp_path):
    suite = _suite(tmp_path, extra="target: {synth-sst2: 99.5}", methods="[{name: lora}]", seeds="[0]")
    run_suite(suite, executor=ScriptedExecutor(), echo=lambda m: None)
    (row,) = read_rows(tmp_path / "out" / "results.jsonl")
    curve = fake_curve(suite.training.learning_rate, 0, "lora")
    best = max(curve, key=lambda p: p["val_score"])
    assert row["to_target"] is None
    assert row["to_target_reason"] == f"not reached (best {round(best['val_score'], 2):g} at step {best['step']})"
    assert METRICS["to_target_steps"].value(row) == (None, row["to_target_reason"])


def test_scan_to_target_is_the_first_point_at_or_above():
    pts = [{"step": 1, "val_score": 10.0}, {"step": 2, "val_score": 30.0}, {"step": 3, "val_score": 20.0},
           {"step": 4, "val_score": 30.0}]
    assert scan_to_target(pts, 30.0)[0]["step"] == 2
    assert scan_to_target(pts, 25.0)[0]["step"] == 2
    assert scan_to_target(pts, 30.5) == (None, "not reached (best 30 at step 2)")
    assert scan_to_target([], 1.0) == (None, "not reached (no validation score recorded)")
    assert METRICS["to_target_wall_s"].value({"to_target": {"wall_s": 2.5}}) == (2.5, None)
    assert not METRICS["to_target_wall_s"].deterministic and METRICS["to_target_steps"].deterministic


@pytest.mark.parametrize("block, message", [
    ("search: {trials: 33}", "search.trials: must be at most 32"),
    ("search: {low: 1.0e-2, high: 1.0e-3}", "low (0.01) must be below high (0.001)"),
    ("target: {sst2: 90.0}", "sst2 not among the suite's tasks"),
    ("target: {relative_to: dora, fraction: 0.9}", "'dora' is not one of the suite's methods"),
    ("target: {relative_to: full_ft}", "needs both relative_to"),
    ("target: {relative_to: full_ft, fraction: 1.5}", "must be at most 1"),
])
def test_bad_blocks_name_the_field_and_line(tmp_path, block, message):
    text = suite_text(tmp_path / "out", extra=block)
    with pytest.raises(SuiteError) as exc:
        parse_suite(text, "s.yaml")
    assert message in str(exc.value) and "s.yaml:7" in str(exc.value)


def test_report_has_cost_to_target_search_table_and_learning_curves(tmp_path):
    import pandas as pd

    from energybench.report.build import write_report
    from energybench.report.curves import learning_curves

    suite = _suite(tmp_path, extra="search: {trials: 2, low: 1.0e-5, high: 1.0e-1}\n"
                                   "target: {relative_to: full_ft, fraction: 0.97}")
    run_suite(suite, executor=ScriptedExecutor(), echo=lambda m: None)
    out = tmp_path / "out"
    write_report([out], out, formats=("md", "csv", "png"))
    md = (out / "report.md").read_text()
    assert "### Cost to target" in md and "### Learning-rate search" in md
    assert (out / "learning_curves_tiny-t5.png").exists()
    quality = pd.read_csv(out / "report.csv")
    assert dict(zip(quality["method"], quality["runs"])) == {"full_ft": 2, "lora": 2}, "trials left out"

    rows = read_rows(out / "results.jsonl")
    finals = [r for r in rows if r["role"] == "final"]
    tt = pd.read_csv(out / "cost_to_target.csv").set_index("method")
    for method in ("full_ft", "lora"):
        steps = []
        for r in (r for r in finals if r["method"] == method):
            ref = next(x for x in finals if x["method"] == "full_ft" and x["seed"] == r["seed"])
            lr = r["config"]["training"]["learning_rate"]
            hit = next((p for p in fake_curve(lr, r["seed"], method) if p["val_score"] >= 0.97 * ref["val_score"]),
                       None)
            if hit is not None:
                steps.append(hit["step"])
        assert tt.loc[method, "seeds_reached"] == len(steps)
        if steps:
            assert tt.loc[method, "step_mean"] == pytest.approx(sum(steps) / len(steps))
    search = pd.read_csv(out / "learning_rate_search.csv")
    trials = [r for r in rows if r["role"] == "trial"]
    for _, rec in search.iterrows():
        mine = [r for r in trials if r["method"] == rec["method"]]
        best = max(mine, key=lambda r: r["val_score"])
        assert rec["trials"] == 2 and rec["best_learning_rate"] == pytest.approx(best["trial"]["params"]["learning_rate"])
    assert "cumulative training energy" in learning_curves(rows, "tiny-t5").xlabel

    for r in rows:  # no energy at some validation: the axis falls back to wall time, and says so
        for p in r.get("curve") or []:
            p["energy_kwh"], p["reasons"] = None, {"energy_kwh": "host energy disabled"}
    plot = learning_curves(rows, "tiny-t5")
    assert "wall time" in plot.xlabel and "host energy disabled" in plot.caption


def test_a_target_added_later_rescores_finished_runs_without_training_again(tmp_path):
    plain = _suite(tmp_path, extra="", methods="[{name: lora}]", seeds="[0]")
    run_suite(plain, executor=ScriptedExecutor(), echo=lambda m: None)
    (before,) = read_rows(tmp_path / "out" / "results.jsonl")
    assert before["to_target"] is None and before["target"] is None
    with_target = _suite(tmp_path, name="t.yaml", extra="target: {synth-sst2: 80.0}", methods="[{name: lora}]",
                         seeds="[0]")
    ex, notes = ScriptedExecutor(), []
    run_suite(with_target, executor=ex, echo=notes.append)
    assert ex.executed == [] and any("re-scored" in n for n in notes)
    rows = read_rows(tmp_path / "out" / "results.jsonl")
    assert len(rows) == 2 and rows[1]["run_id"] == before["run_id"]
    first = next(p for p in before["curve"] if p["val_score"] >= 80.0)
    assert rows[1]["to_target"]["step"] == first["step"]
    run_suite(with_target, executor=ex, echo=lambda m: None)
    assert len(read_rows(tmp_path / "out" / "results.jsonl")) == 2, "an unchanged target appends nothing"


class PruningExecutor(ScriptedExecutor):
    """Feeds each trial's scripted curve through the trial's own pruner, as the training loop does."""

    def run(self, specs, events):
        from energybench.run.prune import MedianPruning

        for spec, row in super().run(specs, events):
            payload = (spec.trial or {}).get("prune")
            if payload:
                pruner, kept = MedianPruning(payload), []
                for p in row.curve:
                    kept.append(p)
                    if pruner(p["step"], p["examples"], p["val_score"]):
                        break
                row.curve, row.val_score = kept, max(p["val_score"] for p in kept)
                row.pruned_at_step = pruner.pruned_at
            yield spec, row


def test_median_pruner_stops_trials_below_the_median_of_finished_ones(tmp_path):
    suite = _suite(tmp_path, methods="[{name: lora}]", seeds="[0]",
                   extra="search: {trials: 8, low: 1.0e-5, high: 1.0e-1, pruner: median, pruner_startup_trials: 2}")
    run_suite(suite, executor=PruningExecutor(), echo=lambda m: None)
    trials = sorted((r for r in read_rows(tmp_path / "out" / "results.jsonl") if r["role"] == "trial"),
                    key=lambda r: r["trial"]["number"])
    assert len(trials) == 8
    complete: list[list[dict]] = []
    for r in trials:  # an independent MedianPruner (maximize): best so far below the finished trials' median
        curve = fake_curve(r["trial"]["params"]["learning_rate"], 0, "lora")
        expected = None
        if len(complete) >= 2:
            for i, p in enumerate(curve):
                others = sorted(c[i]["val_score"] for c in complete)
                mid = len(others) // 2
                median = others[mid] if len(others) % 2 else (others[mid - 1] + others[mid]) / 2
                if max(q["val_score"] for q in curve[: i + 1]) < median:
                    expected = p["step"]
                    break
        assert r["pruned_at_step"] == expected, r["trial"]["number"]
        if expected is None:
            complete.append(curve)
    assert any(r["pruned_at_step"] is not None for r in trials), "the script should prune some trial"
    doc = json.loads((tmp_path / "out" / "search.json").read_text())
    states = [t["state"] for t in doc[0]["trials"]]
    assert states.count("PRUNED") == sum(r["pruned_at_step"] is not None for r in trials)
    best = max((r for r in trials if r["pruned_at_step"] is None), key=lambda r: r["val_score"])
    assert doc[0]["chosen_learning_rate"] == best["trial"]["params"]["learning_rate"]


def test_a_pruned_trial_stops_training_at_that_validation(tmp_path):
    """Real training in-process: the pruner's verdict stops fit() like early stopping."""
    from energybench.run.execute import execute
    from energybench.run.plan import expand

    text = suite_text(tmp_path / "out", methods="[{name: bitfit}]", seeds="[0]", extra="") + (
        "training: {batch_size: 8, max_steps: 6, eval_every_steps: 2, max_source_length: 32, max_eval_examples: 8,"
        " eval_batch_size: 16}\nmeasure: {latency_warmup: 1, latency_repeats: 2, host_energy: false}\n")
    (spec,) = expand(parse_suite(text))
    payload = {"pruner": "median", "startup_trials": 0, "warmup_steps": 0,
               "curves": [{"2": 101.0, "4": 101.0, "6": 101.0}]}  # no score reaches 101: pruned at once
    spec = spec.model_copy(update={"role": "trial", "trial": {"study": "s", "number": 1, "prune": payload}})
    row = execute(spec, log=lambda m: None)
    assert row.status == "ok", row.error
    assert (row.steps, row.pruned_at_step, row.stopped_early) == (2, 2, True)
    assert [p["step"] for p in row.curve] == [2]
