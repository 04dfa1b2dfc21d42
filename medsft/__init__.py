"""medsft: supervised fine-tuning of Qwen3 on medical (and any) instruction data.

Importing medsft (or any of its packages) only defines things: the command-line tools set up
their process themselves (medsft.cli.console.prepare_process).
"""

import importlib
import sys
from collections.abc import Callable
from typing import Any

__version__ = "0.1.0"


def lazy_exports(
    package: str, exports: dict[str, tuple[str, ...]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's `__getattr__` and `__dir__` (PEP 562) that import each re-exported name from
    its module when first used, so importing the package loads none of them (torch and
    Lightning stay out of `import medsft.data`, `medsft.metrics`, `medsft.evaluation`).

    Args:
        package: the package's `__name__`.
        exports: its module (relative to the package) -> the names it re-exports from there.
    """
    where = {name: f"{package}.{module}" for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return __getattr__, __dir__
