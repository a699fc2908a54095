"""Where the pack under test and the test-only node packs live."""

from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[2]
TESTS_DIR = PACK_ROOT / "tests"
PROBE_NODES = TESTS_DIR / "harness" / "probe_nodes"
EXAMPLES_DIR = PACK_ROOT / "examples"
