"""Issue 17, suite files: bounded parsing, named errors instead of tracebacks, no silently accepted mistakes."""

from __future__ import annotations

import time

import pytest

from energybench.cli import main, resolve_output_dir
from energybench.run.preflight import PreflightError, preflight
from energybench.suite import SuiteError, load_suite
from energybench.suite_yaml import MAX_NODES, MAX_SUITE_BYTES

GOOD = """\
name: t
output_dir: out
backbones:
  - name: tiny-t5
tasks:
  - name: synth-sst2
methods:
  - name: full_ft
  - name: lora
    r: 4
seeds: [0, 1]
training:
  batch_size: 8
  max_steps: 5
measure:
  latency_repeats: 3
"""


def problems(tmp_path, text: str | bytes) -> list[str]:
    path = tmp_path / "s.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(SuiteError) as exc:
        load_suite(path)
    return exc.value.problems


def test_the_good_suite_loads(tmp_path):
    (tmp_path / "s.yaml").write_text(GOOD)
    assert load_suite(tmp_path / "s.yaml").training.max_steps == 5


def test_a_yaml_bomb_is_refused_quickly(tmp_path):
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    t0 = time.perf_counter()
    (msg,) = problems(tmp_path, "\n".join(levels) + "\n")
    assert time.perf_counter() - t0 < 5  # 9**9 nodes if anything expanded it; milliseconds when refused
    assert f"aliases expand to more than {MAX_NODES:,} values" in msg and msg.startswith(f"{tmp_path / 's.yaml'}:")


def test_a_recursive_alias_is_refused(tmp_path):
    (msg,) = problems(tmp_path, "name: &x [*x]\n")
    assert "recursive alias" in msg


