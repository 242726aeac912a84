"""Hostile targets: a gate that cannot be fooled (issue 15).

Each target is a diffusers ``DDIMScheduler`` subclass whose ``step`` misbehaves after its first
:data:`CALM_CALLS` calls (per process: a fresh worker starts calm again): it ends the process
(``os._exit(0)``, ``os._exit(3)``), segfaults, raises ``SystemExit`` or ``KeyboardInterrupt``, hangs,
leaves a thread running that keeps mutating the model output, changes one of torch's global
settings, or allocates past ``--max-memory``. ``ddspec check`` runs in a subprocess, as a CI gate
would, and must exit 1, write the report, and name the cause. A correct subclass must keep every
verdict, in the worker and ``--in-process``.

To keep the default run short the targets share CLI runs (one process checks several targets: one
report each in the JSON bundle, the exit code the largest); the runs that must be alone (the exit
code of a lone ``os._exit(0)``, the hang with its short ``--timeout``, Ctrl-C) are separate.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the CPU worker is forked")
pytest.importorskip("diffusers")

DDSPEC = [sys.executable, "-m", "ddspec.conformance.cli"]
CALM_CALLS = 3

HOSTILE_MODULE = f'''
import os, signal, sys, threading, time
import torch
from diffusers import DDIMScheduler

CALM_CALLS = {CALM_CALLS}


def _misbehave(mode, model_output):
    if mode == "exit0":
        os._exit(0)
    if mode == "exit3":
        os._exit(3)
    if mode == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if mode == "sysexit":
        sys.exit(0)
    if mode == "keyboard":
        raise KeyboardInterrupt
    if mode == "hang":
        while True:
            time.sleep(0.01)
    if mode == "thread":
        def mutate():  # for a while: in-process, every such call leaves one behind (and one still
            # running when the interpreter exits can abort it: in-process cannot protect the harness)
            end = time.monotonic() + 0.5
            while time.monotonic() < end:
                model_output.add_(1e-3)
                time.sleep(0.005)
        threading.Thread(target=mutate, name="mutator", daemon=True).start()
    if mode == "dtype":
        torch.set_default_dtype(torch.float64)
    if mode == "grad":
        torch.set_grad_enabled(not torch.is_grad_enabled())
    if mode == "threads":
        torch.set_num_threads(torch.get_num_threads() + 1)
    if mode == "deterministic":
        torch.use_deterministic_algorithms(not torch.are_deterministic_algorithms_enabled())
    if mode == "tf32":
        torch.backends.cuda.matmul.allow_tf32 = not torch.backends.cuda.matmul.allow_tf32
    if mode == "cudnn_tf32":
        torch.backends.cudnn.allow_tf32 = not torch.backends.cudnn.allow_tf32
    if mode == "precision":
        torch.set_float32_matmul_precision("high")
    if mode == "memory":
        hog = torch.ones(2**31 // 4 * 3, dtype=torch.float32)  # 6 GiB, past --max-memory
        return float(hog[0])
    return None


def _hostile(mode):
    class Hostile(DDIMScheduler):
        calls = 0

        def step(self, model_output, *args, **kwargs):
            type(self).calls += 1
            if type(self).calls > CALM_CALLS:
                _misbehave(mode, model_output)
            return super().step(model_output, *args, **kwargs)

    Hostile.__name__ = Hostile.__qualname__ = f"Hostile_{{mode}}"
    return Hostile


for _mode in ("exit0", "exit3", "segv", "sysexit", "keyboard", "hang", "thread", "dtype", "grad", "threads",
              "deterministic", "tf32", "cudnn_tf32", "precision", "memory"):
    globals()[f"make_{{_mode}}"] = (lambda m: lambda: _hostile(m)())(_mode)


def make_correct():
    return DDIMScheduler()
'''

#: mode -> the words a failing result must contain.
CAUSES: dict[str, str] = {
    "exit0": "the target ended the worker process with exit code 0 during step(",
    "exit3": "the target ended the worker process with exit code 3 during step(",
    "segv": "killed by signal SIGSEGV (segmentation fault) during step(",
    "sysexit": "step raised SystemExit: 0",
    "keyboard": "step raised TargetInterrupt: the target raised KeyboardInterrupt",
    "thread": "a thread left running: 'mutator' (daemon)",
    "dtype": "default dtype: torch.float32 -> torch.float64",
    "grad": "grad mode: ",
    "threads": "number of threads: ",
    "deterministic": "deterministic algorithms: off -> on",
    "tf32": "TF32 matmul (torch.backends.cuda.matmul.allow_tf32): False -> True",
    "cudnn_tf32": "TF32 cuDNN (torch.backends.cudnn.allow_tf32): True -> False",
    "precision": "float32 matmul precision: highest -> high",
    "memory": "--max-memory 512 MiB",
}

#: The global-state modes, which also misbehave in a process of their own (``--in-process``).
STATE_MODES = ("thread", "dtype", "grad", "threads", "deterministic", "tf32", "cudnn_tf32", "precision")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hostile")
    (path / "hostile.py").write_text(HOSTILE_MODULE)
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONBREAKPOINT", None)
    return env


def ddspec_check(workdir: Path, modes: list[str], *extra: str, json_name: str = "report.json",
                 timeout: float = 300.0) -> tuple[subprocess.CompletedProcess, Any]:
    """Run ``ddspec check`` on ``hostile.py:make_<mode>`` for each mode; (process, JSON report)."""
    report = workdir / json_name
    if report.exists():
        report.unlink()
    targets = [f"hostile.py:make_{m}" for m in modes]
    proc = subprocess.run([*DDSPEC, "check", *targets, "--profile", "quick", "--steps", "10", "--no-progress",
                           "--json", str(report), *extra],
                          cwd=workdir, capture_output=True, text=True, timeout=timeout, env=_env())
    assert report.exists(), f"no report written; exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    data = json.loads(report.read_text())
    return proc, data.get("reports", [data])


def failing_text(report: dict[str, Any]) -> str:
    return json.dumps([c for c in report["checks"] if c["verdict"] == "fail"])


def verdicts(report: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["verdict"] for c in report["checks"]}


# -- the worker: every hostile target fails, with its cause named ------------------------------------


@pytest.fixture(scope="module")
def isolated_run(workdir: Path) -> tuple[subprocess.CompletedProcess, dict[str, Any]]:
    modes = [m for m in CAUSES] + ["correct"]
    # --timeout 5: a forked worker runs one torch thread (GNU OpenMP cannot start a pool in a child forked
    # after its parent used one), so the target that raises the thread count hangs in its first parallel
    # region; the timeout turns that into a failure too
    proc, reports = ddspec_check(workdir, modes, "--max-memory", "512M", "--timeout", "5", json_name="isolated.json")
    return proc, {r["target"].split("make_", 1)[1]: r for r in reports}


def test_the_isolated_run_exits_1_and_writes_every_report(isolated_run):
    proc, reports = isolated_run
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert set(reports) == set(CAUSES) | {"correct"}
    assert "do not conform" in proc.stderr


@pytest.mark.parametrize("mode", list(CAUSES))
def test_each_hostile_target_fails_naming_the_cause(isolated_run, mode):
    _, reports = isolated_run
    report = reports[mode]
    assert any(c["verdict"] == "fail" for c in report["checks"])
    assert CAUSES[mode] in failing_text(report)


def test_the_text_report_names_the_cause(isolated_run):
    proc, _ = isolated_run
    for mode in ("exit0", "segv", "keyboard", "dtype"):
        assert CAUSES[mode] in proc.stdout


def test_the_correct_target_conforms_and_says_how_it_ran(isolated_run):
    _, reports = isolated_run
    report = reports["correct"]
    assert all(v in ("pass", "acceptable", "skipped") for v in verdicts(report).values()), failing_text(report)
    state = next(c for c in report["checks"] if c["name"] == "invariants.no_global_state_change")
    assert state["details"]["isolation"] == "worker process (fork, 1 torch thread, memory limit 512 MiB)"


def test_a_lone_exit_0_gives_exit_1_and_a_report(workdir):
    proc, reports = ddspec_check(workdir, ["exit0"], json_name="exit0.json")
    assert proc.returncode == 1
    assert CAUSES["exit0"] in failing_text(reports[0])
    assert CAUSES["exit0"] in proc.stdout


# -- in-process: the global-state watch works there too, and verdicts agree --------------------------


def _in_process(workdir: Path, isolated: dict[str, Any], modes: list[str], json_name: str) -> None:
    proc, reports = ddspec_check(workdir, modes, "--in-process", json_name=json_name)
    assert proc.returncode == 1  # not 130: the target's KeyboardInterrupt is not a user's Ctrl-C
    assert "--in-process" in proc.stderr
    by_mode = {r["target"].split("make_", 1)[1]: r for r in reports}
    for mode in modes[:-1]:
        assert CAUSES[mode] in failing_text(by_mode[mode]), mode
    assert verdicts(by_mode["correct"]) == verdicts(isolated["correct"])


def test_in_process_the_targets_interrupt_and_state_changes_still_fail(workdir, isolated_run):
    # the thread target first: its threads end long before the interpreter does
    _in_process(workdir, isolated_run[1], ["thread", "keyboard", "dtype", "correct"], "in_process.json")


@pytest.mark.slow
def test_in_process_every_state_change_fails(workdir, isolated_run):
    _in_process(workdir, isolated_run[1], [*STATE_MODES, "sysexit", "correct"], "in_process_all.json")


# -- hangs and Ctrl-C ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_hang_is_killed_and_fails(workdir):
    start = time.perf_counter()
    proc, reports = ddspec_check(workdir, ["hang"], "--timeout", "0.5", json_name="hang.json")
    assert proc.returncode == 1
    assert "step timed out after 0.5 s (the worker process was killed" in failing_text(reports[0])
    assert time.perf_counter() - start < 200


@pytest.mark.slow
def test_a_users_ctrl_c_stops_the_run_with_130(workdir):
    proc = subprocess.Popen([*DDSPEC, "check", "hostile.py:make_hang", "--profile", "quick", "--timeout", "60",
                             "--no-progress"], cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(), start_new_session=True)
    time.sleep(12.0)  # loaded, and hung in the worker
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group, the worker too
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "ddspec: interrupted" in err


# -- the pytest plugin ---------------------------------------------------------------------------------


def test_the_pytest_plugin_fails_the_hostile_targets(workdir):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir", str(workdir),
                           "--ddspec-target", "hostile.py:make_exit0", "--ddspec-target", "hostile.py:make_dtype",
                           "--ddspec-profile", "quick", "-o", "addopts="],
                          cwd=workdir, capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert CAUSES["exit0"] in proc.stdout
    assert CAUSES["dtype"] in proc.stdout
    assert "invariants.no_global_state_change" in proc.stdout
