// Listens for the pack's monitor and task-service events so the frontend does not
// report them as unknown messages, and shows a toast when a prompt fails.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const DEFAULT_EVENT_NAME = "twitterchat.monitor";

function showFailure(detail) {
  if (!detail || detail.status !== "failed") return;
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
  async setup() {
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
