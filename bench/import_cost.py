"""What importing the pack costs a ComfyUI start-up, outside ComfyUI.

Each run is a fresh interpreter that imports the checkout the way ComfyUI does
(a path-derived module name with a hyphen) and reports the seconds the import
took. ``tests/test_package.py`` checks that the import is inert (no thread, no
connection, no heavy module); this measures its time, which the foundation
issue asks to stay well under a second.

Last line: ``import_seconds: X`` (the median of the runs).
Run: ``bash bench/run.sh import_cost``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = 15

PROBE = r"""
import importlib.util, json, sys, time
started = time.perf_counter()
spec = importlib.util.spec_from_file_location(
    "comfyui-twitterchat", sys.argv[1] + "/__init__.py", submodule_search_locations=[sys.argv[1]])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
print(json.dumps({"seconds": time.perf_counter() - started, "nodes": len(module.NODE_CLASS_MAPPINGS)}))
"""


def main() -> int:
    seconds = []
    for _ in range(RUNS):
        out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT)], check=True,
                             capture_output=True, text=True, timeout=60).stdout
        result = json.loads(out.strip().splitlines()[-1])
        seconds.append(result["seconds"])
    print(f"runs: {RUNS}, nodes: {result['nodes']}, min {min(seconds):.3f}s, max {max(seconds):.3f}s")
    print(f"import_seconds: {statistics.median(seconds):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
