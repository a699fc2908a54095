// The dashboard page: state, wiring and live updates.
//
// Lists come from the API once (and again only when the view changes, or when
// a stream came back without a point to resume from); everything after that
// arrives over one event stream that resumes with Last-Event-ID. A list
// snapshot never undoes what an event already said (see supersedes()).

import { ApiError, allowAskingAgain, api, counters, getToken, tokenNeeded, setTokenAsker } from "./api.js";
import { BatchList, batchSupersedes } from "./batches.js";
import { TaskDetail } from "./detail.js";
import { el, isFinal, parseTime, shortId, toast } from "./format.js";
import { MonitorPanel } from "./monitor.js";
import { EventStream } from "./sse.js";
import { offerPersonas, setupBatchForm, setupWorkflowForm } from "./submit.js";
import { TaskTable, supersedes } from "./tasks.js";

const PAGE_SIZE = 50;          // rows per page (the issue asks for at least 25)
const LIVE_CAP = PAGE_SIZE * 2; // new tasks shown live on the first page before "N new tasks" takes over
const BATCH_PAGE = 20;

const $ = (selector) => document.querySelector(selector);

const state = {
  tasks: new Map(),        // task id -> latest task JSON seen
  view: [],                // ids shown, in order (newest first)
  filter: { status: "", batch: "" },
  page: 0,
  cursors: [null],         // cursors[i]: the API cursor of page i
  nextCursor: null,
  newer: new Set(),        // new tasks not inserted (another page, or the live cap reached)
  batches: new Map(),
  batchOrder: [],
  batchesNext: null,
  taskLoad: 0,
  loaded: false,
  arrived: null,           // ids the stream brought while a list was loading
  needsRefetch: false,
};

function matches(task) {
  if (!task) return false;
  if (state.filter.status && task.status !== state.filter.status) return false;
  if (state.filter.batch && task.batch_id !== state.filter.batch) return false;
  return true;
}

function batchName(batchId) {
  if (!batchId) return "";
  const batch = state.batches.get(batchId);
  return batch?.name || `batch ${shortId(batchId)}`;
}

// -- banner and connection indicator -------------------------------------------
function showBanner(message, action) {
  const banner = $("#banner");
  banner.replaceChildren(el("span", { text: message }));
  if (action) banner.append(" ", el("button.ghost.small", { type: "button", text: action.label, onclick: action.run }));
  banner.hidden = false;
}

function hideBanner() {
  $("#banner").hidden = true;
}

function setConnection(stateName, detail = {}) {
  const node = $("#connection");
  node.dataset.state = stateName;
  let label = "Live";
  if (stateName !== "live") {
    if (detail.held) label = "Paused";
    else if (detail.needsToken) label = "Token needed";
    else if (detail.fatal) label = "Unavailable";
    else if (detail.retryInMs) label = `Reconnecting in ${Math.ceil(detail.retryInMs / 1000)}s…`;
    else label = "Connecting…";
  }
  node.querySelector(".label").textContent = label;
  node.title = stateName === "live" ? "Live updates from the task service" : label;
}

// -- token prompt -----------------------------------------------------------------
function askToken(reason) {
  const dialog = $("#token-dialog");
  const form = $("#token-form");
  const input = $("#token-input");
  $("#token-reason").textContent = reason === "refused"
    ? "The server refused that token. Enter the configured token."
    : "This server needs a token for its task API.";
  input.value = "";
  return new Promise((resolve) => {
    let answer = null;
    const submit = (event) => {
      event.preventDefault();
      if (!input.value.trim()) {
        input.focus();
        return;
      }
      answer = input.value.trim();
      dialog.close();
    };
    const cancel = () => dialog.close();
    const cancelButton = form.querySelector("[data-action=cancel]");
    form.addEventListener("submit", submit);
    cancelButton.addEventListener("click", cancel);
    dialog.addEventListener("close", () => {
      form.removeEventListener("submit", submit);
      cancelButton.removeEventListener("click", cancel);
      $("#token-button").hidden = !!answer;
      resolve(answer);
    }, { once: true });
    dialog.dataset.asked = String(Number(dialog.dataset.asked || 0) + 1); // how often the page asked
    dialog.showModal();
    input.focus();
  });
}

