// The task table: one keyed row per task, updated in place (no flicker, focus
// kept), in the order the page's view says. At narrow widths CSS lays each
// row out as a card; the cells carry their column name in data-label.

import { el, formatTime, isFinal, percent, progressBar, setProgress, shortId } from "./format.js";

const STATUS_RANK = { queued: 0, running: 1, completed: 2, failed: 2, cancelled: 2 };

/**
 * Whether `incoming` (a list snapshot) should replace `known` (possibly newer,
 * from the event stream). A task only moves forward: a later attempt, a later
 * status, or more progress; so a snapshot taken before an event never undoes it.
 */
export function supersedes(known, incoming) {
  if (!known) return true;
  const attempts = (incoming.attempts || 0) - (known.attempts || 0);
  if (attempts !== 0) return attempts > 0;
  const rank = (STATUS_RANK[incoming.status] ?? 0) - (STATUS_RANK[known.status] ?? 0);
  if (rank !== 0) return rank > 0;
  if (incoming.status === "running") return (incoming.progress || 0) >= (known.progress || 0);
  return true;
}

export function statusLabel(task) {
  return task.status;
}

/** Where a task stands, in words (the timeline and the progress caption use it). */
export function stageText(task) {
  if (task.status === "queued") {
    if (task.queue_position !== null && task.queue_position !== undefined) return `#${task.queue_position} in ComfyUI's queue`;
    return task.attempts ? "sent to ComfyUI" : "waiting";
  }
  if (task.status === "running" && task.current_node) return `${task.current_node.type || "node"} #${task.current_node.id}`;
  return "";
}

function progressText(task) {
  const value = percent(task.progress);
  if (task.status === "running") {
    const node = task.current_node;
    return node ? `${value}% · ${node.type || "node"} #${node.id}` : `${value}%`;
  }
  if (task.status === "queued") return stageText(task);
  if (task.status === "completed") return "done";
  return task.status === "failed" && task.error?.node_type ? `in ${task.error.node_type}` : task.status;
}

export class TaskTable {
  constructor(tbody, { onOpen, onCancel, batchName }) {
    this.tbody = tbody;
    this.rows = new Map();
    this.onOpen = onOpen;
    this.onCancel = onCancel;
    this.batchName = batchName;
  }

  /** Show `ids` in this order, each drawn from `tasks`. */
  render(ids, tasks) {
    const keep = new Set(ids);
    for (const [id, row] of this.rows) {
      if (!keep.has(id)) {
        row.tr.remove();
        this.rows.delete(id);
      }
    }
    let previous = null;
    for (const id of ids) {
      const task = tasks.get(id);
      if (!task) continue;
      let row = this.rows.get(id);
      if (!row) {
        row = this.createRow(id);
        this.rows.set(id, row);
      }
      this.update(row, task);
      const expected = previous ? previous.nextSibling : this.tbody.firstChild;
      if (expected !== row.tr) this.tbody.insertBefore(row.tr, expected);
      previous = row.tr;
    }
  }

  /** Redraw the rows of these tasks only (live updates). */
  refresh(ids, tasks) {
    for (const id of ids) {
      const row = this.rows.get(id);
      const task = tasks.get(id);
      if (row && task) this.update(row, task);
    }
  }

  createRow(id) {
    const status = el("span.status");
    const bar = progressBar("Progress");
    const barText = el("span.progress-text");
    const taskId = el("code.task-id", { title: id, text: shortId(id) });
    const batch = el("span.batch-name");
    const user = el("span");
    const attempts = el("span");
    const created = el("time");
    const started = el("time");
    const finished = el("time");
    const open = el("button.ghost.small", { type: "button", dataset: { testid: "task-open" },
                                             "aria-label": `Open task ${shortId(id)}`, text: "Open",
                                             onclick: () => this.onOpen(id) });
    const cancel = el("button.danger.small", { type: "button", dataset: { testid: "task-cancel" },
                                                "aria-label": `Cancel task ${shortId(id)}`, text: "Cancel",
                                                onclick: () => this.onCancel(id, cancel) });
    const actions = el("td.row-actions", { dataset: { label: "" } }, open, cancel);
    const tr = el("tr", { dataset: { testid: "task-row", taskId: id } },
      el("td.cell-status", { dataset: { label: "Status" } }, status),
      el("td.col-progress", { dataset: { label: "Progress" } }, bar, barText),
      el("td.cell-task", { dataset: { label: "Task" } }, taskId, batch),
      el("td", { dataset: { label: "Persona / user" } }, user),
      el("td.num", { dataset: { label: "Attempts" } }, attempts),
      el("td", { dataset: { label: "Created" } }, created),
      el("td", { dataset: { label: "Started" } }, started),
      el("td", { dataset: { label: "Finished" } }, finished),
      actions);
    return { tr, status, bar, barText, batch, user, attempts, created, started, finished, cancel, actions, key: "" };
  }

  update(row, task) {
    const key = JSON.stringify([task.status, task.progress, task.current_node, task.queue_position, task.attempts,
                                task.user_id, task.started_at, task.finished_at, task.batch_id,
                                this.batchName(task.batch_id)]);
    if (key === row.key) return;
    row.key = key;
    const final = isFinal(task.status);
    row.tr.dataset.status = task.status;
    row.tr.classList.toggle("in-progress", !final);
    row.status.className = `status s-${task.status}`;
    row.status.textContent = statusLabel(task);
    const value = task.status === "completed" ? 100 : percent(task.progress);
    const text = progressText(task);
    setProgress(row.bar, value, text);
    row.bar.classList.toggle("indeterminate", task.status === "queued");
    row.barText.textContent = text;
    row.batch.textContent = task.batch_id ? this.batchName(task.batch_id) : "";
    row.user.textContent = task.user_id || "–";
    row.attempts.textContent = String(task.attempts ?? "");
    for (const [cell, iso] of [[row.created, task.created_at], [row.started, task.started_at],
                               [row.finished, task.finished_at]]) {
      cell.textContent = iso ? formatTime(iso) : "–";
      if (iso) cell.dateTime = iso;
      else cell.removeAttribute("datetime");
    }
    // Only a row that can still be cancelled has the button at all.
    if (final) row.cancel.remove();
    else if (!row.cancel.isConnected) row.actions.append(row.cancel);
  }
}
