"""TaskService: feeds stored tasks to ComfyUI a few at a time and follows them to the end.

- The store (SQLite) is the truth; every call into it runs on one store thread.
- The feeder (an asyncio task on ComfyUI's loop) keeps at most ``max_inflight``
  of the service's prompts in ComfyUI's queue, refilling in priority then
  submission order; the ComfyUI prompt id is the task id.
- Task states come from the prompt monitor's infos (a listener on its
  tick). When one of our prompts leaves ComfyUI's queue the feeder wakes the
  monitor, so the final state is published at once, not at the next tick.
- After a restart, tasks that were in ComfyUI's queue or running are queued
  again (attempts + 1) or failed with reason ``restarted``.

With the Redis store (``service.backend = redis``) many instances share one
queue: each pulls from the consumer group while it has room, renews the lease
of what it runs, takes cancel requests from a channel, and every instance
follows the shared event stream for its websocket and ``/events``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping

from ..monitor.query import outcome
from ..utils.structured_logger import redact_value
from .comfy_bridge import ComfyBridge, InvalidWorkflow, files_from_outputs
from .config import ServiceSettings
from .events import EventHub
from .store import (API_STATUS, CANCELLED, COMPLETED, FAILED, FINAL, RUNNING, SUBMITTED, WAITING, Event, NewTask,
                    Store, StoreError, parse_iso)
from .templates import TemplateError, build_workflow

logger = logging.getLogger("twitterchat.service")

LOST_AFTER_SECONDS = 10.0  # a prompt gone from the queue with no final info by then is settled from history
PULL_BLOCK_MS = 1000        # one blocking read of the shared queue (below redis-py's 5 s socket timeout)
OUTPUT_MANAGER = "OutputManager"


class TaskService:
    def __init__(self, settings: ServiceSettings, store: Store, bridge: ComfyBridge, *,
                 worker: str, output_root: Callable[[], Path], websocket: Callable[[str, Any], None] | None,
                 monitor: Any = None, metrics: Any = None, public_url: str = "") -> None:
        self.settings = settings
        self.store = store
        self.bridge = bridge
        self.worker = worker
        self.output_root = output_root
        self.websocket = websocket
        self.monitor = monitor
        self.metrics = metrics
        self.webhooks: Any = None  # the WebhookSender, once started
        self.hub = EventHub()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="twitterchat-store")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.inflight: set[str] = set()      # submitted or running, as far as this process knows
        self._submitting: set[str] = set()
        self._gone_since: dict[str, float] = {}
        self._work: asyncio.Event | None = None
        self._ws_backlog: deque[Event] = deque()
        self._ws_wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self.started = False
        # Redis mode: the shared queue, its entries held here, and the threads that follow Redis.
        self.distributed = bool(getattr(store, "distributed", False))
        self.public_url = public_url.rstrip("/")
        self.entries: dict[str, str] = {}   # task id -> its queue entry, while this instance runs it
        self._room: asyncio.Event | None = None
        self._cancelling: set[str] = set()
        self._stopping = threading.Event()  # the Redis follower threads (daemons) sleep on it; set, they end
        self._background: set[asyncio.Task] = set()
        self.queue_executor = ThreadPoolExecutor(1, thread_name_prefix="twitterchat-queue")

    # -- plumbing ----------------------------------------------------------
    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a store call on the store thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    def published(self, events: list[Event], *, local: bool = True) -> None:
        """On the loop: wake event streams and tell websocket clients.

        ``local``: written by this instance (metrics count them here). In Redis mode the
        websocket gets every instance's events from the shared stream (``local=False``)."""
        if not events:
            return
        self.hub.notify()
        if self.webhooks is not None and any(e.data.get("status") in (*FINAL, "finished") for e in events):
            self.webhooks.wake.set()  # a final state may have put a delivery in the outbox
        if self.websocket is not None and self.distributed != local:
            self._ws_backlog.extend(events)
            if self._ws_wake is not None:
                self._ws_wake.set()
        if self.metrics is not None and local:
            self.metrics.observe_events(events)

    async def _websocket_loop(self) -> None:
        """Send events to ComfyUI's websocket in order, a few hundred at a time, so a
        10,000-task batch never holds up the request that made it."""
        while True:
            await self._ws_wake.wait()
            self._ws_wake.clear()
            sent = 0
            while self._ws_backlog:
                event = self._ws_backlog.popleft()
                try:
                    self.websocket(f"twitterchat.{event.kind}", event.data)
                except RuntimeError:  # the loop is closing
                    return
                sent += 1
                if sent % 200 == 0:
                    await asyncio.sleep(0)

    def _publish_threadsafe(self, events: list[Event], finished: list[str] = ()) -> None:
        if self.loop is None or not (events or finished):
            return

        def on_loop() -> None:
            for task_id in finished:
                self._done(task_id)
            self.published(events)

        self.loop.call_soon_threadsafe(on_loop)

    def kick(self) -> None:
        if self._work is not None:
            self._work.set()

    def _done(self, task_id: str) -> None:
        """On the loop: a task of this instance reached its final state."""
        self.inflight.discard(task_id)
        self._gone_since.pop(task_id, None)
        self.entries.pop(task_id, None)
        self._cancelling.discard(task_id)
        if self._room is not None:
            self._room.set()

    # -- start -------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._work = asyncio.Event()
        self._ws_wake = asyncio.Event()
        if self.websocket is not None:
            self._tasks.append(asyncio.create_task(self._websocket_loop(), name="twitterchat-websocket"))
        if self.distributed:
            await self._start_distributed()
            return
        events = await self.run(self.store.requeue_after_restart, self.settings.max_attempts)
        if events:
            logger.info("task service: %d task(s) were in ComfyUI when it stopped; requeued or failed "
                        "by their attempts", sum(1 for e in events if e.kind == "task"))
        self.published(events)
        self.inflight = set(await self.run(self.store.ids_in_states, (SUBMITTED, RUNNING)))
        if self.monitor is not None:
            self.monitor.add_listener(self.on_infos)
        self._tasks.append(asyncio.create_task(self._feed_loop(), name="twitterchat-feeder"))
        self.started = True
        self.kick()

    async def _start_distributed(self) -> None:
        self._room = asyncio.Event()
        after = await self.run(self.store.last_event_id)
        if self.monitor is not None:
            self.monitor.add_listener(self.on_infos)
        for target, name in ((self._follow_events, "events"), (self._follow_cancels, "cancels")):
            threading.Thread(target=target, args=(after,) if name == "events" else (), daemon=True,
                             name=f"twitterchat-{name}").start()
        self._tasks += [asyncio.create_task(self._feed_loop(), name="twitterchat-feeder"),
                        asyncio.create_task(self._pull_loop(), name="twitterchat-puller"),
                        asyncio.create_task(self._heartbeat_loop(), name="twitterchat-heartbeat")]
        self.started = True

    # -- Redis mode: pulling, leases, cancels, the shared event stream ------
    async def _pull_loop(self) -> None:
        """Take tasks from the shared queue while this instance has room (its own submitted and
        running tasks below ``max_inflight``): a busy or slower instance simply takes less."""
        failing = False
        while True:
            room = self.settings.max_inflight - len(self.inflight)
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                taken, events = await asyncio.get_running_loop().run_in_executor(
                    self.queue_executor, lambda: self.store.take(self.worker, room,
                                                                 max_attempts=self.settings.max_attempts,
                                                                 block_ms=PULL_BLOCK_MS))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    logger.warning("task service: cannot take tasks from the shared queue (%s); retrying every "
                                   "second", exc)
                failing = True
                await asyncio.sleep(1.0)
                continue
            if failing:
                logger.info("task service: the shared queue is reachable again")
                failing = False
            self.published(events)
            for task_id, spec, entry in taken:
                self.entries[task_id] = entry
                self.inflight.add(task_id)
                await self._submit_one(task_id, spec, marked=True)
            self.kick()

    async def _heartbeat_loop(self) -> None:
        """Renew the lease of the entries this instance runs, a few times per lease; learn of cancel
        requests (pub/sub is the fast path) and refresh the shared counts."""
        interval = max(0.2, self.store.lease_seconds / 4)
        while True:
            await asyncio.sleep(interval)
            entries = {t: e for t, e in self.entries.items() if t in self.inflight}
            try:
                lost, cancels = await self.run(self.store.heartbeat, self.worker, entries)
                await self.run(self.store.refresh_counts)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("task service: lease renewal failed (%s); retrying", exc)
                continue
            for task_id in lost:
                logger.warning("task %s: its lease expired and another instance took it; this run's result is "
                               "kept only if it finishes first", task_id)
            for task_id in cancels:
                self._cancel_here(task_id)

    def _cancel_here(self, task_id: str) -> None:
        """On the loop: a cancel request for a task this instance runs."""
        if task_id in self.inflight and task_id not in self._cancelling and task_id not in self._submitting:
            self._cancelling.add(task_id)
            task = asyncio.create_task(self._cancel_in_comfy(task_id))
            self._background.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._background.discard)

    def _follow_cancels(self) -> None:
        """Thread: cancel requests published by any instance."""
        while not self._stopping.is_set():
            try:
                pubsub = self.store.r.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.store.cancel_channel)
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        self.loop.call_soon_threadsafe(self._cancel_here, message["data"])
            except Exception as exc:  # Redis away: the heartbeat still finds cancel flags
                logger.debug("cancel channel: %s; resubscribing", exc)
                self._stopping.wait(1.0)

    def _follow_events(self, after: int) -> None:
        """Thread: every instance's events, in order, to this instance's websocket and SSE."""
        last = after
        while not self._stopping.is_set():
            try:
                reply = self.store.r.xread({self.store.events_key: f"{last}-0"}, count=500, block=1000)
                events = []
                for _, entries in reply or ():
                    for entry_id, fields in entries:
                        last = int(entry_id.split("-", 1)[0])
                        events.append(Event(last, fields["kind"], json.loads(fields["data"]),
                                            fields.get("task") or None, fields.get("batch") or None))
                if events:
                    self.loop.call_soon_threadsafe(functools.partial(self.published, events, local=False))
            except RuntimeError:  # ComfyUI's loop is closed: shutting down
                return
            except Exception as exc:  # Redis away, or a bad entry: read again, never die
                logger.debug("event stream: %s; reading again", exc)
                self._stopping.wait(1.0)

    # -- feeding -----------------------------------------------------------
    async def _feed_loop(self) -> None:
        while True:
            try:
                if not self.inflight and (self.distributed or self.store.counts[WAITING] == 0):
                    await self._work.wait()
                self._work.clear()
                await self._feed_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the feeder must keep going; the next pass tries again
                logger.exception("task service: feeding ComfyUI failed; retrying")
                await asyncio.sleep(1.0)
            await asyncio.sleep(self.settings.poll_seconds)

    async def _feed_once(self) -> None:
        present = self.bridge.present(self.inflight | self._submitting)
        gone = self.inflight - present - self._submitting
        now = time.monotonic()
        if gone and self.monitor is not None and any(t not in self._gone_since for t in gone):
            self.monitor.wake()  # the final info goes out now, not at the next tick
        for task_id in gone:
            since = self._gone_since.setdefault(task_id, now)
            if now - since > LOST_AFTER_SECONDS:
                self._gone_since[task_id] = now  # look again later, not every pass
                self.executor.submit(self._settle_lost, task_id)
        room = self.settings.max_inflight - len(present)
        if self.distributed or room <= 0 or self.store.counts[WAITING] == 0:
            return
        for task_id, spec in await self.run(self.store.next_waiting, room):
            await self._submit_one(task_id, spec)

    async def _submit_one(self, task_id: str, spec: Mapping[str, Any], marked: bool = False) -> None:
        if not marked:
            moved, events = await self.run(self.store.mark_submitted, task_id, self.worker)
            if not moved:
                return
            self.published(events)
        self._submitting.add(task_id)
        self.inflight.add(task_id)
        try:
            workflow = spec.get("workflow") or build_workflow(spec["template"], spec.get("params") or {})
            await self.bridge.enqueue(task_id, workflow)
        except (InvalidWorkflow, TemplateError) as exc:
            error = {"type": "invalid_workflow", "message": str(exc),
                     "node_errors": getattr(exc, "node_errors", {})}
            await self._finish(task_id, FAILED, error=redact_value(error))
        except Exception as exc:  # a task must end, never hang in 'submitted'
            logger.exception("task %s could not be handed to ComfyUI", task_id)
            await self._finish(task_id, FAILED, error={"type": "enqueue_failed",
                                                       "message": redact_value(str(exc))[:500]})
        finally:
            self._submitting.discard(task_id)
        if await self.run(self.store.cancel_requested, task_id):
            await self._cancel_in_comfy(task_id)

    async def _finish(self, task_id: str, state: str, **fields: Any) -> dict[str, Any] | None:
        data, events = await self.run(self.store.finish, task_id, state, **fields)
        if data is not None:  # only a task that did end leaves inflight (only_from may refuse the move)
            self._done(task_id)
        self.published(events)
        return data

    # -- monitor infos (monitor thread) -> store (store thread) ------------
    def on_infos(self, infos: list[dict[str, Any]]) -> None:
        own = [info for info in infos if info.get("id") in self.inflight]
        if own:
            self.executor.submit(self._apply_infos, own)

    def _apply_infos(self, infos: list[dict[str, Any]]) -> None:
        events: list[Event] = []
        finished: list[str] = []
        for info in infos:
            task_id = info["id"]
            try:
                status = info.get("status")
                if status in FINAL:
                    events.extend(self._finish_from_info(task_id, info))
                    finished.append(task_id)
                elif status in ("pending", "running"):
                    events.extend(self.store.observe(
                        task_id, status, progress=info.get("progress"), current_node=info.get("current_node"),
                        queue_position=info.get("queue_position"), started_at=parse_iso(info.get("start_time")),
                        **({"worker": self.worker} if self.distributed else {})))
            except StoreError as exc:  # Redis away: a final state is settled from history once it is back
                logger.warning("task service: could not store the state of task %s (%s); it is stored from "
                               "ComfyUI's history when the store is back", task_id, exc)
            except Exception:  # one bad info must not lose the others
                logger.exception("task service: could not apply the monitor's info for task %s", task_id)
        self._publish_threadsafe(events, finished)

    def _finish_from_info(self, task_id: str, info: Mapping[str, Any]) -> list[Event]:
        status = info["status"]
        error = info.get("error_info")
        if status == CANCELLED:
            error = self._cancel_reason(task_id, history=info.get("type") == "history")
        elif error is not None:
            error = redact_value(dict(error))
        outputs = self._outputs(task_id) if status != CANCELLED or info.get("type") == "history" else []
        _, events = self.store.finish(task_id, status, error=error, outputs=outputs,
                                      started_at=parse_iso(info.get("start_time")),
                                      finished_at=parse_iso(info.get("end_time")),
                                      ran=info.get("type") == "history" and info.get("start_time") is not None)
        return events

    def _cancel_reason(self, task_id: str, history: bool) -> dict[str, Any]:
        if self.store.cancel_requested(task_id):
            return {"type": "cancelled", "message": "cancelled by request"}
        if history:
            return {"type": "interrupted", "message": "interrupted in ComfyUI (its Cancel button or /interrupt)"}
        return {"type": "removed", "message": "removed from ComfyUI's queue before it ran (e.g. Clear Queue)"}

    def _settle_lost(self, task_id: str) -> None:
        """Store thread: a prompt left ComfyUI's queue and no final info came; settle it from history."""
        if task_id not in self.inflight:
            return
        try:
            self._settle_from_history(task_id)
        except StoreError as exc:  # tried again LOST_AFTER_SECONDS later, until the store is back
            logger.warning("task %s: its final state cannot be stored yet (%s)", task_id, exc)

    def _settle_from_history(self, task_id: str) -> None:
        try:
            summary = self.bridge.history_summary(task_id)
        except Exception:
            logger.exception("task %s: reading ComfyUI's history failed", task_id)
            return
        if summary is None:
            _, events = self.store.finish(task_id, CANCELLED, error=self._cancel_reason(task_id, history=False),
                                          only_from=(SUBMITTED, RUNNING))
        else:
            status, error, start, end = outcome(summary)
            if status == CANCELLED:
                error = self._cancel_reason(task_id, history=True)
            _, events = self.store.finish(task_id, status, error=redact_value(error) if error else error,
                                          outputs=self._outputs(task_id),
                                          started_at=start / 1000 if start else None,
                                          finished_at=end / 1000 if end else None, ran=start is not None)
        logger.warning("task %s: no final info from the monitor %.0fs after it left ComfyUI's queue; "
                       "settled from history", task_id, LOST_AFTER_SECONDS)
        self._publish_threadsafe(events, [task_id])

    # -- outputs -----------------------------------------------------------
    def _outputs(self, task_id: str) -> list[dict[str, Any]]:
        outputs = self.bridge.history_outputs(task_id)
        if not outputs:
            return []
        result = files_from_outputs(outputs)
        if self.public_url:  # Redis mode: the files are on this instance
            for item in result:
                item["url"] = self.public_url + item["url"]
        spec = self.store.task_spec(task_id) or {}
        workflow = spec.get("workflow")
        if workflow is None and spec.get("template"):
            try:
                workflow = build_workflow(spec["template"], spec.get("params") or {})
            except TemplateError:
                workflow = {}
        savers = {nid for nid, node in (workflow or {}).items()
                  if isinstance(node, Mapping) and node.get("class_type") == OUTPUT_MANAGER}
        for node_id in sorted(savers):
            for folder in (outputs.get(node_id) or {}).get("text") or ():
                post = self._read_post(node_id, folder)
                if post is not None:
                    result.append(post)
        return result

    def _read_post(self, node_id: str, folder: str) -> dict[str, Any] | None:
        """An OutputManager folder's post, inline; never a path outside the output folder."""
        try:
            root = self.output_root().resolve()
            path = Path(folder).resolve()
            if root not in path.parents:
                return None
            # written atomically and last (tools/post_output.py): present means complete
            metadata = json.loads((path / "metadata.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(metadata, Mapping):
            return None
        content = metadata.get("content") or {}
        return {"node_id": str(node_id), "kind": "post", "folder": path.relative_to(root).as_posix(),
                "user_id": metadata.get("user_id"), "date": metadata.get("date"),
                "text": content.get("tweet_text"), "scene_hint": content.get("scene_hint")}

    # -- cancelling --------------------------------------------------------
    async def cancel(self, task_id: str) -> dict[str, Any] | None:
        state = await self.run(self.store.task_state, task_id)
        if state is None:
            return None
        if state in FINAL:
            return {"task_id": task_id, "status": state, "cancelled": False,
                    "message": f"the task had already {'finished' if state == COMPLETED else 'ended'} "
                               f"({state}); nothing changed"}
        await self.run(self.store.request_cancel, task_id)
        if state == WAITING:
            data = await self._finish(task_id, CANCELLED, error={"type": "cancelled", "message": "cancelled by "
                                                                 "request before it was sent to ComfyUI"},
                                      only_from=(WAITING,))
            if data is not None:
                return {"task_id": task_id, "status": CANCELLED, "cancelled": True,
                        "message": "cancelled before it was sent to ComfyUI"}
        if self.distributed and task_id not in self.inflight:
            worker = await self.run(self.store.task_worker, task_id)
            state = await self.run(self.store.task_state, task_id)
            if state not in FINAL and worker != self.worker:
                # request_cancel flagged it and told every instance; the one running it acts.
                return {"task_id": task_id, "status": API_STATUS.get(state, state), "cancelled": True,
                        "message": f"cancel sent to instance {worker}, which runs the task; it ends cancelled "
                                   "when that instance removes or interrupts it"}
        if task_id in self._submitting:
            return {"task_id": task_id, "status": "queued", "cancelled": True,
                    "message": "cancel requested; the prompt is removed as soon as it reaches ComfyUI's queue"}
        return await self._cancel_in_comfy(task_id)

    async def _cancel_in_comfy(self, task_id: str) -> dict[str, Any]:
        if self.bridge.delete_pending(task_id):
            await self._finish(task_id, CANCELLED, error={"type": "cancelled", "message": "cancelled by request "
                                                          "while waiting in ComfyUI's queue"})
            return {"task_id": task_id, "status": CANCELLED, "cancelled": True,
                    "message": "removed from ComfyUI's queue"}
        if self.bridge.interrupt_running(task_id):
            return {"task_id": task_id, "status": "running", "cancelled": True,
                    "message": "interrupt sent; the task ends cancelled when its current node yields"}
        task = await self.run(self.store.get_task, task_id)
        status = task["status"] if task else "unknown"
        return {"task_id": task_id, "status": status, "cancelled": status == CANCELLED,
                "message": "the prompt was no longer in ComfyUI's queue; its final state is as shown"}

    async def cancel_batch(self, batch_id: str) -> int | None:
        if await self.run(self.store.get_batch, batch_id) is None:
            return None
        count, events = await self.run(self.store.cancel_waiting_in_batch, batch_id, {
            "type": "cancelled", "message": "cancelled with its batch before it was sent to ComfyUI"})
        self.published(events)
        ids = await self.run(self.store.batch_task_ids, batch_id, (WAITING, SUBMITTED, RUNNING))
        for task_id in ids:
            answer = await self.cancel(task_id)
            count += bool(answer and answer["cancelled"])
        return count

    # -- health ------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        counts = self.store.api_counts()
        return {"started": self.started, "inflight": len(self.inflight), "waiting": self.store.counts[WAITING],
                "counts": counts, "backend": "redis" if self.distributed else "sqlite", "worker": self.worker}