async function enterToken() {
  allowAskingAgain();
  if (await tokenNeeded(401, getToken())) {
    hideBanner();
    stream.connect();
    loadAll();
    monitor.refresh();
  }
}

function reportLoadError(error) {
  if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
    $("#token-button").hidden = false;
    showBanner("This server needs a token for its task API.", { label: "Enter token", run: enterToken });
  } else if (error instanceof ApiError && error.type === "token_required") {
    showBanner(error.message);
  } else if (error instanceof ApiError && error.status === 503) {
    showBanner(`The task service is not available: ${error.message}. The page reconnects by itself.`);
  } else {
    showBanner(`Could not load: ${error.message || error}`, { label: "Retry", run: () => loadAll() });
  }
}

// -- tasks ------------------------------------------------------------------------
const table = new TaskTable($("#task-rows"), {
  onOpen: (id) => detail.open(id),
  onCancel: cancelTask,
  batchName,
});

let renderTimer = null;
function scheduleRender() {
  if (renderTimer) return;
  renderTimer = setTimeout(() => {
    renderTimer = null;
    render();
  }, 40);
}

function render() {
  table.render(state.view, state.tasks);
  $("#tasks-empty").hidden = !state.loaded || state.view.length > 0;
  const newer = $("#tasks-newer");
  newer.hidden = state.newer.size === 0;
  newer.textContent = `${state.newer.size} new task${state.newer.size === 1 ? "" : "s"}: show the newest`;
  $("#page-first").disabled = state.page === 0;
  $("#page-next").disabled = !state.nextCursor;
  $("#page-label").textContent = `page ${state.page + 1}`;
  batchList.render(state.batchOrder, state.batches);
  $("#batches-empty").hidden = state.batchOrder.length > 0;
  $("#batches-more").hidden = !state.batchesNext;
  renderBatchOptions();
}

function renderBatchOptions() {
  const select = $("#task-filters").elements.batch;
  const wanted = ["", ...state.batchOrder];
  if (state.filter.batch && !wanted.includes(state.filter.batch)) wanted.push(state.filter.batch);
  const current = [...select.options].map((o) => o.value);
  if (current.join("\n") === wanted.join("\n")) {
    for (const option of select.options) {
      if (option.value) option.textContent = `${batchName(option.value)} (${shortId(option.value)})`;
    }
  } else {
    select.replaceChildren(...wanted.map((id) => el("option", { value: id,
      text: id ? `${batchName(id)} (${shortId(id)})` : "all" })));
  }
  select.value = state.filter.batch;
}

async function loadTasks() {
  const load = ++state.taskLoad;
  const arrived = new Set(); // tasks the stream brought while the list was on its way
  state.arrived = arrived;
  let data;
  try {
    data = await api.listTasks({ ...state.filter, cursor: state.cursors[state.page], limit: PAGE_SIZE });
  } finally {
    if (state.arrived === arrived) state.arrived = null;
  }
  if (load !== state.taskLoad) return;
  for (const task of data.tasks) {
    if (supersedes(state.tasks.get(task.task_id), task)) state.tasks.set(task.task_id, task);
  }
  state.view = data.tasks.map((t) => t.task_id).filter((id) => matches(state.tasks.get(id)));
  state.nextCursor = data.next_cursor;
  state.newer.clear();
  const shown = new Set(state.view);
  for (const id of arrived) if (!shown.has(id) && state.tasks.has(id)) place(id);
  for (const id of state.tasks.keys()) if (!state.view.includes(id)) state.tasks.delete(id);
  state.loaded = true;
  scheduleRender();
}

