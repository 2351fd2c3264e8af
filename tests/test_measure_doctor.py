"""`energybench doctor` text: what is measurable here, never an exception."""

from __future__ import annotations

import os

from energybench import doctor


def test_doctor_reports_each_gpu_with_counter_power_and_limit(monkeypatch):
    from test_measure_nvml import UUID_A, Board, Clock, FakeNvml

    nvml = FakeNvml([Board(UUID_A, counter=False, instant=False, limit_w=250.0)], Clock())
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    text = "\n".join(doctor.gpu_section(nvml))
    assert "nvml 0: Fake V100, " + UUID_A in text
    assert "energy counter: no (energy counter not available" in text
    assert "power: average" in text
    assert "250 W → READ p0 0.250 kW" in text


def test_doctor_without_driver_says_why_gpu_fields_will_be_null():
    import pynvml
    import pytest

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:  # pragma: no cover - a machine with a driver
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    text = "\n".join(doctor.gpu_section())
    assert text.startswith("NVML not available: NVML Shared Library Not Found")
    assert "will be null with this reason" in text


def test_doctor_names_rapl_state(tmp_path):
    assert "not present" in doctor.rapl_section(str(tmp_path / "intel-rapl*"))[0]
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text("123\n")
    assert doctor.rapl_section(str(tmp_path / "intel-rapl*")) == ["RAPL intel-rapl:0 (package-0): readable"]
    if os.geteuid() != 0:  # root reads anything, so the permission case only shows for other users
        (zone / "energy_uj").chmod(0)
        assert "not readable" in doctor.rapl_section(str(tmp_path / "intel-rapl*"))[0]


def test_doctor_report_never_raises_and_shows_the_failing_section():
    def broken():
        raise RuntimeError("boom")

    text = doctor.doctor_report([("Software", doctor.software_section), ("Broken", broken)])
    assert "torch " in text
    assert "Broken\n  could not check: RuntimeError: boom" in text
