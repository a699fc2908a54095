"""Prometheus metrics on the service's own registry (never the global one, which
raises on a second definition and carries other packs' metrics).

Stored tasks by status and the waiting depth are read from the store's
counts at scrape time, so they are right after a restart; durations, LLM
calls and the monitor's channel counters are added as they happen.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

from .store import API_STATUSES, FINAL, WAITING, parse_iso

DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class _LiveCollector:
    def __init__(self, service: Any, monitor_stats: Callable[[], dict | None]) -> None:
        self.service = service
        self.monitor_stats = monitor_stats

    def describe(self) -> Iterable:
        return []

    def collect(self) -> Iterable:
        store = self.service.store
        tasks = GaugeMetricFamily("twitterchat_tasks", "Stored tasks by status", labels=["status"])
        for status, count in store.api_counts().items():
            tasks.add_metric([status], count)
        yield tasks
        yield GaugeMetricFamily("twitterchat_waiting_tasks", "Tasks waiting in the service (not yet in ComfyUI)",
                                value=store.counts[WAITING])
        yield GaugeMetricFamily("twitterchat_inflight_tasks", "Service tasks in ComfyUI's queue or running",
                                value=len(self.service.inflight))
        stats = self.monitor_stats() or {}
        channels = stats.get("channels") or {}
        for name, help_text in (("sent", "Monitor infos sent"), ("dropped", "Monitor infos dropped"),
                                ("failures", "Monitor send failures")):
            family = CounterMetricFamily(f"twitterchat_monitor_{name}", help_text, labels=["channel"])
            for channel, values in channels.items():
                family.add_metric([channel], values.get(name, 0))
            yield family
        pending = GaugeMetricFamily("twitterchat_monitor_pending", "Monitor infos buffered per channel",
                                    labels=["channel"])
        for channel, values in channels.items():
            pending.add_metric([channel], values.get("pending", 0))
        yield pending


class ServiceMetrics:
    def __init__(self, service: Any, monitor_stats: Callable[[], dict | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_LiveCollector(service, monitor_stats))
        self.duration = Histogram("twitterchat_task_duration_seconds", "Task run time, start to final state",
                                  ["status"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.llm_requests = Counter("twitterchat_llm_requests", "LLM calls by profile", ["profile"],
                                    registry=self.registry)
        self.llm_errors = Counter("twitterchat_llm_errors", "Failed LLM calls by profile and kind",
                                  ["profile", "kind"], registry=self.registry)
        self.llm_latency = Histogram("twitterchat_llm_latency_seconds", "LLM call latency by profile", ["profile"],
                                     buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120), registry=self.registry)

    def observe_llm(self, profile: str, seconds: float, error: str | None) -> None:
        self.llm_requests.labels(profile).inc()
        self.llm_latency.labels(profile).observe(seconds)
        if error:
            self.llm_errors.labels(profile, error).inc()

    def observe_events(self, events: Iterable[Any]) -> None:
        for event in events:
            data = event.data
            if event.kind != "task" or data.get("status") not in FINAL:
                continue
            started, finished = parse_iso(data.get("started_at")), parse_iso(data.get("finished_at"))
            if started is not None and finished is not None and finished >= started:
                self.duration.labels(data["status"]).observe(finished - started)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


assert set(API_STATUSES) >= set(FINAL)
