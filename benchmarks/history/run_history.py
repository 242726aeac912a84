r"""Run the historical-bug benchmark: each bug of :data:`benchmarks.history.bugs.BUGS` must be caught in
the release that had it and cleared in the release that fixed it.

Environments. One per diffusers release, sharing the *one* torch (and numpy, ...) of the running
interpreter: ``pip install --no-deps --target <root>/diffusers-<X> diffusers==<X> 'huggingface_hub<0.26'``
(:func:`extra_requirements`: releases before 0.33; up to 0.28 they import ``cached_download``, which
huggingface_hub 0.26 removed; a release's own ``huggingface_hub`` lives in its target, so the shared
one is untouched). Each check runs in a
subprocess ``python -m ddspec.conformance.cli check benchmarks/history/targets.py:<factory> --json ...``
with ``PYTHONPATH=<root>/diffusers-<X>``, which Python searches before the interpreter's
site-packages. A target that already holds the release is reused.

Verdicts. A before-release run *catches* the bug when every ``must_fail`` pattern matches at least
one failing check; an after-release run *clears* it when every failing check matches a
``may_fail_after`` pattern (``unsupported`` and ``skipped`` results are not failures here; they are
listed). The table printed is release x bug -> caught / cleared / MISSED / STILL FAILS, followed by
the report lines (check name and message) of the failures that name each bug.

Exit status: 0 when every bug is caught before and cleared after; 1 otherwise; 2 when an environment
cannot be built. Usage::

    python benchmarks/history/run_history.py [--root /tmp/ddspec-history] [--only KEY ...] [--markdown PATH]
    python benchmarks/history/run_history.py --load [RELEASE ...]   # every release from 0.10 loads (no exit 2)
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.history.bugs import BUGS, LOAD_RELEASES, Bug  # noqa: E402

def extra_requirements(release: str) -> tuple[str, ...]:
    """pip requirements installed next to ``diffusers==release`` in its target.

    Releases before 0.33 get ``huggingface_hub<0.26``: up to 0.28 they import ``cached_download``,
    which huggingface_hub 0.26 removed, and 0.29–0.32 were released against hub 0.2x. From 0.33 on
    (which imports ``DDUFEntry``, hub 0.27 on) the interpreter's own huggingface_hub is used.
    """
    major, minor = (int(p) for p in release.split(".")[:2])
    return ("huggingface_hub<0.26",) if (major, minor) < (0, 33) else ()


@dataclass(frozen=True)
class Outcome:
    """One (bug, release) run: its role, whether it is as the table says, and the report lines."""

    bug: Bug
    release: str
    role: str  # "before" | "after"
    ok: bool
    label: str
    failing: tuple[tuple[str, str], ...]
    other: tuple[str, ...]
    seconds: float


def build_env(root: Path, release: str) -> Path:
    """The ``--target`` directory of ``diffusers==release`` (built once; reused when it holds the release)."""
    target = root / f"diffusers-{release}"
    stamp = target / ".ddspec-history-ok"
    requirements = (f"diffusers=={release}", *extra_requirements(release))
    if stamp.exists() and stamp.read_text().split() == list(requirements):
        return target
    if target.exists():
        shutil.rmtree(target)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
           "--target", str(target), *requirements]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building the environment of diffusers {release} failed: {' '.join(cmd)}\n{proc.stderr}")
    stamp.write_text("\n".join(requirements) + "\n")
    return target


def run_check(env: Path, bug: Bug) -> tuple[dict, float]:
    """Run ``ddspec check`` on the bug's configuration with the release in ``env``; return its JSON report."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        cmd = [sys.executable, "-W", "ignore", "-m", "ddspec.conformance.cli", "check",
               f"benchmarks/history/targets.py:{bug.target}", "--dtype", bug.dtype, "--no-progress", "-q",
               "--json", str(out)]
        if bug.steps:
            cmd += ["--steps", *(str(n) for n in bug.steps)]
        env_vars = dict(os.environ, PYTHONPATH=str(env))
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env_vars, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if not out.exists():
            raise RuntimeError(f"ddspec check exited {proc.returncode} without a report:\n{proc.stdout}\n{proc.stderr}")
        report = json.loads(out.read_text())
    return report, seconds


