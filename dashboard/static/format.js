// Small DOM and formatting helpers. Everything from the server goes into the
// page as text (never as HTML): post texts and error messages are untrusted.

export const FINAL = new Set(["completed", "failed", "cancelled"]);

export function isFinal(status) {
  return FINAL.has(status);
}

/** el("div.a.b", {attrs}, children...) -> element; strings become text nodes. */
export function el(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const node = document.createElement(tag || "div");
  if (classes.length) node.className = classes.join(" ");
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function setChildren(node, ...children) {
  node.replaceChildren();
  append(node, children);
}

export function shortId(id) {
  return id ? String(id).slice(0, 8) : "";
}

export function parseTime(iso) {
  if (!iso) return null;
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? null : ms;
}

/** A timestamp as local time; the date is shown only when it is not today. */
export function formatTime(iso) {
  const ms = parseTime(iso);
  if (ms === null) return "";
  const date = new Date(ms);
  const today = new Date();
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
  if (date.toDateString() === today.toDateString()) return time;
  return `${date.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
}

export function formatDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "–";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  return `${h}h ${String(m % 60).padStart(2, "0")}m`;
}

export function percent(fraction) {
  const value = Number(fraction);
  if (!Number.isFinite(value)) return 0;
  return Math.max(0, Math.min(100, Math.round(value * 100)));
}

/** A progress bar with the ARIA hooks the tests and screen readers use. */
export function progressBar(label) {
  const fill = el("span.fill");
  const bar = el("div.progress", { role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
                                   "aria-valuenow": "0", "aria-label": label }, fill);
  return bar;
}

export function setProgress(bar, value, text) {
  bar.setAttribute("aria-valuenow", String(value));
  if (text) bar.setAttribute("aria-valuetext", text);
  bar.firstChild.style.width = `${value}%`;
}

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const item = el(`div.toast.${kind}`, { text: message });
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}
