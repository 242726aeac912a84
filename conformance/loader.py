r"""Loading a target sampler from a ``module:attr`` spec.

A *target spec* names a Python object the way console-script entry points do:

* ``"mypkg.sampler:make_sampler"`` — ``attr`` may be dotted (``"mypkg:samplers.ddim"``);
* ``"path/to/file.py:make_sampler"`` — a module given by its file path.

The module is imported from the current directory or ``PYTHONPATH``: the current directory is put at
the front of ``sys.path`` (and left there, as ``python -m`` does) when it is not there already.

The object named may be

* a sampler: a diffusers scheduler instance (or an instance of a subclass), or an object that
  implements :class:`ddspec.conformance.protocol.Sampler`;
* a zero-argument callable returning one: a factory function, or a class such as
  ``diffusers:DDIMScheduler`` (instantiated with its defaults).

Turning the object into a :class:`~ddspec.conformance.protocol.Sampler` is delegated to
:func:`ddspec.conformance.adapters.adapt`. Every failure raises :class:`TargetLoadError` with a
one-line reason.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import os
import re
import sys
from typing import Any

from .runner import _describe_exception, _one_line

__all__ = ["TargetLoadError", "load_target", "default_targets", "REFERENCE_TARGET"]

#: The spec of the bundled torch port of the float64 reference.
REFERENCE_TARGET = "ddspec.conformance.torch_port:make_reference_port"

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = re.compile(rf"{_IDENTIFIER}(\.{_IDENTIFIER})*")

_EXAMPLE = "expected 'module:attribute', e.g. 'mypkg.sampler:make_sampler'"


class TargetLoadError(ValueError):
    r"""A target spec that cannot be turned into a sampler. The message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message, 1000))


def _adapt(obj: Any) -> Any:
    """:func:`ddspec.conformance.adapters.adapt` (imported when first needed)."""
    from .adapters import adapt

    return adapt(obj)


def _split_spec(spec: Any) -> tuple[str, str]:
    if not isinstance(spec, str):
        raise TargetLoadError(f"bad target {spec!r}: {_EXAMPLE}")
    text = spec.strip()
    module, sep, attr = text.rpartition(":")
    # Only a file path with a Windows drive letter ("C:\\x\\y.py:make") may hold another ':'.
    if not sep or (":" in module and not (module.endswith(".py") and os.path.splitdrive(module)[0])):
        raise TargetLoadError(f"bad target {spec!r}: {_EXAMPLE}")
    module, attr = module.strip(), attr.strip()
    if not module or not attr:
        raise TargetLoadError(f"bad target {spec!r}: {_EXAMPLE}")
    if not module.endswith(".py") and not _DOTTED.fullmatch(module):
        raise TargetLoadError(f"bad target {spec!r}: {module!r} is not a module name; {_EXAMPLE}")
    if not _DOTTED.fullmatch(attr):
        raise TargetLoadError(f"bad target {spec!r}: {attr!r} is not an attribute name; {_EXAMPLE}")
    return module, attr


def _ensure_cwd_on_path() -> None:
    cwd = os.getcwd()
    entries = {os.path.abspath(p) if p else cwd for p in sys.path}
    if cwd not in entries:
        sys.path.insert(0, cwd)


