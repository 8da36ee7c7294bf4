"""The thread policy: counts from affinity, load and loader workers; explicit counts win; bad counts are refused."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from degrader import threads
from degrader.errors import UserError
from degrader.threads import (
    busy_cores,
    cpu_jiffies,
    default_threads,
    passive_wait,
    prepare_openmp,
    set_threads,
    threads_in_use,
)


@pytest.fixture
def machine(monkeypatch):
    """A machine whose affinity and load the test chooses; torch's thread count is restored afterwards."""
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)

    def configure(cores: int, busy: float = 0.0, passive: bool = False) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
        monkeypatch.setattr(threads, "busy_cores", lambda: busy)
        monkeypatch.setattr(threads, "_passive", passive)

    yield configure
    torch.set_num_threads(before)


def test_spinning_policy_counts_free_cores_and_workers():
    spin = dict(passive=False)
    assert default_threads(1, **spin) == 1
    assert default_threads(2, **spin) == 2
    assert default_threads(8, busy=1.0, **spin) == 7
    assert default_threads(2, busy=0.3, **spin) == 2  # background noise is not a busy core
    assert default_threads(2, busy=0.7, **spin) == 1
    assert default_threads(2, busy=5.0, **spin) == 1  # never below one thread
    assert default_threads(8, loader_workers=4, **spin) == 6
    assert default_threads(8, loader_workers=1, **spin) == 8
    assert default_threads(2, busy=1.0, loader_workers=4, **spin) == 1


def test_passive_policy_uses_every_usable_core():
    assert default_threads(1, passive=True, busy=3.0) == 1
    assert default_threads(2, passive=True, busy=1.0, loader_workers=4) == 2  # sleeping waits share cores fairly


def test_passive_wait_keeps_all_cores_on_a_busy_machine(machine):
    machine(cores=4, busy=2.0, passive=True)
    assert set_threads(None, loader_workers=4) == 4


def test_one_core_of_affinity_gives_one_thread(machine):
    machine(cores=1)
    assert set_threads(None) == 1
    assert torch.get_num_threads() == 1


def test_spinning_openmp_uses_its_cores_and_workers_take_some(machine):
    machine(cores=4)
    assert set_threads(None) == 4
    assert torch.get_num_threads() == 4
    assert set_threads(None, loader_workers=4) == 2
    assert torch.get_num_threads() == 2


def test_spinning_openmp_on_a_busy_machine_gives_fewer_threads(machine):
    machine(cores=4, busy=2.0)
    assert set_threads(None) == 2


def test_explicit_count_wins_over_policy_and_environment(machine, monkeypatch):
    machine(cores=1, busy=3.0)
    assert set_threads(3) == 3
    assert torch.get_num_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert set_threads(None, loader_workers=8) == 2  # the user's environment wins over the policy
    assert set_threads(1) == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_invalid_count_raises_user_error(bad, machine):
    machine(cores=2)
    with pytest.raises(UserError, match="--threads"):
        set_threads(bad)


def test_unusable_omp_num_threads_falls_back_to_the_policy(machine, monkeypatch):
    machine(cores=3)
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")  # nested OpenMP lists are not a count
    assert set_threads(None) == 3


def test_jiffies_only_count_this_process_cpus(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  30 0 10 160 0 0 0 0 0 0\n"
        "cpu0 25 0 5 70 0 0 0 0 0 0\n"  # 30 busy of 100
        "cpu1 5 0 5 90 10 0 0 0 0 0\n"  # 10 busy (iowait is idle) of 110
        "intr 12345\nctxt 678\n"
    )
    assert cpu_jiffies({1}, str(stat)) == (10, 110)
    assert cpu_jiffies(None, str(stat)) == (40, 210)


def test_busy_cores_falls_back_to_load_average(monkeypatch):
    def unreadable(cpus, stat="/proc/stat"):
        raise OSError("no /proc")

    monkeypatch.setattr(threads, "cpu_jiffies", unreadable)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.5, 1.0, 0.5))
    assert busy_cores(0.0) == 1.5


