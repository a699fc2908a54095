// Adds ways to open the TwitterChat dashboard (/twitterchat/dashboard) from
// ComfyUI's own UI: a command (in the command palette and the top menu under
// Extensions > TwitterChat) and, on frontends that have them, a sidebar tab.
// The dashboard page itself lives in the pack's dashboard/ folder, not here:
// every .js under web/ is loaded into ComfyUI's UI.
import { app } from "../../scripts/app.js";

const COMMAND_ID = "TwitterChat.OpenDashboard";
const SIDEBAR_ID = "twitterchat-dashboard";

function dashboardUrl() {
  // Relative to where the ComfyUI page is served (it may sit behind a sub-path).
  return new URL("twitterchat/dashboard", new URL(".", window.location.href)).toString();
}

function openDashboard() {
  window.open(dashboardUrl(), "_blank", "noopener");
}

function renderSidebar(container) {
  container.replaceChildren();
  const box = document.createElement("div");
  box.style.cssText = "padding:12px;display:flex;flex-direction:column;gap:10px;font-size:13px;line-height:1.45";
  const title = document.createElement("h3");
  title.textContent = "TwitterChat";
  title.style.margin = "0";
  const text = document.createElement("p");
  text.style.margin = "0";
  text.textContent = "Tasks, batches, posts and failures of the task service, live.";
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "Open the dashboard";
  button.dataset.testid = "twitterchat-open-dashboard";
  button.className = "p-button p-component";
  button.addEventListener("click", openDashboard);
  const link = document.createElement("a");
  link.href = dashboardUrl();
  link.target = "_blank";
  link.rel = "noopener";
  link.textContent = link.href;
  link.style.wordBreak = "break-all";
  box.append(title, text, button, link);
  container.append(box);
}

app.registerExtension({
  name: "comfyui-twitterchat.dashboard",
  commands: [
    {
      id: COMMAND_ID,
      label: "Open TwitterChat dashboard",
      icon: "pi pi-chart-bar",
      function: openDashboard,
    },
  ],
  menuCommands: [{ path: ["Extensions", "TwitterChat"], commands: [COMMAND_ID] }],
  setup() {
    const manager = app.extensionManager;
    if (typeof manager?.registerSidebarTab !== "function") return; // older frontends: the command is enough
    manager.registerSidebarTab({
      id: SIDEBAR_ID,
      icon: "pi pi-chart-bar",
      title: "TwitterChat",
      tooltip: "TwitterChat dashboard",
      type: "custom",
      render: renderSidebar,
    });
  },
});
