// Listens for the pack's monitor and task-service events so the frontend does not
// report them as unknown messages, and (a setting, off by default) shows a toast when a
// prompt fails. Adds the pack's own touches to its nodes: a card upload button, seeds
// fixed by default, and the posts a generator wrote shown on the node.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const DEFAULT_EVENT_NAME = "twitterchat.monitor";

function notify(severity, text) {
  if (app.extensionManager?.toast?.add) {
    app.extensionManager.toast.add({ severity, summary: "TwitterChat", detail: text, life: 8000 });
  } else {
    console.warn(`[TwitterChat] ${text}`);
  }
}

// Failure toasts are a setting, off by default: ComfyUI's own dialog already reports the
// failures of prompts this browser queued, and the monitor's events reach every browser.
const TOAST_SETTING = "TwitterChat.Monitor.FailureToasts";
const TOAST_OFF = "off";
const TOAST_ELSEWHERE = "prompts queued elsewhere";
const TOAST_ALL = "all prompts";
const queuedHere = new Set(); // prompt ids ComfyUI told this browser about (lifecycle events go to the submitter only)

function setting(id) {
  return app.extensionManager?.setting?.get?.(id) ?? app.ui?.settings?.getSettingValue?.(id);
}

function showFailure(detail) {
  if (!detail || detail.status !== "failed") return;
  const mode = setting(TOAST_SETTING) ?? TOAST_OFF;
  if (mode === TOAST_OFF || (mode === TOAST_ELSEWHERE && queuedHere.has(detail.id))) return;
  const error = detail.error_info || {};
  const where = error.node_type ? ` in ${error.node_type} (#${error.node_id})` : "";
  const text = `Prompt ${String(detail.id).slice(0, 8)} failed${where}: ${error.message || "unknown error"}`;
  if (app.extensionManager?.toast?.add) {
    app.extensionManager.toast.add({ severity: "error", summary: "TwitterChat monitor", detail: text, life: 8000 });
  } else {
    console.error(`[TwitterChat] ${text}`);
  }
}

async function configuredEventName() {
  // The event name can be changed in config.json / KY_MONITOR_PROMPT_SERVER_EVENT_NAME.
  try {
    const response = await api.fetchApi("/twitterchat/monitor/stats");
    const stats = await response.json();
    return stats.event_name || DEFAULT_EVENT_NAME;
  } catch {
    return DEFAULT_EVENT_NAME;
  }
}

app.registerExtension({
  name: "comfyui-twitterchat.monitor",
  settings: [{
    id: TOAST_SETTING,
    category: ["TwitterChat", "Monitor", "Failure toasts"],
    name: "Show a toast when a prompt fails",
    tooltip: "From the pack's monitor, which sees every prompt on the server. ComfyUI already shows its own " +
             "error for the prompts this browser queued.",
    type: "combo",
    options: [TOAST_OFF, TOAST_ELSEWHERE, TOAST_ALL],
    defaultValue: TOAST_OFF,
  }],
  async setup() {
    for (const event of ["execution_start", "execution_error", "execution_cached"]) {
      api.addEventListener(event, ({ detail }) => {
        if (!detail?.prompt_id) return;
        queuedHere.add(detail.prompt_id);
        if (queuedHere.size > 1000) queuedHere.delete(queuedHere.values().next().value); // oldest first
      });
    }
    const names = new Set([DEFAULT_EVENT_NAME, await configuredEventName()]);
    for (const name of names) {
      api.addEventListener(name, ({ detail }) => showFailure(detail));
    }
    // The task service's updates go to every browser too; the dashboard shows them. Listening
    // keeps the frontend from logging each one as an unknown message type.
    for (const name of ["twitterchat.task", "twitterchat.batch"]) {
      api.addEventListener(name, () => {});
    }
  },
});

// -- the pack's nodes on the canvas ---------------------------------------------------
const PACK_NODES = new Set(["PersonaLoader", "ContextGatherer", "CalendarManager", "BatchTweetGenerator",
                            "TweetGenerator", "OutputManager"]);
const CARD_SUBFOLDER = "personas"; // under ComfyUI's input folder, listed by PersonaLoader

// One hidden file chooser for every PersonaLoader; the button says which node asked.
let cardChooser = null;
let cardTarget = null;

function chooser() {
  if (cardChooser) return cardChooser;
  cardChooser = Object.assign(document.createElement("input"), {
    type: "file", accept: ".json,.png,application/json,image/png",
  });
  cardChooser.style.display = "none";
  cardChooser.dataset.testid = "twitterchat-card-upload";
  cardChooser.addEventListener("change", async () => {
    const file = cardChooser.files?.[0];
    const node = cardTarget;
    cardChooser.value = "";
    if (file && node) await uploadCard(node, file);
  });
  document.body.append(cardChooser);
  return cardChooser;
}