async function loadBatches(more = false) {
  const data = await api.listBatches({ limit: BATCH_PAGE, cursor: more ? state.batchesNext : null });
  for (const batch of data.batches) {
    if (batchSupersedes(state.batches.get(batch.batch_id), batch)) state.batches.set(batch.batch_id, batch);
  }
  const ids = data.batches.map((b) => b.batch_id);
  if (more) state.batchOrder = [...state.batchOrder, ...ids.filter((id) => !state.batchOrder.includes(id))];
  else {
    // keep batches that arrived live before this answer
    const live = state.batchOrder.filter((id) => !ids.includes(id) && state.batches.has(id));
    state.batchOrder = [...live, ...ids];
  }
  state.batchesNext = data.next_cursor;
  scheduleRender();
}

async function loadAll() {
  try {
    await Promise.all([loadBatches(), loadTasks()]);
    hideBanner();
  } catch (error) {
    state.needsRefetch = true;
    reportLoadError(error);
  }
}

function onTask(task) {
  const id = task.task_id;
  state.tasks.set(id, task);
  state.arrived?.add(id);
  const index = state.view.indexOf(id);
  if (index !== -1) {
    if (!matches(task)) {
      state.view.splice(index, 1);
      state.tasks.delete(id);
    }
  } else {
    place(id);
  }
  scheduleRender();
}

/**
 * Put a task that is not on screen where it belongs, newest first, if it
 * belongs on this page. Only tasks on screen are kept in memory, so a
 * 10,000-task batch does not fill the tab.
 */
function place(id) {
  const task = state.tasks.get(id);
  if (!matches(task)) {
    state.tasks.delete(id);
    return;
  }
  const created = parseTime(task.created_at) ?? Number.POSITIVE_INFINITY;
  const top = state.view.length ? parseTime(state.tasks.get(state.view[0])?.created_at) ?? 0 : -Infinity;
  if (state.page !== 0 || state.view.length >= LIVE_CAP) {
    if (created >= top) state.newer.add(id); // "N new tasks: show the newest"
    state.tasks.delete(id);
    return;
  }
  // A task created at the same moment as others (a batch) arrives after them: it goes first.
  let at = state.view.findIndex((other) => (parseTime(state.tasks.get(other)?.created_at) ?? 0) <= created);
  if (at === -1) {
    if (state.nextCursor) {
      state.tasks.delete(id); // it belongs on a later page
      return;
    }
    at = state.view.length;
  }
  state.view.splice(at, 0, id);
}

function onBatch(batch) {
  state.batches.set(batch.batch_id, batch);
  if (!state.batchOrder.includes(batch.batch_id)) state.batchOrder.unshift(batch.batch_id);
  table.refresh(state.view.filter((id) => state.tasks.get(id)?.batch_id === batch.batch_id), state.tasks);
  scheduleRender();
}

async function cancelTask(id, button) {
  if (button) button.disabled = true;
  try {
    const answer = await api.cancelTask(id);
    const outcome = answer.message || (answer.cancelled ? "cancelled" : "not cancelled");
    toast(`Task ${shortId(id)}: ${outcome}`, answer.cancelled ? "ok" : "info");
    if (stream.state !== "live") onTask(await api.getTask(id));
  } catch (error) {
    toast(`Could not cancel task ${shortId(id)}: ${error.message}`, "error");
  } finally {
    if (button) button.disabled = false;
  }
}

async function cancelBatch(id, button) {
  button.disabled = true;
  try {
    const answer = await api.cancelBatch(id);
    toast(`Batch ${batchName(id)}: ${answer.cancelled} task(s) cancelled`, "ok");
  } catch (error) {
    toast(`Could not cancel the batch: ${error.message}`, "error");
  } finally {
    button.disabled = false;
  }
}

// -- filters, pages ------------------------------------------------------------------
function readHash() {
  const params = new URLSearchParams(window.location.hash.slice(1));
  const status = params.get("status") || "";
  state.filter = {
    status: ["queued", "running", "completed", "failed", "cancelled"].includes(status) ? status : "",
    batch: params.get("batch") || "",
  };
  const form = $("#task-filters");
  form.elements.status.value = state.filter.status;
  renderBatchOptions();
}

