"""Where RobustScope keeps its files, in one torch-free module (cheap to import from the CLI).

- :func:`runs_dir`: ``$ROBUSTSCOPE_RUNS``, else ``./runs`` (job store, training runs, results);
- :func:`results_dir`: ``<runs>/results`` (stored analysis results, ``engine.analysis``);
- :func:`current_settings`: the settings a background job depends on (data root, checkpoints
  folder, runs folder, analysis plugins, visible GPUs), read from this process's environment.
  A job records them when it is submitted; a worker records its own when it starts and only
  claims jobs whose settings equal its own (:func:`settings_key`). :func:`settings_env` is the
  environment that starts a worker with a job's settings.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
from pathlib import Path

RUNS_ENV = "ROBUSTSCOPE_RUNS"
#: the same names as ``engine.data.base.DATA_ENV``, ``engine.checkpoints.store.CHECKPOINTS_ENV`` and
#: ``engine.analysis.registry.PLUGINS_ENV`` (repeated here so this module imports no torch; a
#: test checks they agree)
DATA_ENV = "ROBUSTSCOPE_DATA"
CHECKPOINTS_ENV = "ROBUSTSCOPE_CHECKPOINTS"
ANALYSES_ENV = "ROBUSTSCOPE_ANALYSES"
DEVICES_ENV = "CUDA_VISIBLE_DEVICES"

#: the settings a worker must share with a job to run it (``runs_root`` is recorded too, but the
#: runs folder is the job store's own folder, so it is never compared)
MATCHED_SETTINGS = ("data_root", "checkpoints_root", "analyses", "cuda_visible_devices")
#: setting -> (what people call it, the environment variable that sets it)
SETTING_NAMES = {
    "data_root": ("data root", DATA_ENV),
    "checkpoints_root": ("checkpoints folder", CHECKPOINTS_ENV),
    "runs_root": ("runs folder", RUNS_ENV),
    "analyses": ("analysis plugins", ANALYSES_ENV),
    "cuda_visible_devices": ("visible GPUs", DEVICES_ENV),
}


def runs_dir() -> Path:
    """The runs folder: ``$ROBUSTSCOPE_RUNS``, else ``./runs`` (not created here)."""
    return Path(os.environ.get(RUNS_ENV) or "runs")


def results_dir(runs: str | os.PathLike | None = None) -> Path:
    """The stored analysis results: ``<runs>/results`` (not created here)."""
    return (Path(runs) if runs is not None else runs_dir()) / "results"


def _absolute(path: str | os.PathLike) -> str:
    return str(Path(path).expanduser().resolve())


def current_settings(runs: str | os.PathLike | None = None) -> dict:
    """The settings a background job depends on, as this process sees them (plain JSON values).

    Args:
        runs: the job store's folder (default :func:`runs_dir`).

    Returns:
        ``{"data_root", "checkpoints_root", "runs_root"}``: absolute paths of the folders in effect
        (``$ROBUSTSCOPE_DATA`` else ``./data``, ``$ROBUSTSCOPE_CHECKPOINTS`` else ``./checkpoints``,
        the runs folder), resolved against the current directory, so two processes that see the
        same folders agree whether the variable is set or not; ``"analyses"``: the plugin modules
        of ``$ROBUSTSCOPE_ANALYSES``, sorted and comma-joined (``None`` when none);
        ``"cuda_visible_devices"``: ``$CUDA_VISIBLE_DEVICES`` (``None`` when unset: every GPU).
    """
    plugins = sorted({name.strip() for name in os.environ.get(ANALYSES_ENV, "").split(",") if name.strip()})
    devices = os.environ.get(DEVICES_ENV)
    return {
        "data_root": _absolute(os.environ.get(DATA_ENV) or "data"),
        "checkpoints_root": _absolute(os.environ.get(CHECKPOINTS_ENV) or "checkpoints"),
        "runs_root": _absolute(runs if runs is not None else runs_dir()),
        "analyses": ",".join(plugins) or None,
        "cuda_visible_devices": devices.strip() if devices is not None else None,
    }


def settings_key(settings: dict | None) -> str | None:
    """A short hash of the settings a worker must share with a job (:data:`MATCHED_SETTINGS`);
    ``None`` for ``None`` (a job from before settings were recorded: any worker runs it)."""
    if settings is None:
        return None
    matched = {name: settings.get(name) for name in MATCHED_SETTINGS}
    text = json.dumps(matched, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def same_settings(a: dict | None, b: dict | None) -> bool:
    """Whether a worker with settings ``a`` may run a job with settings ``b`` (or the reverse);
    ``None`` (unrecorded) matches anything."""
    return a is None or b is None or settings_key(a) == settings_key(b)


def settings_env(settings: dict) -> dict[str, str | None]:
    """The environment variables that give a process ``settings`` (``None``: unset the variable)."""
    return {
        DATA_ENV: settings.get("data_root"),
        CHECKPOINTS_ENV: settings.get("checkpoints_root"),
        RUNS_ENV: settings.get("runs_root"),
        ANALYSES_ENV: settings.get("analyses"),
        DEVICES_ENV: settings.get("cuda_visible_devices"),
    }


def apply_env(env: dict, settings: dict) -> dict:
    """``env`` (a copy of an environment) with the variables of ``settings`` set or removed."""
    out = dict(env)
    for name, value in settings_env(settings).items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = str(value)
    return out


def settings_differences(have: dict, need: dict) -> list[str]:
    """Why settings ``have`` (a worker's) cannot run a job with settings ``need``: one phrase per
    matched setting that differs, e.g. ``"data root /a (this job needs /b)"``."""
    out = []
    for name in MATCHED_SETTINGS:
        if have.get(name) != need.get(name):
            label = SETTING_NAMES[name][0]
            out.append(f"{label} {_shown(have.get(name))} (this job needs {_shown(need.get(name))})")
    return out


def describe_settings(settings: dict | None) -> str:
    """One line for people: ``data root X, checkpoints folder Y[, analysis plugins P][, visible GPUs G]``."""
    if settings is None:
        return "(not recorded)"
    parts = [f"data root {settings.get('data_root')}", f"checkpoints folder {settings.get('checkpoints_root')}"]
    if settings.get("analyses"):
        parts.append(f"analysis plugins {settings['analyses']}")
    if settings.get("cuda_visible_devices") is not None:
        parts.append(f"visible GPUs {settings['cuda_visible_devices'] or '(none)'}")
    return ", ".join(parts)


def worker_command(settings: dict, lane: str = "all") -> str:
    """The shell command that starts a worker with ``settings`` (what a waiting job's message shows)."""
    unset, assigns = [], []
    for name, value in settings_env(settings).items():
        if value is not None:
            assigns.append(f"{name}={shlex.quote(str(value))}")
        elif os.environ.get(name) is not None:  # set here, unset for the job: say so
            unset.append(f"-u {name}")
    prefix = " ".join((["env", *unset] if unset else []) + assigns)
    lane_option = "" if lane == "all" else f" --lane {lane}"
    return f"{prefix + ' ' if prefix else ''}python -m engine worker{lane_option}"


def _shown(value) -> str:
    return "(none)" if value is None or value == "" else str(value)