def test_busy_cores_leaves_out_this_process(monkeypatch):
    # Every CPU fully busy during the window, all of it this process's own time: nobody else is busy.
    jiffies = iter([(0, 200), (200, 400)])
    monkeypatch.setattr(threads, "cpu_jiffies", lambda cpus: next(jiffies))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    cpu = iter([(10.0, 0.0, 0, 0, 0), (12.0, 0.0, 0, 0, 0)])
    monkeypatch.setattr(os, "times", lambda: next(cpu))
    clock = iter([100.0, 101.0])
    monkeypatch.setattr(threads.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    assert busy_cores() == 0.0


def test_prepare_openmp_keeps_the_users_choice_and_knows_when_it_is_too_late(monkeypatch):
    monkeypatch.setattr(threads, "_passive", False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert prepare_openmp() is False  # torch is already imported in this process
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert not passive_wait()  # too late: this process's OpenMP spins, so the policy must count busy cores

    monkeypatch.delitem(sys.modules, "torch")  # as at CLI entry, before any command imports torch
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert prepare_openmp() is True
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"  # the user's choice stays
    assert not passive_wait()
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert prepare_openmp() is True
    assert passive_wait()


def test_threads_in_use_applies_a_count_or_reports_torchs(machine, monkeypatch):
    machine(cores=1, busy=3.0)
    monkeypatch.setattr(threads, "_chosen", False)
    torch.set_num_threads(2)
    assert threads_in_use(None) == 1  # nothing chose a count yet: a library run applies the policy, as the CLI
    torch.set_num_threads(2)
    assert threads_in_use(None) == 2  # once chosen through degrader.threads, later runs keep torch's count
    assert threads_in_use(1) == 1
    assert torch.get_num_threads() == 1
    with pytest.raises(UserError, match="--threads"):
        threads_in_use(0)


def test_passive_policy_reaches_torchs_openmp_only_when_set_before_torch(tmp_path):
    """libgomp prints its settings when it loads (OMP_DISPLAY_ENV): no spinning only if prepared in time."""

    def spin_count(code: str) -> str:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        env["OMP_DISPLAY_ENV"] = "VERBOSE"
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        found = re.search(r"GOMP_SPINCOUNT = '(\d+)'", out.stdout + out.stderr)
        if found is None:
            pytest.skip("torch's OpenMP is not libgomp (no GOMP_SPINCOUNT in OMP_DISPLAY_ENV)")
        return found.group(1)

    prepared = "from degrader.threads import prepare_openmp; prepare_openmp(); import torch; torch.ones(9).sum()"
    too_late = "import torch; from degrader.threads import prepare_openmp; prepare_openmp(); torch.ones(9).sum()"
    assert spin_count(prepared) == "0"
    assert spin_count(too_late) != "0"


def test_fit_records_and_applies_the_thread_count(tiny_folders, tmp_path):
    """--threads reaches torch before training, and config.json records the count a resume must reuse."""
    import json

    from click.testing import CliRunner

    from cli.degrade import degrade

    hr, lr = tiny_folders
    out = tmp_path / "run"
    before = torch.get_num_threads()
    try:
        tiny = ["--set=hr_size=32", "--steps", "1", "--batch-size", "2", "--set=workers=0", "--set=val_split=0"]
        args = ["fit", "--hr", str(hr), "--lr", str(lr), "--out", str(out), "--threads", "1", *tiny]
        result = CliRunner().invoke(degrade, args)
        assert result.exit_code == 0, result.output
        assert json.loads((out / "config.json").read_text())["threads"] == 1
        torch.set_num_threads(2)
        # a resume with another count may continue (the run's bytes then differ); the new count is recorded
        result = CliRunner().invoke(degrade, ["fit", "--out", str(out), "--resume", "--steps", "2", "--threads", "2"])
        assert result.exit_code == 0, result.output
        assert json.loads((out / "config.json").read_text())["threads"] == 2
        result = CliRunner().invoke(degrade, ["fit", "--out", str(out), "--threads", "0"])
        assert result.exit_code != 0 and "--threads" in result.output
    finally:
        torch.set_num_threads(before)