async function uploadCard(node, file) {
  const combo = node.widgets?.find((w) => w.name === "persona_file");
  if (!combo) return;
  const body = new FormData();
  body.append("image", file, file.name); // ComfyUI's upload route takes any file under this field
  body.append("type", "input");
  body.append("subfolder", CARD_SUBFOLDER);
  let answer;
  try {
    const response = await api.fetchApi("/upload/image", { method: "POST", body });
    if (response.status !== 200) throw new Error(`${response.status} ${response.statusText}`);
    answer = await response.json();
  } catch (error) {
    notify("error", `Could not upload ${file.name}: ${error.message}`);
    return;
  }
  const value = answer.subfolder ? `${answer.subfolder}/${answer.name}` : answer.name;
  const values = combo.options.values;
  if (Array.isArray(values) && !values.includes(value)) values.push(value);
  combo.value = value;
  combo.callback?.(value);
  const mode = node.widgets.find((w) => w.name === "input_mode");
  if (mode && mode.value !== "file") { mode.value = "file"; mode.callback?.("file"); }
  node.setDirtyCanvas?.(true, true);
}

function addUploadButton(node) {
  if (!node.widgets?.some((w) => w.name === "persona_file")) return;
  const button = node.addWidget("button", "upload_card", null, () => {
    cardTarget = node;
    chooser().click();
  }, { serialize: false });
  button.label = "upload a card (.json / .png)";
  button.serialize = false; // never in the saved widget values: they map to inputs by position
}

function seedFixedByDefault(node) {
  // ComfyUI randomizes a 'seed' after every queue unless told otherwise: for this pack that meant
  // new posts (and a new <date>_2 folder) on every queue. A new node starts 'fixed'; a loaded
  // workflow keeps what it saved (configure runs after this).
  const seed = node.widgets?.find((w) => w.name === "seed");
  const control = seed?.linkedWidgets?.[0] ?? node.widgets?.find((w) => w.name === "control_after_generate");
  if (control) control.value = "fixed";
}

// The posts a generator wrote, on the node itself (the stock frontend draws no ui.text).
function postsPanel(node) {
  if (node.twitterchatPosts) return node.twitterchatPosts;
  const panel = document.createElement("div");
  panel.dataset.testid = "twitterchat-posts";
  Object.assign(panel.style, { maxHeight: "240px", overflowY: "auto", fontSize: "12px", lineHeight: "1.35",
                               padding: "4px 6px", boxSizing: "border-box", whiteSpace: "pre-wrap",
                               color: "var(--input-text, #ddd)", background: "var(--comfy-input-bg, #222)",
                               borderRadius: "4px" });
  const widget = node.addDOMWidget("posts", "twitterchat_posts", panel, { serialize: false, hideOnZoom: false,
                                                                           getValue: () => "", setValue: () => {} });
  widget.serialize = false; // never in the saved widget values
  widget.computeSize = () => [node.size[0], 200];
  node.twitterchatPosts = panel;
  return panel;
}

function showPosts(node, posts) {
  const panel = postsPanel(node);
  panel.replaceChildren(...posts.map((post) => {
    const item = document.createElement("div");
    item.dataset.testid = "twitterchat-post";
    item.dataset.date = post.date;
    item.dataset.ok = String(!post.error);
    item.style.margin = "0 0 6px";
    const day = document.createElement("b");
    day.textContent = `${post.date}  `;
    const text = document.createElement("span");
    text.dataset.testid = "twitterchat-post-text";
    text.textContent = post.error ? `no post: ${post.error}` : post.text; // text only, never HTML
    if (post.error) text.style.color = "var(--error-text, #f88)";
    item.append(day, text);
    if (post.warning) item.title = post.warning;
    return item;
  }));
  node.setSize?.([node.size[0], node.computeSize()[1]]);
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "comfyui-twitterchat.nodes",
  nodeCreated(node) {
    const type = node.comfyClass ?? node.type;
    if (!PACK_NODES.has(type)) return;
    seedFixedByDefault(node);
    if (type === "PersonaLoader") addUploadButton(node);
    if (type === "BatchTweetGenerator" || type === "TweetGenerator") {
      const onExecuted = node.onExecuted;
      node.onExecuted = function (output) {
        onExecuted?.apply(this, arguments);
        if (Array.isArray(output?.twitterchat_posts)) showPosts(this, output.twitterchat_posts);
      };
    }
  },
});
