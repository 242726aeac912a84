"""Tests of conformance/loader.py: target specs, imports, factories, one-line errors.

``adapt`` is replaced by a fake that accepts only :class:`FakeSampler`, so that these tests check the
loader alone (the adapters have their own tests).
"""

from __future__ import annotations

import os
import sys
import textwrap
import uuid

import pytest

from ddspec.conformance import loader
from ddspec.conformance.loader import REFERENCE_TARGET, TargetLoadError, default_targets, load_target

FAKE_MODULE = """
class FakeSampler:
    name = "fake"
    def __init__(self, tag="default"):
        self.tag = tag

class NotASampler:
    pass

class Holder:
    inner = FakeSampler("nested")

instance = FakeSampler("instance")
number = 42

def make():
    return FakeSampler("factory")

def make_wrong():
    return NotASampler()

def make_broken():
    raise RuntimeError("factory exploded")

def needs_args(x):
    return FakeSampler(x)
"""


def fake_adapt(obj):
    if type(obj).__name__ == "FakeSampler":
        return obj
    raise TypeError(f"adapt: cannot adapt {type(obj).__qualname__}")


@pytest.fixture
def target_module(tmp_path, monkeypatch):
    """A fresh module on sys.path, with a unique name; adapt replaced by fake_adapt."""
    name = f"ddspec_fake_target_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(FAKE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(loader, "_adapt", fake_adapt)
    yield name
    sys.modules.pop(name, None)


def assert_one_line(exc_info, *fragments):
    message = str(exc_info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(
    "spec",
    ["", "nocolon", "a:b:c", ":attr", "module:", "1module:x", "module:1x", "mod ule:x", "module:a..b", None, 3],
)
def test_bad_spec_format(spec):
    with pytest.raises(TargetLoadError) as info:
        load_target(spec)
    assert_one_line(info, "bad target", "module:attribute")
    assert isinstance(info.value, ValueError)


def test_module_not_found():
    with pytest.raises(TargetLoadError) as info:
        load_target("nonexistent_ddspec_module.sub:x")
    assert_one_line(info, "no module named 'nonexistent_ddspec_module'")


def test_import_error_inside_the_module(tmp_path, monkeypatch):
    name = f"ddspec_fake_broken_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("import not_installed_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TargetLoadError) as info:
        load_target(f"{name}:x")
    assert_one_line(info, f"importing '{name}' raised ModuleNotFoundError", "not_installed_dependency_xyz")

    name2 = name + "_rt"
    (tmp_path / f"{name2}.py").write_text("raise RuntimeError('kaboom\\nsecond line')\n")
    with pytest.raises(TargetLoadError) as info:
        load_target(f"{name2}:x")
    assert_one_line(info, "raised RuntimeError: kaboom second line")


def test_instance_factory_class_and_dotted_attribute(target_module):
    sampler, label = load_target(f"{target_module}:instance")
    assert (sampler.tag, label) == ("instance", f"{target_module}:instance")
    assert load_target(f"{target_module}:make")[0].tag == "factory"
    assert load_target(f"{target_module}:FakeSampler")[0].tag == "default"  # a class is a factory
    assert load_target(f"{target_module}:Holder.inner")[0].tag == "nested"
    assert load_target(f"  {target_module}:make  ")[1] == f"{target_module}:make"


def test_missing_attribute(target_module):
    with pytest.raises(TargetLoadError) as info:
        load_target(f"{target_module}:missing")
    assert_one_line(info, f"'{target_module}' has no attribute 'missing'")
    with pytest.raises(TargetLoadError) as info:
        load_target(f"{target_module}:Holder.nope")
    assert_one_line(info, f"'{target_module}:Holder' has no attribute 'nope'")


def test_not_adaptable_and_factory_errors(target_module):
    with pytest.raises(TargetLoadError) as info:
        load_target(f"{target_module}:number")
    assert_one_line(info, "'number' (int) is neither a sampler", "adapt: cannot adapt int")
    with pytest.raises(TargetLoadError) as info:
        load_target(f"{target_module}:make_wrong")
    assert_one_line(info, "'make_wrong'() returned NotASampler, which is not a sampler")
    with pytest.raises(TargetLoadError) as info:
        load_target(f"{target_module}:make_broken")
    assert_one_line(info, "calling the factory 'make_broken'() raised RuntimeError: factory exploded")
    with pytest.raises(TargetLoadError) as info:
        load_target(f"{target_module}:needs_args")
    assert_one_line(info, "raised TypeError", "missing 1 required positional argument")


def test_adapter_crash_is_a_load_error(target_module, monkeypatch):
    def crashing_adapt(obj):
        raise KeyError("adapter bug")

    monkeypatch.setattr(loader, "_adapt", crashing_adapt)
    with pytest.raises(TargetLoadError) as info:
        load_target(f"{target_module}:instance")
    assert_one_line(info, "adapting FakeSampler raised KeyError")


def test_module_in_the_current_directory(tmp_path, monkeypatch):
    name = f"ddspec_fake_cwd_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(FAKE_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    monkeypatch.setattr(loader, "_adapt", fake_adapt)
    try:
        assert load_target(f"{name}:make")[0].tag == "factory"
        assert sys.path[-1] == str(tmp_path)  # appended: it shadows nothing on PYTHONPATH
    finally:
        sys.modules.pop(name, None)


