r"""Loading a target sampler from a ``module:attr`` spec.

A *target spec* names a Python object the way console-script entry points do:

* ``"mypkg.sampler:make_sampler"`` — ``attr`` may be dotted (``"mypkg:samplers.ddim"``);
* ``"path/to/file.py:make_sampler"`` — a module given by its file path.

The module is imported from ``sys.path`` (``PYTHONPATH``, the installed packages) or, failing those,
the current directory: when the current directory is not on ``sys.path`` it is *appended* (and left
there), so that it never shadows ``PYTHONPATH``. Where the current directory is on ``sys.path`` ahead
of another entry that holds the same module (``python -m`` puts it first), the module still comes
from the current directory, as Python imports it, and :attr:`LoadedTarget.warnings` says which file
is shadowed. :attr:`LoadedTarget.origin` is the resolved file the target came from; the reports
print it.

The object named may be

* a sampler: a diffusers scheduler instance (or an instance of a subclass), or an object that
  implements :class:`ddspec.conformance.protocol.Sampler`;
* a zero-argument callable returning one: a factory function, or a class such as
  ``diffusers:DDIMScheduler`` (instantiated with its defaults).

Turning the object into a :class:`~ddspec.conformance.protocol.Sampler` is delegated to
:func:`ddspec.conformance.adapters.adapt`. Every failure raises :class:`TargetLoadError` with a
one-line reason; an object that implements part of the protocol gets one that lists every missing
member.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import os
import re
import sys
from dataclasses import dataclass
from importlib.machinery import PathFinder
from typing import Any

from .guard import _describe_exception, _one_line

__all__ = [
    "TargetLoadError",
    "LoadedTarget",
    "load",
    "load_target",
    "adapt_object",
    "missing_protocol_members",
    "default_target_specs",
    "default_targets",
    "REFERENCE_TARGET",
]

#: The spec of the bundled torch port of the float64 reference.
REFERENCE_TARGET = "ddspec.conformance.torch_port:make_reference_port"

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = re.compile(rf"{_IDENTIFIER}(\.{_IDENTIFIER})*")

_EXAMPLE = "expected 'module:attribute', e.g. 'mypkg.sampler:make_sampler'"


class TargetLoadError(ValueError):
    r"""A target spec that cannot be turned into a sampler. The message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message, 1000))


@dataclass(frozen=True)
class LoadedTarget:
    r"""A loaded target.

    Attributes:
        sampler: the :class:`~ddspec.conformance.protocol.Sampler`.
        label: the spec, stripped: the name the reports use for the target.
        origin: the resolved path of the file the target's module was loaded from
            (``module.__file__``), or None (a namespace package, a built-in module).
        warnings: one-line warnings about the load (a module in the current directory that
            shadows another one on ``sys.path``).
    """

    sampler: Any
    label: str
    origin: str | None = None
    warnings: tuple[str, ...] = ()


def _protocol_members() -> tuple[str, ...]:
    """The members :class:`~ddspec.conformance.protocol.Sampler` requires, in its own order."""
    from .protocol import Sampler

    names = list(getattr(Sampler, "__annotations__", {}))
    names += [n for n, v in vars(Sampler).items() if not n.startswith("_") and callable(v)]
    return tuple(dict.fromkeys(names))


def missing_protocol_members(obj: Any) -> tuple[str, ...]:
    r"""The members of :class:`~ddspec.conformance.protocol.Sampler` that ``obj`` lacks.

    A method that is present but not callable counts as missing (``"betas (not callable)"``).
    """
    from .protocol import Sampler

    methods = {n for n, v in vars(Sampler).items() if not n.startswith("_") and callable(v)}
    missing = []
    for name in _protocol_members():
        try:
            value = getattr(obj, name)
        except Exception:  # noqa: BLE001 - a property that raises is as good as absent
            missing.append(name)
            continue
        if name in methods and not callable(value):
            missing.append(f"{name} (not callable)")
    return tuple(missing)


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
    """Append the current directory to ``sys.path`` when absent: last, so that it shadows nothing."""
    cwd = os.getcwd()
    entries = {os.path.abspath(p) if p else cwd for p in sys.path if isinstance(p, str)}
    if cwd not in entries:
        sys.path.append(cwd)


def _module_origin(module: Any) -> str | None:
    """The resolved path of ``module.__file__``, or None."""
    path = getattr(module, "__file__", None)
    return os.path.realpath(path) if isinstance(path, str) and path else None


def _providers(top: str) -> list[tuple[str, str]]:
    """``[(sys.path entry, file or folder), ...]``: every ``sys.path`` entry that holds module ``top``."""
    cwd = os.getcwd()
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for entry in list(sys.path):
        if not isinstance(entry, str):
            continue
        directory = os.path.realpath(entry or cwd)
        if directory in seen or not os.path.isdir(directory):
            continue
        seen.add(directory)
        try:
            spec = PathFinder.find_spec(top, [directory])
        except (ImportError, ValueError, OSError):  # pragma: no cover - an unreadable entry
            continue
        if spec is None:
            continue
        where = spec.origin if spec.origin not in (None, "namespace") else None
        if where is None and spec.submodule_search_locations:
            where = list(spec.submodule_search_locations)[0]
        if where:
            found.append((directory, os.path.realpath(where)))
    return found


