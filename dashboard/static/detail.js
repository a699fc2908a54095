// The task detail dialog: the task's timeline (its own event stream, replayed
// from the task's first event and then live while the dialog is open), its
// error (message, node, the innermost frames) and its outputs (posts, images
// as thumbnails through ComfyUI's /view).

import { api, comfyUrl } from "./api.js";
import { el, formatTime, isFinal, percent, setChildren, shortId } from "./format.js";
import { EventStream } from "./sse.js";
import { stageText, statusLabel } from "./tasks.js";

function timelineKey(task) {
  return JSON.stringify([task.status, task.attempts, task.current_node?.id ?? null,
                         task.status === "queued" ? task.queue_position : null]);
}

function timelineTime(task) {
  if (isFinal(task.status)) return task.finished_at;
  if (task.status === "running") return task.started_at;
  return task.created_at;
}

export class TaskDetail {
  constructor(dialog, { known, batchName, onCancel }) {
    this.dialog = dialog;
    this.body = dialog.querySelector("#detail-body");
    this.title = dialog.querySelector("#detail-title");
    this.known = known;
    this.batchName = batchName;
    this.onCancel = onCancel;
    this.stream = null;
    this.taskId = null;
    this.timeline = [];
    this.task = null;
    dialog.querySelector("[data-action=close]").addEventListener("click", () => dialog.close());
    dialog.addEventListener("close", () => this.closed());
    // A click on the backdrop (outside the dialog's box) closes it too.
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog) dialog.close();
    });
  }

  async open(taskId, opener) {
    this.closed();
    this.opener = opener || document.activeElement;
    this.taskId = taskId;
    this.timeline = [];
    this.task = this.known(taskId) || null;
    this.drawn = null;
    this.title.textContent = `Task ${shortId(taskId)}`;
    this.render();
    if (!this.dialog.open) this.dialog.showModal();
    this.dialog.querySelector("[data-action=close]").focus();
    this.stream = new EventStream({
      path: `api/v1/events?task_id=${encodeURIComponent(taskId)}`,
      onEvent: (kind, data) => {
        if (kind === "task" && data.task_id === this.taskId) this.add(data);
      },
      onState: (state) => {
        this.dialog.dataset.stream = state;
      },
    }).start();
    try {
      const task = await api.getTask(taskId);
      if (this.taskId === taskId && (!this.task || !this.timeline.length)) {
        this.task = task;
        this.render();
      }
    } catch (error) {
      if (this.taskId === taskId && !this.task) {
        setChildren(this.body, el("p.error", { text: `Could not load the task: ${error.message}` }));
      }
    }
  }

  closed() {
    this.stream?.stop();
    this.stream = null;
    this.taskId = null;
    if (this.opener && document.contains(this.opener)) this.opener.focus();
    this.opener = null;
  }

  add(task) {
    const key = timelineKey(task);
    const last = this.timeline[this.timeline.length - 1];
    if (last && last.key === key) last.task = task;
    else this.timeline.push({ key, task });
    this.task = task;
    this.scheduleRender();
  }

  scheduleRender() {
    if (this.pending) return;
    this.pending = setTimeout(() => {
      this.pending = null;
      if (this.taskId) this.render();
    }, 50);
  }

  render() {
    const task = this.task;
    if (!task) {
      setChildren(this.body, el("p.muted", { text: "Loading…" }));
      this.drawn = null;
      return;
    }
    // Redraw only on a change: a text being selected or read stays put.
    const drawn = JSON.stringify([task, this.timeline.map((entry) => entry.task)]);
    if (drawn === this.drawn) return;
    this.drawn = drawn;
    this.dialog.dataset.status = task.status;
    const final = isFinal(task.status);
    const cancel = final ? null : el("button.danger.small", {
      type: "button", text: "Cancel task", dataset: { testid: "detail-cancel" },
      onclick: (event) => this.onCancel(task.task_id, event.currentTarget),
    });
    setChildren(this.body,
      el("dl.facts", {},
        fact("Status", [el(`span.status.s-${task.status}`, { text: statusLabel(task), dataset: { testid: "detail-status" } }),
          stageText(task) && task.status === "queued" ? el("span.muted", { text: ` ${stageText(task)}` }) : null]),
        fact("Progress", `${task.status === "completed" ? 100 : percent(task.progress)}%`
          + (task.current_node ? ` · ${task.current_node.type} #${task.current_node.id}` : "")),
        fact("Task id", el("code", { text: task.task_id })),
        task.batch_id ? fact("Batch", `${this.batchName(task.batch_id)} (${shortId(task.batch_id)})`) : null,
        task.user_id ? fact("Persona / user", task.user_id) : null,
        fact("Attempts", String(task.attempts)),
        fact("Priority", String(task.priority ?? 0)),
        fact("Created", formatTime(task.created_at) || "–"),
        fact("Started", formatTime(task.started_at) || "–"),
        fact("Finished", formatTime(task.finished_at) || "–"),
        task.worker ? fact("Worker", task.worker) : null,
        task.metadata ? fact("Metadata", el("code.wrap", { text: JSON.stringify(task.metadata) })) : null),
      cancel ? el("div.detail-actions", {}, cancel) : null,
      task.error ? renderError(task.error) : null,
      renderOutputs(task),
      el("section.timeline", { "aria-label": "Timeline" },
        el("h3", { text: "Timeline" }),
        this.timeline.length
          ? el("ol.timeline-list", { dataset: { testid: "timeline" } }, this.timeline.map(({ task: t }) =>
            el("li", { dataset: { status: t.status } },
              el("span.when", { text: formatTime(timelineTime(t)) || "" }),
              el(`span.status.s-${t.status}`, { text: statusLabel(t) }),
              stageText(t) ? el("span", { text: ` ${stageText(t)}` }) : null,
              t.status === "running" ? el("span.muted", { text: ` ${percent(t.progress)}%` }) : null,
              t.attempts > 1 ? el("span.muted", { text: ` attempt ${t.attempts}` }) : null)))
          : el("p.muted", { text: "Loading the task's events…" })));
  }
}

