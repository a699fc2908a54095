"""The in-process prompt monitor (started from ComfyUI's startup signal, never at import)."""
