"""Windows has no ``fcntl``: the pack imports, and the file-lock tests pass, in an
interpreter where ``import fcntl`` fails (as it does on Windows). The locks then
come from the ``filelock`` library."""

from __future__ import annotations

import subprocess
import sys

from pack_paths import PACK_ROOT

BLOCK_FCNTL = "import sys; sys.modules['fcntl'] = None  # `import fcntl` now raises ImportError, as on Windows\n"


def run(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_FCNTL + code], cwd=PACK_ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_the_pack_imports_and_locks_without_fcntl():
    done = run("""
sys.path.insert(0, 'tests/harness')
from pack_paths import load_pack
pack = load_pack()
from comfyui_twitterchat.utils import file_lock
assert file_lock.fcntl is None
assert len(pack.NODE_CLASS_MAPPINGS) >= 6
import comfyui_twitterchat.service.routes, comfyui_twitterchat.client.cli, comfyui_twitterchat.dashboard
print('imported', len(pack.NODE_CLASS_MAPPINGS), 'nodes')
""")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "imported" in done.stdout


def test_the_file_lock_tests_pass_without_fcntl():
    # Shared (reader) locks are exclusive where there is no flock: that one test is about flock's
    # readers sharing, so it is left out here; every other lock and atomic-write test runs.
    done = run("import pytest; sys.exit(pytest.main(['-c', 'tests/pytest.ini', '-p', 'no:cacheprovider', '-q', "
               "'tests/test_file_lock.py', '-k', 'not shared_locks_coexist']))")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
