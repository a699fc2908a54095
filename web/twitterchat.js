// Listens for the pack's monitor events so the frontend does not report them as
// unknown messages, and shows a toast when a prompt fails.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const EVENT_NAME = "twitterchat.monitor";

app.registerExtension({
  name: "comfyui-twitterchat.monitor",
  setup() {
    api.addEventListener(EVENT_NAME, ({ detail }) => {
      if (!detail || detail.status !== "failed") return;
      const error = detail.error_info || {};
      const where = error.node_type ? ` in ${error.node_type} (#${error.node_id})` : "";
      const text = `Prompt ${String(detail.id).slice(0, 8)} failed${where}: ${error.message || "unknown error"}`;
      if (app.extensionManager?.toast?.add) {
        app.extensionManager.toast.add({ severity: "error", summary: "TwitterChat monitor", detail: text, life: 8000 });
      } else {
        console.error(`[TwitterChat] ${text}`);
      }
    });
  },
});