def _import_file(path: str, spec_text: str) -> Any:
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise TargetLoadError(f"cannot load target {spec_text!r}: no such file {path!r}")
    name = "ddspec_target_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(full))[0])
    module_spec = importlib.util.spec_from_file_location(name, full)
    if module_spec is None or module_spec.loader is None:  # pragma: no cover - not a .py file
        raise TargetLoadError(f"cannot load target {spec_text!r}: {path!r} is not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    directory = os.path.dirname(full)
    if directory not in sys.path:
        sys.path.insert(0, directory)  # so that the file can import its siblings
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise TargetLoadError(
            f"cannot load target {spec_text!r}: importing {path!r} raised {_describe_exception(exc)}"
        ) from exc
    return module


def _import_module(module_name: str, spec_text: str) -> Any:
    _ensure_cwd_on_path()
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise TargetLoadError(
                f"cannot load target {spec_text!r}: no module named {missing!r} "
                "(is it installed, or in the current directory or PYTHONPATH?)"
            ) from exc
        raise TargetLoadError(
            f"cannot load target {spec_text!r}: importing {module_name!r} raised "
            f"{_describe_exception(exc)}"
        ) from exc
    except Exception as exc:
        raise TargetLoadError(
            f"cannot load target {spec_text!r}: importing {module_name!r} raised "
            f"{_describe_exception(exc)}"
        ) from exc


def _resolve(module: Any, attr: str, module_label: str, spec_text: str) -> Any:
    obj = module
    walked = []
    for part in attr.split("."):
        walked.append(part)
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            where = module_label if len(walked) == 1 else f"{module_label}:{'.'.join(walked[:-1])}"
            raise TargetLoadError(
                f"cannot load target {spec_text!r}: {where!r} has no attribute {part!r}"
            ) from exc
        except Exception as exc:  # a property or module __getattr__ that raised
            raise TargetLoadError(
                f"cannot load target {spec_text!r}: reading {'.'.join(walked)!r} raised "
                f"{_describe_exception(exc)}"
            ) from exc
    return obj


def _adapt_or_none(obj: Any, spec_text: str) -> tuple[Any, str | None]:
    """``(sampler, None)`` if ``obj`` adapts, ``(None, why)`` if adapt refused it (TypeError)."""
    try:
        return _adapt(obj), None
    except TypeError as exc:
        return None, _one_line(str(exc)) or "not a sampler"
    except Exception as exc:
        raise TargetLoadError(
            f"cannot load target {spec_text!r}: adapting {type(obj).__name__} raised "
            f"{_describe_exception(exc)}"
        ) from exc


def _is_factory(obj: Any) -> bool:
    """A class, function, method or partial: called with no arguments to make the sampler.

    (Other callable objects go to ``adapt`` as they are: they may be samplers themselves.)
    """
    return isinstance(obj, type) or inspect.isroutine(obj) or isinstance(obj, functools.partial)


def load_target(spec: str) -> tuple[Any, str]:
    r"""Load the sampler named by ``spec`` (``"module:attr"``); return ``(sampler, label)``.

    ``label`` is the spec, stripped: the name the reports use for the target. See the module
    docstring for what ``attr`` may name. A class, function, method or :func:`functools.partial` is
    called once with no arguments and its result adapted; any other object is handed to
    :func:`~ddspec.conformance.adapters.adapt` as it is.

    Raises:
        TargetLoadError: with a one-line reason: bad spec format, module not found, the import
            raised, attribute missing, the factory raised, or the object (or what the factory
            returned) is not a sampler ddspec can adapt.
    """
    module_name, attr = _split_spec(spec)
    label = spec.strip()
    if module_name.endswith(".py"):
        module = _import_file(module_name, label)
    else:
        module = _import_module(module_name, label)
    obj = _resolve(module, attr, module_name, label)

    if _is_factory(obj):
        kind = "class" if isinstance(obj, type) else "factory"
        try:
            made = obj()
        except Exception as exc:
            raise TargetLoadError(
                f"cannot load target {label!r}: calling the {kind} {attr!r}() raised "
                f"{_describe_exception(exc)}"
            ) from exc
        sampler, why = _adapt_or_none(made, label)
        if sampler is None:
            raise TargetLoadError(
                f"cannot load target {label!r}: {attr!r}() returned {type(made).__name__}, "
                f"which is not a sampler ddspec can adapt ({why})"
            )
        return sampler, label
    sampler, why = _adapt_or_none(obj, label)
    if sampler is None:
        raise TargetLoadError(
            f"cannot load target {label!r}: {attr!r} ({type(obj).__name__}) is neither a sampler "
            f"ddspec can adapt nor a zero-argument factory returning one ({why})"
        )
    return sampler, label


def _diffusers_available() -> bool:
    return importlib.util.find_spec("diffusers") is not None


def default_targets() -> list[tuple[str, Any]]:
    r"""The targets ``ddspec check`` runs with no TARGET: ``[(label, sampler), ...]``.

    The bundled torch port of the reference (:data:`REFERENCE_TARGET`), and, when diffusers is
    importable, diffusers' ``DDPMScheduler()`` and ``DDIMScheduler()`` with their default configs.

    Raises:
        TargetLoadError: one of them cannot be loaded.
    """
    specs = [REFERENCE_TARGET]
    if _diffusers_available():
        specs += ["diffusers:DDPMScheduler", "diffusers:DDIMScheduler"]
    targets = []
    for spec in specs:
        sampler, label = load_target(spec)
        targets.append((label, sampler))
    return targets
