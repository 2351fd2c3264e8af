"""Fuzzing suite files (issue 17): whatever a mutation does, `energybench run` exits 0 or 2, an error names
file:line, and no Python traceback escapes.

Mutations of a valid suite: a line dropped or duplicated (duplicate keys), a value retyped or pushed out of
range, a byte flipped (invalid UTF-8, broken YAML), the text truncated, aliases added. Derandomised, so the
same examples run every time; bounded to a few seconds on 2 cores.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energybench.cli import main

VALID = """\
name: fuzz
output_dir: out
backbones:
  - name: tiny-t5
tasks:
  - name: synth-sst2
methods:
  - name: full_ft
  - name: lora
    r: 4
    label: lora4
seeds: [0, 1]
training:
  batch_size: 8
  max_steps: 5
  learning_rate: 0.003
measure:
  latency_repeats: 3
  host_energy: false
"""

VALUES = ["true", "null", "-1", "0", "1.5", ".inf", "-.inf", ".nan", "1.0e+300", "100000000000000000000", "''",
          "[]", "{}", "[0, 0]", "x", "&a [1]", "*a", "!!binary aGk=", "\"\\xff\"", "{name: tiny-t5}"]

LINES = VALID.splitlines(keepends=True)

mutation = st.one_of(
    st.tuples(st.just("drop"), st.integers(0, len(LINES) - 1)),
    st.tuples(st.just("dup"), st.integers(0, len(LINES) - 1)),
    st.tuples(st.just("retype"), st.integers(0, len(LINES) - 1), st.sampled_from(VALUES)),
    st.tuples(st.just("flip"), st.integers(0, len(VALID) - 1), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, len(VALID) - 1)),
)


def mutate(data: bytes, m: tuple) -> bytes:
    lines = data.splitlines(keepends=True) or [b""]
    kind = m[0]
    if kind == "drop":
        del lines[m[1] % len(lines)]
    elif kind == "dup":
        i = m[1] % len(lines)
        lines.insert(i, lines[i])
    elif kind == "retype":
        i = m[1] % len(lines)
        head, sep, _ = lines[i].partition(b":")
        lines[i] = (head + b": " + m[2].encode() + b"\n") if sep else (b"  - " + m[2].encode() + b"\n")
    elif kind == "flip":
        i = m[1] % max(1, len(data))
        return data[:i] + bytes([data[i] ^ m[2]]) + data[i + 1:] if data else data
    elif kind == "truncate":
        return data[: m[1]]
    return b"".join(lines)


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutation, min_size=1, max_size=4))
def test_mutated_suites_give_exit_2_with_file_line_or_run(tmp_path_factory, mutations):
    import energybench.run.runner as runner
    from energybench.run.runner import GridSummary

    tmp = tmp_path_factory.mktemp("fuzz")
    path = tmp / "suite.yaml"
    data = VALID.encode()
    for m in mutations:
        data = mutate(data, m)
    path.write_bytes(data)
    errors: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        # a suite that survives validation is not trained: the point is what happens before any run starts
        mp.setattr(runner, "run_suite", lambda *a, **k: GridSummary())
        mp.setattr("energybench.report.build.write_report", lambda *a, **k: [tmp / "report.md"])
        mp.setattr("sys.stderr", _Capture(errors))
        mp.setattr("sys.stdout", _Capture([]))
        try:
            code = main(["run", str(path)])
        except BaseException as exc:  # noqa: BLE001 - what we are hunting for
            pytest.fail(f"{type(exc).__name__}: {exc} for mutations {mutations}\n{data!r}")
    text = "".join(errors)
    assert code in (0, 2), (code, text, mutations)
    assert "Traceback" not in text
    if code == 2:
        problems = [line for line in text.splitlines()[1:] if line.strip() and not line.startswith("(")]
        assert problems, text
        pattern = re.compile(rf"^{re.escape(str(path))}(:\d+)? ")
        assert all(pattern.match(p) for p in problems), (text, mutations, data)
        assert any(re.match(rf"^{re.escape(str(path))}:\d+ ", p) for p in problems), (text, mutations, data)


class _Capture:
    def __init__(self, sink: list[str]):
        self.sink = sink

    def write(self, s: str) -> int:
        self.sink.append(s)
        return len(s)

    def flush(self) -> None:
        pass