def test_file_path_spec(tmp_path, monkeypatch):
    path = tmp_path / "my_sampler.py"
    path.write_text(FAKE_MODULE)
    monkeypatch.setattr(loader, "_adapt", fake_adapt)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert load_target(f"{path}:make")[0].tag == "factory"
    monkeypatch.chdir(tmp_path)
    assert load_target("my_sampler.py:instance")[0].tag == "instance"
    with pytest.raises(TargetLoadError) as info:
        load_target(f"{os.path.join(str(tmp_path), 'absent.py')}:make")
    assert_one_line(info, "no such file")


def test_default_targets_names(monkeypatch):
    loaded = []

    def fake_load(spec):
        loaded.append(spec)
        return object(), spec

    monkeypatch.setattr(loader, "load_target", fake_load)
    monkeypatch.setattr(loader, "_diffusers_available", lambda: True)
    labels = [label for label, _ in default_targets()]
    assert labels == loaded == [REFERENCE_TARGET, "diffusers:DDPMScheduler", "diffusers:DDIMScheduler"]
    loaded.clear()
    monkeypatch.setattr(loader, "_diffusers_available", lambda: False)
    assert [label for label, _ in default_targets()] == [REFERENCE_TARGET]
    assert REFERENCE_TARGET == "ddspec.conformance.torch_port:make_reference_port"


# -- issue 7 §4: which file is checked, and partial protocol objects -------------------------------------


def _two_copies(tmp_path, name):
    """``name`` in a working directory and in a PYTHONPATH directory, tagged differently."""
    cwd, pythonpath = tmp_path / "work", tmp_path / "pythonpath"
    cwd.mkdir()
    pythonpath.mkdir()
    (cwd / f"{name}.py").write_text(FAKE_MODULE.replace('tag="default"', 'tag="cwd"'))
    (pythonpath / f"{name}.py").write_text(FAKE_MODULE.replace('tag="default"', 'tag="pythonpath"'))
    return cwd, pythonpath


def test_current_directory_does_not_shadow_pythonpath(tmp_path, monkeypatch):
    """The console script has no cwd on sys.path: the loader must not put it ahead of PYTHONPATH."""
    name = f"ddspec_fake_shadow_{uuid.uuid4().hex[:8]}"
    cwd, pythonpath = _two_copies(tmp_path, name)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "path", [str(pythonpath)] + [p for p in sys.path if p not in ("", ".")])
    monkeypatch.setattr(loader, "_adapt", fake_adapt)
    try:
        loaded = loader.load(f"{name}:FakeSampler")
        assert loaded.sampler.tag == "pythonpath"
        assert loaded.origin == os.path.realpath(pythonpath / f"{name}.py")
        assert loaded.warnings == ()
    finally:
        sys.modules.pop(name, None)


def test_cwd_first_on_sys_path_is_warned_and_named(tmp_path, monkeypatch):
    """Where Python itself puts the cwd first (python -m), the file is the cwd's, and a warning names the
    shadowed file."""
    name = f"ddspec_fake_shadow_{uuid.uuid4().hex[:8]}"
    cwd, pythonpath = _two_copies(tmp_path, name)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "path", ["", str(pythonpath)] + [p for p in sys.path if p not in ("", ".")])
    monkeypatch.setattr(loader, "_adapt", fake_adapt)
    try:
        loaded = loader.load(f"{name}:FakeSampler")
        assert loaded.sampler.tag == "cwd"
        assert loaded.origin == os.path.realpath(cwd / f"{name}.py")
        (warning,) = loaded.warnings
        assert "current directory" in warning and os.path.realpath(pythonpath / f"{name}.py") in warning
    finally:
        sys.modules.pop(name, None)


def test_origin_of_a_file_path_spec(tmp_path, monkeypatch):
    path = tmp_path / "my_sampler_origin.py"
    path.write_text(FAKE_MODULE)
    monkeypatch.setattr(loader, "_adapt", fake_adapt)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert loader.load(f"{path}:make").origin == os.path.realpath(path)


PARTIAL_MODULE = """
import numpy as np

class Partial:
    name = "partial"
    betas = np.full(10, 0.01)          # an array, not the method the protocol asks for
    def timesteps(self, num_steps):
        return np.arange(num_steps)[::-1]

def make():
    return Partial()
"""


def test_partial_protocol_object_names_every_missing_member(tmp_path, monkeypatch):
    """With the real adapt: a half-written Sampler gets an error naming each missing member."""
    name = f"ddspec_fake_partial_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(PARTIAL_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        for attr in ("make", "Partial"):
            with pytest.raises(TargetLoadError) as info:
                load_target(f"{name}:{attr}")
            assert_one_line(info, "missing: conventions, betas (not callable), alphas_cumprod, step")
        import importlib

        instance = importlib.import_module(name).Partial()
        assert loader.missing_protocol_members(instance) == (
            "conventions", "betas (not callable)", "alphas_cumprod", "step")
        with pytest.raises(TargetLoadError) as info:
            loader.adapt_object(instance, "partial")
        assert_one_line(info, "missing: conventions, betas (not callable), alphas_cumprod, step")
    finally:
        sys.modules.pop(name, None)
