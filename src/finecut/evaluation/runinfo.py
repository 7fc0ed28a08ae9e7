"""Where and with what a run happened: finecut version, git commit, date, host CPU, library versions."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from finecut import __version__

_SOURCE_DIR = Path(__file__).resolve().parent


def git_commit(path: Path = _SOURCE_DIR) -> str | None:
    """The commit of the checkout holding ``path`` (with ``-dirty`` if it has local changes), or None."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10, check=False
        )
        if head.returncode != 0:
            return None
        commit = head.stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path, capture_output=True, text=True, timeout=20, check=False,
        )
        return commit + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_name() -> str:
    """A human-readable CPU model name."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_info() -> dict[str, Any]:
    """Provenance recorded in every ``config.json``."""
    info: dict[str, Any] = {
        "finecut_version": __version__,
        "git_commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": {
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "opencv": cv2.__version__,
        },
    }
    try:
        info["host"]["load_average"] = [round(v, 2) for v in os.getloadavg()]  # timings are only as clean as this
    except OSError:
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        info["host"]["torch"] = torch.__version__
        info["host"]["torch_threads"] = torch.get_num_threads()
    return info
