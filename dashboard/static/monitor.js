// The monitor panel: health (service, store, waiting depth, tasks per status)
// and the prompt monitor's counters per channel. Refreshed on demand, once a
// minute while the tab is visible, and a few seconds after tasks changed (at
// most once per NUDGE_MS however many events arrive): never a storm.

import { api } from "./api.js";
import { el, formatTime, setChildren } from "./format.js";

const REFRESH_MS = 60000;
const NUDGE_MS = 5000;

export class MonitorPanel {
  constructor({ summary, channels, updated, badge, refreshButton, onError }) {
    Object.assign(this, { summary, channels, updated, badge, onError });
    this.timer = null;
    this.nudged = null;
    this.busy = false;
    refreshButton.addEventListener("click", () => this.refresh());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.refresh();
    });
  }

  /** Something changed (a task event): refresh soon, once. */
  nudge() {
    if (this.nudged || !this.timer) return;
    this.nudged = setTimeout(() => {
      this.nudged = null;
      if (document.visibilityState === "visible") this.refresh();
    }, NUDGE_MS);
  }

  start() {
    this.refresh();
    this.timer = setInterval(() => {
      if (document.visibilityState === "visible") this.refresh();
    }, REFRESH_MS);
  }

  async refresh() {
    if (this.busy) return;
    this.busy = true;
    try {
      const [health, stats] = await Promise.allSettled([api.health(), api.monitorStats()]);
      this.render(health.status === "fulfilled" ? health.value : null,
                  stats.status === "fulfilled" ? stats.value : null);
      const failed = [health, stats].find((r) => r.status === "rejected");
      if (failed) this.onError?.(failed.reason);
    } finally {
      this.busy = false;
    }
  }

  render(health, stats) {
    const ok = health && !health.error ? health.status : null;
    this.badge.dataset.state = ok || "unknown";
    this.badge.textContent = ok ? `health ${ok}` : "health unknown";
    this.badge.title = ok === "degraded"
      ? `degraded: ${!health.service_running ? "task service not running" : ""}${!health.monitor_running ? " monitor not running" : ""}`.trim()
      : "Service health";
    const rows = [];
    const add = (name, value, testid) => rows.push(el("dt", { text: name }),
      el("dd", { text: value === undefined || value === null ? "–" : String(value), dataset: testid ? { testid } : undefined }));
    if (health && !health.error) {
      add("Health", health.status, "monitor-health");
      add("Waiting", health.queue_depth?.waiting, "monitor-waiting");
      add("In ComfyUI", health.queue_depth?.in_comfyui, "monitor-inflight");
      if (health.tasks) {
        add("Tasks", ["queued", "running", "completed", "failed", "cancelled"]
          .map((s) => `${health.tasks[s] ?? 0} ${s}`).join(" · "));
      }
      if (health.store?.webhooks) {
        const w = health.store.webhooks;
        add("Webhooks", `${w.delivered ?? 0} delivered · ${w.pending ?? 0} pending · ${w.dead ?? 0} dead`);
      }
      if (health.store && health.store.ok === false) add("Store", `error: ${health.store.error}`);
    } else if (health?.error) {
      add("Health", health.error.message);
    }
    if (stats) {
      add("Monitor", stats.running ? "running" : "not running", "monitor-running");
      if (stats.running) {
        add("Ticks", stats.ticks);
        add("Published", stats.published, "monitor-published");
        add("History reads", stats.history_reads);
        add("Never seen", stats.never_seen);
        add("Errors", `${stats.tick_errors ?? 0} tick · ${stats.listener_errors ?? 0} listener`);
      }
    }
    setChildren(this.summary, rows);
    const channels = Object.entries(stats?.channels || {});
    setChildren(this.channels, channels.length
      ? channels.map(([name, c]) => el("tr", { dataset: { testid: "channel", channel: name } },
        el("th", { scope: "row", text: name }),
        ...["sent", "dropped", "failures", "pending"].map((k) =>
          el(`td.num${k !== "sent" && c[k] ? ".warn" : ""}`, { text: String(c[k] ?? 0), dataset: { field: k } }))))
      : el("tr", {}, el("td.muted", { colspan: "5", text: "no channel enabled" })));
    this.updated.textContent = `updated ${formatTime(new Date().toISOString())}`;
  }
}
