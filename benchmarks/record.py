"""Write a benchmark's figures as JSON with what they were measured on: machine, versions, command.

Every speed number in README.md comes from a file this writes under benchmarks/results/. Use it
at the end of a benchmark script:

    from record import write_result  # benchmarks/ is on sys.path when a script there runs
    write_result("vs_trl_tiny", {"medsft": {...}, "trl": {...}}, args=vars(args))

`python benchmarks/<script>.py --out PATH` style options are the caller's; this only writes.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ("torch", "transformers", "peft", "lightning", "accelerate", "trl", "datasets")
"""Versions recorded when installed (absent ones are left out)."""
ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "PYTORCH_CUDA_ALLOC_CONF")


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU model and usable cores, memory, GPU name(s) when CUDA is there, and load average."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "os": platform.platform(),
    }
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if hasattr(os, "sched_getaffinity"):
        info["cores_this_process_may_use"] = len(os.sched_getaffinity(0))
    if hasattr(os, "getloadavg"):
        # Other work on the machine changes CPU timings: say how busy it was when we finished.
        info["load_average_1_5_15min"] = [round(x, 2) for x in os.getloadavg()]
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["cuda"] = torch.version.cuda
        info["torch_threads"] = torch.get_num_threads()
    return info


def versions() -> dict[str, str]:
    """Python and the installed versions of the packages that decide training speed."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def command() -> str:
    """The command line that ran this benchmark, with the thread settings in force."""
    env = " ".join(f"{k}={shlex.quote(os.environ[k])}" for k in ENV_VARS if k in os.environ)
    argv = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])
    return f"{env} {argv}".strip()


def write_result(
    name: str,
    figures: dict[str, Any],
    *,
    args: dict[str, Any] | None = None,
    out: Path | None = None,
) -> Path:
    """Write `figures` with machine, versions, command and UTC time to results/<name>.json.

    Args:
        name: file stem under benchmarks/results/ (ignored when `out` is given).
        figures: the measured numbers, JSON-serialisable.
        args: the parsed options, recorded alongside the command line.
        out: write here instead.
    """
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": name,
        "command": command(),
        "args": args or {},
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "figures": figures,
    }
    path.write_text(
        json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
    )
    print(f"wrote {path}")
    return path
