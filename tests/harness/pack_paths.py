"""Where the pack under test and the test-only node packs live, and how to load
the pack from this checkout (never from whatever an editable install points at)."""

import importlib.util
import sys
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[2]
TESTS_DIR = PACK_ROOT / "tests"
PROBE_NODES = TESTS_DIR / "harness" / "probe_nodes"
EXAMPLES_DIR = PACK_ROOT / "examples"
PERSONAS_DIR = EXAMPLES_DIR / "personas"   # the example character cards
PACK_NAME = "comfyui_twitterchat"


def load_pack():
    """Load the checkout the way ComfyUI loads a pack: a spec from the root __init__.py."""
    loaded = sys.modules.get(PACK_NAME)
    if loaded is not None and Path(loaded.__file__).parent == PACK_ROOT:
        return loaded
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, PACK_ROOT / "__init__.py", submodule_search_locations=[str(PACK_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module
