"""The task service: persisted tasks and batches on ComfyUI's own server.

``register(server)`` (called from the pack's root ``__init__``) adds the HTTP
routes and starts the service from ComfyUI's start-up signal; nothing starts
at import time. Only ``comfy_bridge.py`` touches ComfyUI's internals.
"""
