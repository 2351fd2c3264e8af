"""Fault campaign: bad suites, kills at random points (inside the append too), signals and disk faults.

Prints the counts issue 17 asks for:

    N bad suites: N clean errors, 0 tracebacks
    K kills: 0 rows lost, 0 duplicated

Parts:

- **bad suites** (in this process, through ``energybench.cli.main``): the
  probe's hostile and malformed suites (a YAML bomb, a 2 MB file, non-UTF-8,
  a directory, duplicate keys and entries, non-finite and absurd numbers,
  wrong types, unknown names, a malformed TSV in ``data_dir`` ...) plus
  seeded random mutations of a valid suite (lines dropped, duplicated,
  retyped; bytes flipped; truncation). A *clean error* is exit 2 with every
  problem naming the file (and a line wherever the file has one); a
  *traceback* is any exception escaping ``main`` or "Traceback" in its output.
  Mutations that leave a valid suite are counted apart (the grid is not run).
- **kills**: ``energybench run`` on a 12-run grid whose runs are replaced by
  a fake that sleeps 0.15–0.4 s and reports a row (the runner, the lock, the
  appends and the resume are the real ones; only training is faked, so a
  kill costs seconds, not minutes). Each attempt is SIGKILLed at a random
  time, or kills itself inside an append after writing part of a row (a
  slowed writer makes the append span milliseconds); then the next attempt
  resumes. Before each kill the complete lines on disk are recorded: a
  *lost* row is one of them missing afterwards, a *duplicated* one an ok
  run recorded twice at the end.
- **signals**: SIGINT and SIGTERM mid-grid: exit 130 / 143, the "stopped: N
  of M runs saved" line, no traceback, no torn line.
- **disk faults**: the writer runs out of space at a random byte of a
  random row: exit 2 naming results.jsonl and the free space, only complete
  lines on disk; then the same command finishes the grid.

Usage: ``python benchmarks/fault_campaign.py [--kills 9] [--mutations 40] [--seed 17]``. About three minutes
on 2 busy cores (each attempt starts a Python process that imports torch).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

HERE = Path(__file__).resolve().parent

GRID = """\
name: campaign
output_dir: {out}
backbones:
  - name: tiny-t5
tasks:
  - name: synth-sst2
methods:
  - name: full_ft
  - name: bitfit
  - name: lora
    r: 4
  - name: adapter
seeds: [0, 1, 2, 3, 4]
measure:
  host_energy: false
  gpu_energy: false