def _shadow_warnings(module_name: str, origin: str | None) -> tuple[str, ...]:
    """A warning when ``module_name`` came from the current directory and another ``sys.path``
    entry holds a module of the same name (which the user may have meant)."""
    if origin is None:
        return ()
    top = module_name.split(".", 1)[0]
    cwd = os.path.realpath(os.getcwd())
    providers = _providers(top)
    if not providers or providers[0][0] != cwd:
        return ()
    if not (origin == providers[0][1] or origin.startswith(providers[0][1] + os.sep)):
        return ()
    others = [where for directory, where in providers[1:] if directory != cwd]
    if not others:
        return ()
    return (
        f"module {top!r} was imported from the current directory ({providers[0][1]}), which comes "
        f"first on sys.path and shadows {others[0]}; run from another directory, or give the file "
        "path ('path/to/file.py:attr'), to check the other one",
    )


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


def _not_a_sampler_reason(obj: Any, why: str) -> str:
    """``why``, with the missing protocol members when ``obj`` implements part of the protocol."""
    if any(cls.__module__.split(".")[0] == "diffusers" for cls in type(obj).__mro__):
        return why  # adapt's reason (which diffusers schedulers are supported) is the useful one
    missing = missing_protocol_members(obj)
    members = _protocol_members()
    if missing and len(missing) < len(members):
        return (f"it implements part of the Sampler protocol (ddspec.conformance.protocol.Sampler); "
                f"missing: {', '.join(missing)}")
    return why


def adapt_object(obj: Any, label: str) -> Any:
    r"""``obj`` as a :class:`~ddspec.conformance.protocol.Sampler`, with the loader's messages.

    Raises:
        TargetLoadError: ``obj`` cannot be adapted; a partial protocol object's message lists every
            missing member.
    """
    sampler, why = _adapt_or_none(obj, label)
    if sampler is None:
        raise TargetLoadError(
            f"cannot load target {label!r}: {type(obj).__name__} is not a sampler ddspec can adapt "
            f"({_not_a_sampler_reason(obj, why or 'not a sampler')})"
        )
    return sampler


def load(spec: str) -> LoadedTarget:
    r"""Load the sampler named by ``spec`` (``"module:attr"``); return a :class:`LoadedTarget`.

    See the module docstring for what ``attr`` may name and where the module is looked for. A class,
    function, method or :func:`functools.partial` is called once with no arguments and its result
    adapted; any other object is handed to :func:`~ddspec.conformance.adapters.adapt` as it is.

    Raises:
        TargetLoadError: with a one-line reason: bad spec format, module not found, the import
            raised, attribute missing, the factory raised, or the object (or what the factory
            returned) is not a sampler ddspec can adapt (for a partial protocol object, every
            missing member is named).
    """
    module_name, attr = _split_spec(spec)
    label = spec.strip()
    if module_name.endswith(".py"):
        module = _import_file(module_name, label)
        notes: tuple[str, ...] = ()
    else:
        module = _import_module(module_name, label)
        notes = _shadow_warnings(module_name, _module_origin(module))
    origin = _module_origin(module)
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
                f"which is not a sampler ddspec can adapt ({_not_a_sampler_reason(made, why or '')})"
            )
        return LoadedTarget(sampler, label, origin, notes)
    sampler, why = _adapt_or_none(obj, label)
    if sampler is None:
        partial = _not_a_sampler_reason(obj, "")
        if partial:
            raise TargetLoadError(
                f"cannot load target {label!r}: {attr!r} ({type(obj).__name__}) is not a sampler "
                f"ddspec can adapt: {partial}"
            )
        raise TargetLoadError(
            f"cannot load target {label!r}: {attr!r} ({type(obj).__name__}) is neither a sampler "
            f"ddspec can adapt nor a zero-argument factory returning one ({why})"
        )
    return LoadedTarget(sampler, label, origin, notes)


def load_target(spec: str) -> tuple[Any, str]:
    r"""``(sampler, label)`` of :func:`load` (``label`` is the spec, stripped)."""
    loaded = load(spec)
    return loaded.sampler, loaded.label


def _diffusers_available() -> bool:
    return importlib.util.find_spec("diffusers") is not None


def default_target_specs() -> list[str]:
    r"""The specs ``ddspec check`` runs with no TARGET (see :func:`default_targets`)."""
    specs = [REFERENCE_TARGET]
    if _diffusers_available():
        specs += ["diffusers:DDPMScheduler", "diffusers:DDIMScheduler"]
    return specs


def default_targets() -> list[tuple[str, Any]]:
    r"""The targets ``ddspec check`` runs with no TARGET: ``[(label, sampler), ...]``.

    The bundled torch port of the reference (:data:`REFERENCE_TARGET`), and, when diffusers is
    importable, diffusers' ``DDPMScheduler()`` and ``DDIMScheduler()`` with their default configs.

    Raises:
        TargetLoadError: one of them cannot be loaded.
    """
    targets = []
    for spec in default_target_specs():
        sampler, label = load_target(spec)
        targets.append((label, sampler))
    return targets