def test_an_oversized_suite_is_refused_before_parsing(tmp_path):
    (msg,) = problems(tmp_path, "x: 1\n" * (MAX_SUITE_BYTES // 5 + 1))
    assert "a suite may be at most 1,000,000 bytes (1 MB)" in msg


def test_non_utf8_and_directory_suites_are_named(tmp_path):
    (msg,) = problems(tmp_path, GOOD.encode() + b"description: caf\xe9\n")
    assert msg.startswith(f"{tmp_path / 's.yaml'}:17 not UTF-8 text (byte 0xe9")
    with pytest.raises(SuiteError, match="is a directory"):
        load_suite(tmp_path)


def test_duplicate_keys_name_both_lines(tmp_path):
    (msg,) = problems(tmp_path, GOOD + "training:\n  max_steps: 224\n")
    assert msg == (f"{tmp_path / 's.yaml'}:17 duplicate key 'training' (first given at line 12, again at line 17); "
                   "YAML would silently keep only the last one")


@pytest.mark.parametrize("old, new, expect", [
    ("seeds: [0, 1]", "seeds: [0, 0]", ":11 seeds[1]: 0 repeats seeds[0] (line 11)"),
    ("  - name: tiny-t5\n", "  - name: tiny-t5\n  - name: tiny-t5\n    label: again\n",
     ":5 backbones[1]: 'tiny-t5' repeats backbones[0] (line 4)"),
    ("    r: 4\n", "    r: 4\n    label: full_ft\n", ":9 methods[1]: 'full_ft' repeats methods[0] (line 8)"),
])
def test_repeated_entries_are_errors_with_their_line(tmp_path, old, new, expect):
    (msg,) = problems(tmp_path, GOOD.replace(old, new))
    assert expect in msg


@pytest.mark.parametrize("old, new, line, expect", [
    ("batch_size: 8", "batch_size: true", 13, "training.batch_size: must be an integer (got True)"),
    ("max_steps: 5", "max_steps: 5.0", 14, "training.max_steps: must be an integer (got 5.0)"),
    ("max_steps: 5", "max_steps: 100000000000", 14, "training.max_steps: must be at most 100000000"),
    ("latency_repeats: 3", "latency_repeats: 1.0e+12", 16, "measure.latency_repeats: must be an integer"),
    ("latency_repeats: 3", "latency_repeats: 1000000000000", 16, "measure.latency_repeats: must be at most 100000"),
    ("batch_size: 8", "learning_rate: .inf", 13, "'.inf' is not a finite number"),
    ("batch_size: 8", "learning_rate: -.Inf", 13, "'-.Inf' is not a finite number"),
    ("    r: 4", "    r: 4\n    dropout: .nan", 11, "'.nan' is not a finite number"),
    ("batch_size: 8", "learning_rate: 1.0e+999", 13, "'1.0e+999' is not a finite number"),
])
def test_wrong_types_non_finite_and_absurd_values_are_errors(tmp_path, old, new, line, expect):
    msgs = problems(tmp_path, GOOD.replace(old, new))
    assert any(m.startswith(f"{tmp_path / 's.yaml'}:{line} ") and expect in m for m in msgs), msgs


def test_preflight_errors_carry_the_suite_line(tmp_path):
    glue = tmp_path / "glue" / "SST-2"
    glue.mkdir(parents=True)
    (glue / "train.tsv").write_text("sentence\tlabel\nfine\t1\nno label here\n")
    (glue / "dev.tsv").write_text("sentence\tlabel\na\t0\n")
    text = GOOD.replace("  - name: synth-sst2\n", f"  - name: synth-sst2\n  - name: sst2\n    data_dir: {tmp_path / 'glue'}\n"
                        f"  - name: rte\n    data_dir: {tmp_path / 'nowhere'}\n")
    text = text.replace("  - name: tiny-t5\n", f"  - name: tiny-t5\n  - name: local\n    path: {tmp_path}\n")
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(PreflightError) as exc:
        preflight(load_suite(path), str(path))
    got = exc.value.problems
    assert any(p.startswith(f"{path}:6 backbones[1] (local): ") and "no config.json" in p for p in got), got
    assert any(p.startswith(f"{path}:10 tasks[1] (sst2): ") and "train.tsv:3: malformed row" in p for p in got), got
    assert any(p.startswith(f"{path}:12 tasks[2] (rte): ") for p in got), got


def test_a_backbone_folder_without_weights_says_so(tmp_path):
    from energybench.models.backbones import check_backbone_available

    (tmp_path / "config.json").write_text("{}")
    reason = check_backbone_available("t5-small", str(tmp_path))
    assert "no weights (*.safetensors)" in reason and "cache" not in reason


def test_run_refuses_a_bad_suite_with_exit_2_before_importing_torch(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_bytes(b"\xff\xfe")
    assert main(["run", str(path)]) == 2
    assert f"{path}:1 not UTF-8 text" in capsys.readouterr().err


def test_relative_output_dir_is_relative_to_the_suite_file(tmp_path):
    suite = tmp_path / "exp" / "s.yaml"
    assert resolve_output_dir("runs/a", suite) == tmp_path / "exp" / "runs" / "a"
    assert resolve_output_dir(str(tmp_path / "abs"), suite) == tmp_path / "abs"


def test_builtin_suites_keep_writing_under_the_current_directory():
    from pathlib import Path

    from energybench.cli import resolve_suite_path

    assert resolve_output_dir("runs/quickstart", resolve_suite_path("quickstart")) == Path("runs/quickstart")


def test_exponent_floats_without_a_dot_are_numbers_and_strict_integers_refuse_them(tmp_path):
    """PyYAML reads `3e-4` as a string (YAML 1.1); strict types would then refuse a valid learning rate."""
    (tmp_path / "s.yaml").write_text(GOOD.replace("batch_size: 8", "batch_size: 8\n  learning_rate: 3e-4"))
    assert load_suite(tmp_path / "s.yaml").training.learning_rate == 3e-4
    msgs = problems(tmp_path, GOOD.replace("max_steps: 5", "max_steps: 1e29"))
    assert any(":14 training.max_steps: must be an integer (got 1e+29)" in m for m in msgs), msgs
