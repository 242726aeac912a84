r"""Reading a diffusers scheduler's config as the release at hand behaves (diffusers 0.10 on).

Config fields were added to ``DDPMScheduler`` and ``DDIMScheduler`` over the releases (read in the
released sources, ``schedulers/scheduling_ddpm.py`` and ``scheduling_ddim.py``):

================================  ==============  ==============  =========================================
field                             DDPM since      DDIM since      behaviour of a release without it
================================  ==============  ==============  =========================================
``clip_sample_range``             0.13.0          0.15.0          clamp to [-1, 1] (``torch.clamp(x, -1, 1)``)
``thresholding`` (and
``dynamic_thresholding_ratio``,
``sample_max_value``)             0.15.0          0.15.0          no dynamic thresholding
``timestep_spacing``              0.18.0          0.17.0          leading: ``arange(0, N) * (T // N)``
``steps_offset``                  0.18.0          0.10.0          no offset
``rescale_betas_zero_snr``        0.25.0          0.17.0          no rescaling
``set_alpha_to_one``              (not DDPM)      0.10.0          --
================================  ==============  ==============  =========================================

A field *honoured* by the scheduler is one its class (or the diffusers class it derives from) takes
as an ``__init__`` parameter: only those change what the release computes. A config can carry a key
the release ignores (a newer ``scheduler_config.json`` loaded by an old release keeps it as an
unused entry); then the release's own behaviour is declared, and a note says that the value is
ignored. A field the class takes but the config lacks (a hand-built config) gets the release's
behaviour too, and a note. Every default applied is one line of :attr:`ReleaseConfig.notes`, e.g.
``"diffusers 0.14.0 has no timestep_spacing: leading, as that release always did"``.

Fields without which nothing can be adapted (:data:`REQUIRED`) raise :class:`UnsupportedRelease`,
whose message names the release and the missing fields (the CLI reports it as a load error, exit 2).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "OLDEST_RELEASE",
    "RELEASE_DEFAULTS",
    "REQUIRED",
    "ReleaseConfig",
    "UnsupportedRelease",
    "honoured_fields",
    "parse_release",
    "parse_release_or_none",
    "read_release_config",
    "release_of",
]

#: The oldest diffusers release the adapters are tested against (the history benchmark's first).
OLDEST_RELEASE = "0.10.0"


class UnsupportedRelease(ValueError):
    """A diffusers release whose scheduler lacks a config field the adapter cannot do without."""


#: field -> (value the release used when it did not have the field, what that behaviour was; "" for
#: a parameter of a feature the release lacks, which needs no note of its own).
RELEASE_DEFAULTS: dict[str, tuple[Any, str]] = {
    "timestep_spacing": ("leading", "leading, as that release always did"),
    "steps_offset": (0, "no offset, as that release always did"),
    "thresholding": (False, "no dynamic thresholding"),
    "dynamic_thresholding_ratio": (0.995, ""),
    "sample_max_value": (1.0, ""),
    "clip_sample_range": (1.0, "clip_sample clamps to [-1, 1]"),
    "rescale_betas_zero_snr": (False, "no zero-terminal-SNR rescaling"),
    "set_alpha_to_one": (True, "the last step goes to alpha_bar = 1"),
}

#: family -> the fields an adaptable release must honour.
REQUIRED: dict[str, tuple[str, ...]] = {
    "ddpm": ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
             "variance_type", "clip_sample", "prediction_type"),
    "ddim": ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
             "clip_sample", "set_alpha_to_one", "prediction_type"),
}

_RELEASE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def parse_release(version: str) -> tuple[int, int, int]:
    """``"0.14.0"`` -> ``(0, 14, 0)`` (a suffix such as ``.dev0`` is ignored); ``ValueError`` naming it otherwise."""
    if not isinstance(version, str):
        raise ValueError(f"version={version!r}: expected a release string such as '0.14.0'")
    m = _RELEASE.match(version.strip())
    if m is None:
        raise ValueError(f"version={version!r}: expected a release string such as '0.14.0'")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def release_of(scheduler: Any) -> str:
    """The version of the diffusers installation the scheduler's class comes from (``"unknown"`` if none)."""
    import sys

    for klass in type(scheduler).__mro__:
        top = klass.__module__.split(".")[0]
        if top == "diffusers":
            version = getattr(sys.modules.get("diffusers"), "__version__", None)
            return str(version) if version else "unknown"
    return "unknown"