def judge(bug: Bug, release: str, role: str, report: dict, seconds: float) -> Outcome:
    """Is the run as the table says (caught before, cleared after)?"""
    if report.get("diffusers_version") != release:
        raise RuntimeError(f"expected diffusers {release}, the report ran {report.get('diffusers_version')}")
    failing = tuple((c["name"], c["message"]) for c in report["checks"] if c["verdict"] == "fail")
    other = tuple(f"{c['verdict']}: {c['name']}" + (f": {c['consequence']}" if c.get("consequence") else "")
                  for c in report["checks"] if c["verdict"] in ("acceptable", "unsupported", "skipped"))
    names = [n for n, _ in failing]
    if role == "before":
        missed = [p for p in bug.must_fail if not any(fnmatch.fnmatchcase(n, p) for n in names)]
        ok = not missed
        label = "caught" if ok else "MISSED (" + ", ".join(missed) + ")"
    else:
        allowed = [p for p, _ in bug.may_fail_after]
        unexplained = [n for n in names if not any(fnmatch.fnmatchcase(n, p) for p in allowed)]
        ok = not unexplained
        label = ("cleared" + (" (other bug: " + ", ".join(sorted(set(names))) + ")" if names else "")) if ok \
            else "STILL FAILS (" + ", ".join(unexplained) + ")"
    return Outcome(bug, release, role, ok, label, failing, other, seconds)


def releases(bugs: tuple[Bug, ...]) -> list[str]:
    """Every release the bugs name, oldest first."""
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(p) for p in v.split("."))
    return sorted({b.last_buggy for b in bugs} | {b.first_fixed for b in bugs}, key=key)


def render(outcomes: list[Outcome], total_s: float, disk_bytes: int) -> str:
    """The markdown table (release x bug) and the report lines naming each bug."""
    lines = ["| bug | diffusers | last buggy | verdict | first fixed | verdict |", "|---|---|---|---|---|---|"]
    by_key: dict[str, dict[str, Outcome]] = {}
    for o in outcomes:
        by_key.setdefault(o.bug.key, {})[o.role] = o
    for bug_key, pair in by_key.items():
        b = pair["before"].bug
        lines.append(f"| {bug_key} | {b.ref} | {b.last_buggy} | {pair['before'].label} | {b.first_fixed} | "
                     f"{pair['after'].label} |")
    lines.append("")
    lines.append(f"total {total_s:.0f} s, {len(outcomes)} runs, environments {disk_bytes / 2**20:.0f} MiB")
    lines.append("")
    for bug_key, pair in by_key.items():
        b = pair["before"].bug
        lines.append(f"### {bug_key} (diffusers {b.ref}): {b.title}")
        lines.append("")
        lines.append(f"Configuration: `{b.config}`; dtype {b.dtype}; steps {b.steps or 'profile default'}.")
        lines.append("")
        for o in (pair["before"], pair["after"]):
            lines.append(f"diffusers {o.release} ({o.role}, {o.seconds:.1f} s): **{o.label}**")
            lines.append("")
            for name, message in o.failing:
                lines.append(f"    FAIL  {name}: {message[:300]}")
            for entry in o.other:
                lines.append(f"    {entry}")
            if o.failing or o.other:
                lines.append("")
    return "\n".join(lines) + "\n"


_NOTES_SCRIPT = (
    "import diffusers\n"
    "from ddspec.conformance.adapters import adapt\n"
    "for cls in (diffusers.DDPMScheduler, diffusers.DDIMScheduler):\n"
    "    s = adapt(cls())\n"
    "    print(cls.__name__ + ': ' + ('; '.join(s.notes) or 'no notes'))\n"
)


