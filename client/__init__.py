"""Python client for the TwitterChat task service, and the ``twitterchat`` command.

Plain Python on httpx: it imports nothing from ComfyUI or from the service, so
it runs on any machine that can reach the server::

    client = TwitterChatClient("http://127.0.0.1:8188")
    batch = client.submit_batch("posts", template="persona_posts", personas=[...],
                                params={"num_days": 10})
    results = client.wait_for_batch(batch["batch_id"])
"""

from .async_client import AsyncTwitterChatClient
from .calls import FINAL_STATUSES, is_final
from .errors import TwitterChatConnectionError, TwitterChatError
from .follow import BatchProgress
from .sse import ServerEvent
from .sync_client import TwitterChatClient

__all__ = ["AsyncTwitterChatClient", "BatchProgress", "FINAL_STATUSES", "ServerEvent",
           "TwitterChatClient", "TwitterChatConnectionError", "TwitterChatError", "is_final"]
