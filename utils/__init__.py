"""Plain-Python helpers shared by the nodes and the monitor (no ComfyUI imports at load)."""