def honoured_fields(cls: type, base: type | None = None) -> frozenset[str]:
    r"""The named ``__init__`` parameters of ``cls`` and of ``base`` (the diffusers class it derives from).

    A subclass whose ``__init__`` takes ``**kwargs`` and forwards them still honours its base's fields,
    hence the union.
    """
    names: set[str] = set()
    for klass in (cls, base):
        if klass is None:
            continue
        for pname, param in inspect.signature(klass.__init__).parameters.items():
            if pname != "self" and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                names.add(pname)
    return frozenset(names)


@dataclass(frozen=True)
class ReleaseConfig:
    r"""A scheduler config as its release behaves.

    Attributes:
        release: the diffusers version (``"unknown"`` when it cannot be read).
        values: field -> the value the release uses (from the config, or the release's behaviour
            when the release has no such field).
        notes: one line per field filled in, naming the release, the field and the behaviour.
    """

    release: str
    values: Mapping[str, Any]
    notes: tuple[str, ...]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


def read_release_config(
    config: Mapping[str, Any], honoured: Iterable[str], fields: Iterable[str], *, release: str, family: str,
    class_name: str,
) -> ReleaseConfig:
    r"""The value of every field in ``fields`` as the release behaves.

    A field in ``honoured`` and in ``config`` keeps the config's value. Otherwise the value is
    :data:`RELEASE_DEFAULTS`' and a note says why: the release has no such field (and ignores the
    config's value, if the config carries one), or the config lacks it.

    Raises:
        UnsupportedRelease: a field of :data:`REQUIRED` for ``family`` is not honoured (the message
            names the release, the class and the missing fields).
        ValueError: ``family`` unknown.
    """
    if family not in REQUIRED:
        raise ValueError(f"family={family!r}: expected one of {tuple(REQUIRED)}")
    honoured = frozenset(honoured)
    missing = [f for f in REQUIRED[family] if f not in honoured]
    if missing:
        raise UnsupportedRelease(
            f"diffusers {release}: {class_name} has no config field {', '.join(missing)}, which the ddspec adapter "
            f"needs; ddspec adapts diffusers {OLDEST_RELEASE} and later (pip install 'diffusers>={OLDEST_RELEASE}')"
        )
    values: dict[str, Any] = {}
    notes: list[str] = []
    for name in fields:
        if name in honoured and name in config:
            values[name] = config[name]
            continue
        if name in honoured and name in REQUIRED[family]:
            raise UnsupportedRelease(
                f"diffusers {release}: the {class_name} config has no {name}, which the ddspec adapter needs")
        if name not in RELEASE_DEFAULTS:
            values[name] = config.get(name, None)
            continue
        value, behaviour = RELEASE_DEFAULTS[name]
        values[name] = value
        if not behaviour:
            continue
        if name in honoured:
            notes.append(f"the {class_name} config has no {name} (diffusers {release} takes it): {behaviour}")
        elif name in config:
            notes.append(f"diffusers {release} has no {name}: {behaviour}; the config's {name}={config[name]!r} "
                         "is ignored by that release")
        else:
            notes.append(f"diffusers {release} has no {name}: {behaviour}")
    parsed = parse_release_or_none(release)
    if parsed is not None and parsed < parse_release(OLDEST_RELEASE):
        notes.append(f"diffusers {release} is older than {OLDEST_RELEASE}, the oldest release ddspec is tested against")
    return ReleaseConfig(release=release, values=values, notes=tuple(notes))


def parse_release_or_none(version: str) -> tuple[int, int, int] | None:
    """:func:`parse_release`, or None when ``version`` is not a release string."""
    try:
        return parse_release(version)
    except ValueError:
        return None
