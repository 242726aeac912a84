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
        assert str(tmp_path) in sys.path
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