def load_release(root: Path, release: str) -> tuple[bool, str]:
    """Load diffusers ``release``'s default DDPMScheduler and DDIMScheduler, print the adapters' notes,
    and run the quick profile on both: the load must not fail (exit 2); a conformance failure (exit 1)
    is the release's own business and is reported, not judged."""
    env = build_env(root, release)
    env_vars = dict(os.environ, PYTHONPATH=str(env))
    notes = subprocess.run([sys.executable, "-W", "ignore", "-c", _NOTES_SCRIPT], cwd=REPO, env=env_vars,
                           capture_output=True, text=True)
    check = subprocess.run([sys.executable, "-W", "ignore", "-m", "ddspec.conformance.cli", "check",
                            "diffusers:DDPMScheduler", "diffusers:DDIMScheduler", "--profile", "quick", "-q",
                            "--no-progress"], cwd=REPO, env=env_vars, capture_output=True, text=True)
    summary = [ln for ln in check.stdout.splitlines() if " passed, " in ln]
    ok = notes.returncode == 0 and check.returncode in (0, 1)
    text = (f"diffusers {release}: load {'ok' if ok else 'FAILED'}, ddspec check exit {check.returncode} "
            f"({' | '.join(summary)})\n" + "\n".join("    " + ln for ln in notes.stdout.splitlines()))
    if not ok:
        text += "\n" + notes.stderr[-2000:] + check.stderr[-2000:]
    return ok, text


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=os.environ.get("DDSPEC_HISTORY_ROOT", "/tmp/ddspec-history"),
                        help="where the per-release environments live (default: /tmp/ddspec-history)")
    parser.add_argument("--only", nargs="*", default=None, help="bug keys to run (default: all)")
    parser.add_argument("--markdown", default=None, help="also write the table and report lines to this file")
    parser.add_argument("--load", nargs="*", default=None, metavar="RELEASE",
                        help="instead of the bug table: load these releases' default DDPM/DDIM schedulers "
                             "(none given: LOAD_RELEASES, 0.10 to 0.42), print the adapters' notes and run the "
                             "quick profile (exit 1 if one cannot be loaded)")
    args = parser.parse_args(argv)
    if args.load is not None:
        args.load = args.load or list(LOAD_RELEASES)
        root = Path(args.root)
        root.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        results = []
        for release in args.load:
            try:
                results.append(load_release(root, release))
            except RuntimeError as exc:
                results.append((False, f"diffusers {release}: {exc}"))
            print(results[-1][1], flush=True)
        disk = sum(dir_size(root / f"diffusers-{v}") for v in args.load if (root / f"diffusers-{v}").exists())
        print(f"\n{len(args.load)} releases in {time.perf_counter() - start:.0f} s, environments {disk / 2**20:.0f} MiB")
        return 0 if all(ok for ok, _ in results) else 1
    bugs = tuple(b for b in BUGS if args.only is None or b.key in args.only)
    if not bugs:
        print(f"run_history: --only {args.only}: no such bug key; keys: {[b.key for b in BUGS]}", file=sys.stderr)
        return 2
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        envs = {v: build_env(root, v) for v in releases(bugs)}
    except RuntimeError as exc:
        print(f"run_history: {exc}", file=sys.stderr)
        return 2
    outcomes: list[Outcome] = []
    for bug in bugs:
        for role, release in (("before", bug.last_buggy), ("after", bug.first_fixed)):
            try:
                report, seconds = run_check(envs[release], bug)
                outcome = judge(bug, release, role, report, seconds)
            except RuntimeError as exc:
                outcome = Outcome(bug, release, role, False, f"ERROR ({str(exc).splitlines()[0]})", (), (), 0.0)
            outcomes.append(outcome)
            print(f"{bug.key:22s} {bug.ref:14s} diffusers {release:7s} {role:6s} -> {outcome.label}", flush=True)
    total = time.perf_counter() - start
    disk = sum(dir_size(envs[v]) for v in envs)
    text = render(outcomes, total, disk)
    print()
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
