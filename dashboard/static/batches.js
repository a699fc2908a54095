// Batch cards: name, counts per status, a progress bar, elapsed time, an
// estimate of the time left, and a cancel button while the batch is active.
// Elapsed and estimate tick locally every second (no requests).

import { el, formatDuration, parseTime, percent, progressBar, setProgress, shortId } from "./format.js";

const STATUSES = ["queued", "running", "completed", "failed", "cancelled"];

export function doneCount(batch) {
  const c = batch.counts || {};
  return (c.completed || 0) + (c.failed || 0) + (c.cancelled || 0);
}

/** Like tasks, a batch only moves forward: a snapshot never undoes an event. */
export function batchSupersedes(known, incoming) {
  if (!known) return true;
  if (known.status === "finished" && incoming.status !== "finished") return false;
  return doneCount(incoming) >= doneCount(known);
}

/** Elapsed and estimated time left, in ms (estimate null when unknown). */
export function batchTiming(batch, now = Date.now()) {
  const created = parseTime(batch.created_at);
  const finished = parseTime(batch.finished_at);
  if (created === null) return { elapsed: null, left: null };
  const elapsed = (finished ?? now) - created;
  if (batch.status === "finished") return { elapsed, left: 0 };
  const done = doneCount(batch);
  const total = batch.total || 0;
  if (!done || !total) return { elapsed, left: null };
  return { elapsed, left: (elapsed / done) * (total - done) };
}

export class BatchList {
  constructor(list, { onCancel, onShowTasks }) {
    this.list = list;
    this.items = new Map();
    this.onCancel = onCancel;
    this.onShowTasks = onShowTasks;
  }

  render(order, batches) {
    const keep = new Set(order);
    for (const [id, item] of this.items) {
      if (!keep.has(id)) {
        item.li.remove();
        this.items.delete(id);
      }
    }
    let previous = null;
    for (const id of order) {
      const batch = batches.get(id);
      if (!batch) continue;
      let item = this.items.get(id);
      if (!item) {
        item = this.create(id);
        this.items.set(id, item);
      }
      this.update(item, batch);
      const expected = previous ? previous.nextSibling : this.list.firstChild;
      if (expected !== item.li) this.list.insertBefore(item.li, expected);
      previous = item.li;
    }
  }

  create(id) {
    const name = el("h3.batch-title");
    const status = el("span.status");
    const counts = el("ul.counts", { "aria-label": "Tasks per status" });
    const bar = progressBar("Batch progress");
    const timing = el("p.timing.muted");
    const show = el("button.ghost.small", { type: "button", text: "Show tasks", dataset: { testid: "batch-show" },
                                             onclick: () => this.onShowTasks(id) });
    const cancel = el("button.danger.small", { type: "button", text: "Cancel batch", dataset: { testid: "batch-cancel" },
                                                onclick: () => this.onCancel(id, cancel) });
    const actions = el("div.batch-actions", {}, show, cancel);
    const li = el("li.batch", { dataset: { testid: "batch", batchId: id } },
      el("div.batch-head", {}, name, status), bar, counts, el("div.batch-foot", {}, timing, actions));
    return { li, name, status, counts, bar, timing, cancel, actions, batch: null };
  }

  update(item, batch) {
    item.batch = batch;
    item.li.dataset.status = batch.status;
    item.name.textContent = batch.name || shortId(batch.batch_id);
    item.name.title = batch.batch_id;
    item.status.className = `status s-${batch.status === "finished" ? "completed" : "running"}`;
    item.status.textContent = batch.status;
    const value = percent(batch.progress);
    setProgress(item.bar, value, `${doneCount(batch)} of ${batch.total} done`);
    item.counts.replaceChildren(...STATUSES.map((s) => el(`li.count.s-${s}`, { dataset: { status: s } },
      el("span.count-n", { text: String(batch.counts?.[s] ?? 0) }), ` ${s}`)));
    if (batch.status === "finished") item.cancel.remove();
    else if (!item.cancel.isConnected) item.actions.append(item.cancel);
    this.tick(item);
  }

  /** Refresh the elapsed/left texts of active batches. */
  tickAll() {
    for (const item of this.items.values()) {
      if (item.batch?.status === "active") this.tick(item);
    }
  }

  tick(item) {
    const { elapsed, left } = batchTiming(item.batch);
    const parts = [`${doneCount(item.batch)}/${item.batch.total} done`, `elapsed ${formatDuration(elapsed)}`];
    if (item.batch.status === "active") parts.push(left === null ? "time left unknown" : `about ${formatDuration(left)} left`);
    item.timing.textContent = parts.join(" · ");
  }
}