"""

# The child of the kill/signal/disk parts: the real `energybench run`, with training replaced by a sleep.
DRIVER = textwrap.dedent("""
    import errno, os, random, signal, sys, time
    import energybench.results as results
    import energybench.run.runner as runner
    import energybench.report.build as build
    from energybench.run.executors import LocalExecutor
    from energybench.results import RunResult
    from energybench.cli import main

    def fake_run(spec, relay, **kw):
        time.sleep(random.uniform(0.15, 0.4))
        return RunResult(run_id=spec.run_id, suite=spec.suite, backbone=spec.backbone.display, task=spec.task.name,
                         method=spec.method.display, method_name=spec.method.name, seed=spec.seed,
                         config=spec.config(), status="ok", score=50.0, steps=5,
                         warnings=["padding " * 40])  # rows of ~1.5 kB, so an append spans many chunks

    runner.make_executor = lambda settings: LocalExecutor(settings, run_fn=fake_run)
    write_report = build.write_report
    build.write_report = lambda dirs, out, formats=("md",), **kw: write_report(dirs, out, ("md", "csv"), **kw)

    mode, arg = os.environ.get("CAMPAIGN_MODE", ""), int(os.environ.get("CAMPAIGN_ARG", "0") or 0)
    rows_written = [0]
    real_write = os.write

    def slow_write(fd, data):  # a slow disk: 128-byte chunks, so kills can land inside an append
        n = real_write(fd, bytes(data[:128]))
        time.sleep(0.002)
        if mode == "kill-in-append" and rows_written[0] == arg:  # part of a row is on disk
            os.kill(os.getpid(), signal.SIGKILL)
        return n

    full_at = [None]

    def full_disk(fd, data):  # ENOSPC after `arg` more bytes of results.jsonl
        if full_at[0] is None:
            full_at[0] = arg
        if full_at[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real_write(fd, bytes(data[: min(len(data), full_at[0])]))
        full_at[0] -= n
        return n

    def writer(fd, data):
        if not os.readlink(f"/proc/self/fd/{fd}").endswith("results.jsonl"):
            return real_write(fd, data)
        if mode == "disk-full":
            return full_disk(fd, data)
        return slow_write(fd, data)

    results._write = writer
    real_append = results.append_result

    def counting_append(path, row):
        real_append(path, row)
        rows_written[0] += 1

    runner.append_result = counting_append
    sys.exit(main(["run", sys.argv[1]]))
""")


# --------------------------------------------------------------------------- bad suites


def bad_suites(root: Path, n_mutations: int, rng: random.Random) -> list[tuple[str, Path]]:
    """(what, path) of every bad suite; written under ``root``."""
    valid = GRID.format(out=root / "out")
    cases: dict[str, bytes | None] = {}
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    cases["YAML bomb, 9 levels of 9 aliases"] = ("\n".join(levels) + "\n").encode()
    cases["recursive alias"] = b"name: &x [*x]\n"
    cases["2 MB of unknown keys"] = "".join(f"k{i}: {i}\n" for i in range(200_000)).encode()
    cases["non-UTF-8 byte"] = valid.encode() + b"description: caf\xe9\n"
    cases["control character"] = b"\x0e" + valid.encode()
    cases["empty file"] = b""
    cases["a list, not a mapping"] = b"- name: x\n"
    cases["a scalar"] = b"just text\n"
    cases["tab indentation"] = valid.replace("  - name: tiny-t5", "\t- name: tiny-t5").encode()
    cases["unclosed bracket"] = valid.replace("seeds: [0, 1, 2, 3, 4]", "seeds: [0, 1, 2").encode()
    cases["training: twice"] = (valid + "training:\n  max_steps: 5\ntraining:\n  max_steps: 224\n").encode()
    cases["duplicate key in a method"] = valid.replace("    r: 4", "    r: 4\n    r: 8").encode()
    cases["seeds: [0, 0]"] = valid.replace("seeds: [0, 1, 2, 3, 4]", "seeds: [0, 0]").encode()
    cases["the same backbone twice"] = valid.replace("  - name: tiny-t5\n", "  - name: tiny-t5\n  - name: tiny-t5\n"
                                                     "    label: again\n").encode()
    cases["duplicate labels"] = valid.replace("  - name: bitfit", "  - name: bitfit\n    label: full_ft").encode()
    for field, value in [("learning_rate", ".inf"), ("learning_rate", "-.inf"), ("learning_rate", ".nan"),
                         ("batch_size", "true"), ("batch_size", "8.0"), ("batch_size", "'8'"), ("max_steps", "1e29"),
                         ("max_steps", "100000000000000000000000000000"), ("batch_size", "-1"),
                         ("warmup_ratio", "1.5"), ("learning_rate", "1.0e+400")]:
        cases[f"training.{field}: {value}"] = (valid + f"training:\n  {field}: {value}\n").encode()
    for field, value in [("latency_repeats", "1000000000000"), ("latency_repeats", "1.0e+12"),
                         ("latency_warmup", "-3"), ("nvml_interval_s", ".inf"), ("host_energy", "maybe")]:
        cases[f"measure.{field}: {value}"] = valid.replace("  host_energy: false\n", "").replace(
            "measure:\n", f"measure:\n  {field}: {value}\n").encode()
    cases["unknown top-level key"] = (valid + "trainig:\n  max_steps: 5\n").encode()
    cases["unknown method"] = valid.replace("  - name: adapter", "  - name: lora_typo").encode()
    cases["unknown method setting"] = valid.replace("    r: 4", "    rank: 4").encode()
    cases["negative rank"] = valid.replace("    r: 4", "    r: -4").encode()
    cases["r: .inf"] = valid.replace("    r: 4", "    r: .inf").encode()
    cases["unknown task"] = valid.replace("synth-sst2", "synth-sst3").encode()
    cases["unknown backbone (offline)"] = valid.replace("tiny-t5", "no-such/model-xyz").encode()
    cases["backbone path missing"] = valid.replace("  - name: tiny-t5", f"  - name: t5-small\n    path: "
                                                   f"{root / 'nowhere'}").encode()
    cases["data_dir missing"] = valid.replace("  - name: synth-sst2", f"  - name: sst2\n    data_dir: "
                                              f"{root / 'no-data'}").encode()
    glue = root / "glue" / "SST-2"
    glue.mkdir(parents=True, exist_ok=True)
    (glue / "train.tsv").write_text("sentence\tlabel\nfine\t1\nno label here\n")
    (glue / "dev.tsv").write_text("sentence\tlabel\na\t0\n")
    cases["malformed TSV in data_dir"] = valid.replace("  - name: synth-sst2", f"  - name: sst2\n    data_dir: "
                                                       f"{root / 'glue'}").encode()
    latin = root / "latin" / "SST-2"
    latin.mkdir(parents=True, exist_ok=True)
    (latin / "train.tsv").write_bytes(b"sentence\tlabel\ncaf\xe9\t1\n")
    (latin / "dev.tsv").write_text("sentence\tlabel\na\t0\n")
    cases["non-UTF-8 TSV in data_dir"] = valid.replace("  - name: synth-sst2", f"  - name: sst2\n    data_dir: "
                                                       f"{root / 'latin'}").encode()
    cases["missing name"] = valid.replace("name: campaign\n", "").encode()
    cases["empty output_dir"] = valid.replace(f"output_dir: {root / 'out'}", "output_dir: ''").encode()
    cases["methods: []"] = valid[: valid.index("methods:")].encode() + b"methods: []\n"
    cases["device: tpu"] = (valid + "device: tpu\n").encode()
    cases["a directory as the suite"] = None
    cases["a missing file"] = None
    out = []
    for i, (what, data) in enumerate(cases.items()):
        p = root / f"case{i:02d}.yaml"
        if what == "a directory as the suite":
            p.mkdir()
        elif data is not None:
            p.write_bytes(data)
        out.append((what, p))
    lines = valid.encode().splitlines(keepends=True)
    values = [b"true", b"null", b"-1", b"0", b"1.5", b".inf", b".nan", b"1e400", b"[]", b"{}", b"x", b"*a", b"&a 1",
              b"[0, 0]", b"!!binary aGk=", b"100000000000000000000"]
    for j in range(n_mutations):
        data = list(lines)
        for _ in range(rng.randint(1, 3)):
            kind = rng.choice(["drop", "dup", "retype", "flip", "truncate"])
            i = rng.randrange(len(data))
            if kind == "drop" and len(data) > 1:
                del data[i]
            elif kind == "dup":
                data.insert(i, data[i])
            elif kind == "retype":
                head, sep, _ = data[i].partition(b":")
                data[i] = head + b": " + rng.choice(values) + b"\n" if sep else b"  - " + rng.choice(values) + b"\n"
            elif kind == "flip":
                blob = b"".join(data)
                k = rng.randrange(len(blob))
                data = (blob[:k] + bytes([blob[k] ^ rng.randint(1, 255)]) + blob[k + 1:]).splitlines(keepends=True)
            else:
                blob = b"".join(data)
                data = [blob[: rng.randrange(len(blob))]]
            data = data or [b""]
        p = root / f"mutation{j:02d}.yaml"
        p.write_bytes(b"".join(data))
        out.append((f"mutation {j}", p))
    return out


def campaign_bad_suites(root: Path, n_mutations: int, rng: random.Random) -> dict:
    import energybench.run.runner as runner
    from energybench.cli import main
    from energybench.run.runner import GridSummary

    runner.run_suite = lambda *a, **k: GridSummary()  # a suite that passes is not trained
    import energybench.report.build as build

    build.write_report = lambda *a, **k: [Path("report.md")]
    counts = {"suites": 0, "clean": 0, "tracebacks": 0, "unclear": 0, "accepted": 0, "slowest_s": 0.0}
    examples = []
    for what, path in bad_suites(root, n_mutations, rng):
        err, out = io.StringIO(), io.StringIO()
        t0 = time.perf_counter()
        try:
            with redirect_stderr(err), redirect_stdout(out):
                code = main(["run", str(path)])
        except BaseException as exc:  # noqa: BLE001 - what the campaign hunts for
            code, text = None, f"Traceback: {type(exc).__name__}: {exc}"
        else:
            text = err.getvalue()
        dt = time.perf_counter() - t0
        counts["slowest_s"] = max(counts["slowest_s"], dt)
        if code == 0 and what.startswith("mutation"):
            counts["accepted"] += 1
            continue
        counts["suites"] += 1
        problems = [line for line in text.splitlines()[1:] if line.strip() and not line.startswith("(")]
        if code is None or "Traceback" in text:
            counts["tracebacks"] += 1
            examples.append(f"TRACEBACK {what}: {text[-300:]}")
        elif code == 2 and problems and all(line.startswith(str(path)) for line in problems):
            counts["clean"] += 1
            if not what.startswith("mutation"):
                examples.append(f"{what} ({dt:.2f} s): {problems[0].replace(str(root) + '/', '')[:150]}")
        else:
            counts["unclear"] += 1
            examples.append(f"UNCLEAR {what} (exit {code}): {text[-300:]}")
    counts["examples"] = examples
    return counts


# --------------------------------------------------------------------------- kills, signals, disk faults


def complete_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    data = path.read_bytes()
    return [json.loads(x) for x in data[: data.rfind(b"\n") + 1].splitlines() if x.strip()]


def torn(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")


def start(suite: Path, mode: str = "", arg: int = 0) -> subprocess.Popen:
    env = {**os.environ, "CAMPAIGN_MODE": mode, "CAMPAIGN_ARG": str(arg), "PYTHONWARNINGS": "ignore",
           "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(suite)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def wait_rows(results: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if len(complete_lines(results)) >= n:
            return True
        time.sleep(0.02)
    return False


TOTAL = 20  # runs in GRID


def campaign_kills(root: Path, kills: int, rng: random.Random) -> dict:
    out = root / "kills"
    suite = root / "kills.yaml"
    suite.write_text(GRID.format(out=out))
    results = out / "results.jsonl"
    seen: set[str] = set()  # run_ids whose complete line was on disk after some kill
    lost = torn_seen = in_append = done_kills = 0
    while done_kills < kills and len(complete_lines(results)) < TOTAL:
        before = len(complete_lines(results))
        if done_kills % 3 == 2:  # every third kill happens inside an append, by the driver itself
            proc = start(suite, "kill-in-append", rng.randint(0, 1))
            proc.communicate(timeout=300)
            in_append += proc.returncode == -signal.SIGKILL
        else:  # the others at a random time after at least one new row
            proc = start(suite)
            wait_rows(results, before + 1, proc)
            time.sleep(rng.uniform(0.0, 0.5))
            proc.kill()
            proc.communicate()
        if proc.returncode != -signal.SIGKILL:
            continue  # it finished before the kill: not a kill
        done_kills += 1
        torn_seen += torn(results)
        on_disk = {r["run_id"] for r in complete_lines(results)}
        lost += len(seen - on_disk)
        seen |= on_disk
    final = start(suite)  # the same command once more: finishes the grid
    _, stderr = final.communicate(timeout=300)
    rows = complete_lines(results)
    lost += len(seen - {r["run_id"] for r in rows})
    ok = [r["run_id"] for r in rows if r["status"] == "ok"]
    return {"kills": done_kills, "in_append": in_append, "torn_tails_after_kill": torn_seen, "lost": lost,
            "duplicated": len(ok) - len(set(ok)), "final_ok": len(set(ok)), "final_exit": final.returncode,
            "final_torn": torn(results), "tracebacks": int("Traceback" in stderr)}


def campaign_signals(root: Path) -> list[dict]:
    out = []
    for sig, expect in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        d = root / f"sig{sig}"
        suite = root / f"sig{sig}.yaml"
        suite.write_text(GRID.format(out=d))
        proc = start(suite)
        wait_rows(d / "results.jsonl", 2, proc)
        proc.send_signal(sig)
        t0 = time.monotonic()
        _, stderr = proc.communicate(timeout=120)
        saved = len(complete_lines(d / "results.jsonl"))
        line = next((x for x in stderr.splitlines() if x.startswith("stopped:")), "")
        out.append({"signal": signal.Signals(sig).name, "exit": proc.returncode, "expected": expect,
                    "stop_s": round(time.monotonic() - t0, 2), "message": line.replace(str(root) + "/", ""),
                    "message_count_right": line.startswith(f"stopped: {saved} of {TOTAL} runs saved"),
                    "torn": torn(d / "results.jsonl"), "traceback": "Traceback" in stderr})
    return out


def campaign_disk(root: Path, faults: int, rng: random.Random) -> list[dict]:
    out = []
    for i in range(faults):
        d = root / f"disk{i}"
        suite = root / f"disk{i}.yaml"
        suite.write_text(GRID.format(out=d))
        budget = rng.randint(1500, 12000)  # bytes of results.jsonl before the disk is full
        proc = start(suite, "disk-full", budget)
        _, stderr = proc.communicate(timeout=300)
        data = (d / "results.jsonl").read_bytes() if (d / "results.jsonl").exists() else b""
        named = "results.jsonl: could not append" in stderr and "MiB free" in stderr
        rows = len(complete_lines(d / "results.jsonl"))
        again = start(suite)
        _, stderr2 = again.communicate(timeout=300)
        out.append({"budget_bytes": budget, "exit": proc.returncode, "named": named, "rows_kept": rows,
                    "only_complete_lines": data.endswith(b"\n") or not data, "traceback": "Traceback" in stderr,
                    "resume_exit": again.returncode, "resume_rows": len(complete_lines(d / "results.jsonl"))})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=9)
    ap.add_argument("--mutations", type=int, default=40)
    ap.add_argument("--disk-faults", type=int, default=3)
    ap.add_argument("--seed", type=int, default=17)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="energybench-campaign-") as tmp:
        root = Path(tmp)
        (root / "bad").mkdir()
        bad = campaign_bad_suites(root / "bad", args.mutations, rng)
        print(f"{bad['suites']} bad suites: {bad['clean']} clean errors, {bad['tracebacks']} tracebacks, "
              f"{bad['unclear']} unclear (and {bad['accepted']} mutations that left a valid suite); "
              f"slowest refusal {bad['slowest_s']:.2f} s")
        for line in bad["examples"]:
            print(f"  {line}")
        kills = campaign_kills(root, args.kills, rng)
        print(f"{kills['kills']} kills: {kills['lost']} rows lost, {kills['duplicated']} duplicated "
              f"({kills['in_append']} inside an append, {kills['torn_tails_after_kill']} left a torn tail that the "
              f"resume cut off; final: {kills['final_ok']} of {TOTAL} runs ok, exit {kills['final_exit']}, torn tail "
              f"{kills['final_torn']}, tracebacks {kills['tracebacks']})")
        for s in campaign_signals(root):
            print(f"{s['signal']}: exit {s['exit']} (expected {s['expected']}) in {s['stop_s']} s, "
                  f"message right {s['message_count_right']}, torn {s['torn']}, traceback {s['traceback']}: "
                  f"{s['message']}")
        for d in campaign_disk(root, args.disk_faults, rng):
            print(f"disk full after {d['budget_bytes']} B: exit {d['exit']}, file and free space named {d['named']}, "
                  f"{d['rows_kept']} rows kept, only complete lines {d['only_complete_lines']}, traceback "
                  f"{d['traceback']}; the same command again: exit {d['resume_exit']}, {d['resume_rows']} rows")
    print(f"campaign wall time {time.perf_counter() - t0:.0f} s (seed {args.seed})")


if __name__ == "__main__":
    main()
