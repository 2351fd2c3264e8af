"""Suite validation: every problem names file, line and field path, before anything runs."""

from __future__ import annotations

import pytest

from energybench.suite import SuiteError, load_suite

BASE = """\
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
  - name: lora
    label: lora_bad
    r: -2
"""


def test_negative_rank_error_names_file_line_and_field(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(BASE, encoding="utf-8")
    with pytest.raises(SuiteError) as exc:
        load_suite(path)
    assert str(exc.value) == f"{path}:13 methods[2].r: must be a positive integer"


def test_unknown_keys_are_errors_at_every_level(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(BASE.replace("r: -2", "r: 2") + "training:\n  batch_sise: 8\nextra_top: 1\n", encoding="utf-8")
    with pytest.raises(SuiteError) as exc:
        load_suite(path)
    problems = exc.value.problems
    assert f"{path}:15 training.batch_sise: unknown key (not a field of this section)" in problems
    assert f"{path}:16 extra_top: unknown key (not a field of this section)" in problems


def test_unknown_method_setting_is_an_error(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(BASE.replace("r: -2", "rank: 2"), encoding="utf-8")
    with pytest.raises(SuiteError) as exc:
        load_suite(path)
    assert exc.value.problems == [f"{path}:13 methods[2].rank: unknown key (not a field of this section)"]


def test_unknown_method_lists_registered_ones(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(BASE.replace("label: lora_bad\n    r: -2", "label: x").replace("  - name: lora\n    label: x", "  - name: dora_typo"), encoding="utf-8")
    with pytest.raises(SuiteError) as exc:
        load_suite(path)
    (msg,) = exc.value.problems
    assert msg.startswith(f"{path}:11 methods[2].name: unknown method 'dora_typo'; registered methods: ")
    assert "full_ft" in msg and "lora" in msg and "bitfit" in msg


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("name: t\nbackbones: [\n", encoding="utf-8")
    with pytest.raises(SuiteError) as exc:
        load_suite(path)
    assert str(exc.value).startswith(f"{path}:3 (YAML syntax)")


def test_duplicate_method_labels_rejected(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(BASE.replace("    label: lora_bad\n    r: -2\n", ""), encoding="utf-8")
    with pytest.raises(SuiteError, match="method labels must be unique"):
        load_suite(path)


def test_shipped_suites_are_valid():
    from energybench.cli import resolve_suite_path

    for name in ("quickstart", "glue_t5"):
        suite = load_suite(resolve_suite_path(name))
        assert suite.name == name