function fact(name, value) {
  return [el("dt", { text: name }), el("dd", {}, value)];
}

function renderError(error) {
  const where = error.node_type ? `${error.node_type}${error.node_id ? ` #${error.node_id}` : ""}` : null;
  const frames = Array.isArray(error.traceback) ? error.traceback : [];
  return el("section.error-box", { dataset: { testid: "task-error" }, "aria-label": "Error" },
    el("h3", { text: "Error" }),
    el("p.error-message", { dataset: { testid: "error-message" } },
      error.type ? el("strong", { text: `${error.type}: ` }) : null, error.message || "no message"),
    where ? el("p", {}, "In node ", el("strong", { dataset: { testid: "error-node" }, text: where })) : null,
    frames.length ? el("div.frames", { dataset: { testid: "error-frames" } },
      el("p.muted", { text: frames.length === 1 ? "Innermost frame" : `Innermost ${frames.length} frames` }),
      frames.map((frame) => el("pre.frame", { text: String(frame) }))) : null);
}

function renderOutputs(task) {
  const outputs = Array.isArray(task.outputs) ? task.outputs : [];
  const posts = outputs.filter((o) => o.kind === "post");
  const files = outputs.filter((o) => o.kind !== "post" && o.url);
  if (!posts.length && !files.length) {
    return isFinal(task.status) ? el("p.muted", { text: "No outputs." }) : null;
  }
  return el("section.outputs", { "aria-label": "Outputs" },
    el("h3", { text: "Outputs" }),
    posts.length ? el("ul.posts", {}, posts.map((post) =>
      el("li.post", { dataset: { testid: "post" } },
        el("div.post-head", {}, el("strong", { text: post.date || "" }),
          post.user_id ? el("span.muted", { text: ` @${post.user_id}` }) : null),
        el("p.post-text", { dataset: { testid: "post-text" }, text: post.text || "" }),
        post.scene_hint ? el("p.scene", {}, el("span.muted", { text: "Scene: " }),
          el("span", { dataset: { testid: "post-scene" }, text: post.scene_hint })) : null))) : null,
    files.length ? el("ul.thumbs", {}, files.map((file) => {
      const url = comfyUrl(file.url);
      const isImage = /\.(png|jpe?g|webp|gif)$/i.test(file.filename || "");
      return el("li", {}, el("a", { href: url, target: "_blank", rel: "noopener" },
        isImage ? el("img", { src: url, alt: file.filename || "output image", loading: "lazy",
                              dataset: { testid: "output-image" } }) : null,
        el("span.small", { text: file.filename || "file" })));
    })) : null);
}