function writeHash() {
  const params = new URLSearchParams();
  if (state.filter.status) params.set("status", state.filter.status);
  if (state.filter.batch) params.set("batch", state.filter.batch);
  const hash = params.toString();
  history.replaceState(null, "", hash ? `#${hash}` : window.location.pathname + window.location.search);
}

function changeView(reset = true) {
  if (reset) {
    state.page = 0;
    state.cursors = [null];
  }
  state.view = [];
  state.loaded = false;
  scheduleRender();
  loadTasks().catch(reportLoadError);
}

$("#task-filters").addEventListener("change", (event) => {
  const form = event.currentTarget;
  state.filter = { status: form.elements.status.value, batch: form.elements.batch.value };
  writeHash();
  changeView();
});
$("#task-filters").addEventListener("submit", (event) => event.preventDefault());
$("#page-next").addEventListener("click", () => {
  if (!state.nextCursor) return;
  state.cursors[state.page + 1] = state.nextCursor;
  state.page += 1;
  changeView(false);
});
$("#page-first").addEventListener("click", () => changeView());
$("#tasks-newer").addEventListener("click", () => changeView());
$("#batches-more").addEventListener("click", () => loadBatches(true).catch(reportLoadError));
window.addEventListener("hashchange", () => {
  readHash();
  changeView();
});

// -- wiring ----------------------------------------------------------------------
const batchList = new BatchList($("#batches"), {
  onCancel: cancelBatch,
  onShowTasks: (id) => {
    state.filter = { status: "", batch: id };
    $("#task-filters").elements.status.value = "";
    writeHash();
    changeView();
    $("#tasks-heading").focus();
  },
});

const detail = new TaskDetail($("#task-detail"), {
  known: (id) => state.tasks.get(id),
  batchName,
  onCancel: cancelTask,
});

const monitor = new MonitorPanel({
  summary: $("#monitor-summary"), channels: $("#channel-rows"), updated: $("#monitor-updated"),
  badge: $("#health-badge"), refreshButton: $("#monitor-refresh"),
  onError: (error) => {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) $("#token-button").hidden = false;
  },
});

const stream = new EventStream({
  path: "api/v1/events",
  onEvent: (kind, data) => {
    if (kind === "task" && data?.task_id) onTask(data);
    else if (kind === "batch" && data?.batch_id) onBatch(data);
    monitor.nudge();
  },
  onState: (name, info = {}) => {
    setConnection(name, info);
    if (name !== "live") return;
    // A stream that came back without a point to resume from (no event seen
    // before it dropped) may have missed something: read the lists once.
    const resumedFrom = stream.stats.resumedWith[stream.stats.resumedWith.length - 1];
    if (state.needsRefetch || (stream.stats.connects > 1 && resumedFrom === null)) {
      state.needsRefetch = false;
      loadAll();
    }
  },
  onFatal: (error) => showBanner(error.message),
});

setTokenAsker(askToken);
$("#token-button").addEventListener("click", enterToken);
setupBatchForm($("#batch-form"));
offerPersonas($("#batch-form"));
setupWorkflowForm($("#workflow-form"));
setInterval(() => batchList.tickAll(), 1000);

// For tests and users' own automation (kept stable).
window.twitterchatDashboard = {
  state,
  stream,
  counters,
  reload: loadAll,
  openTask: (id) => detail.open(id),
  disconnect: () => stream.disconnect(),
  connect: () => stream.connect(),
  reconnect: () => stream.reconnect(),
  isFinal,
};

async function start() {
  readHash();
  stream.start();
  // The unfiltered stream starts "now": open it before reading the lists so
  // nothing falls between the two.
  await Promise.race([stream.opened, new Promise((resolve) => setTimeout(resolve, 3000))]);
  await loadAll();
  clearTimeout(renderTimer);
  renderTimer = null;
  render(); // "ready" means the first lists are on screen
  monitor.start();
  document.documentElement.dataset.ready = "true";
}

start();
