// The two submit forms: a persona_posts batch, and a pasted or dropped
// API-format workflow (a JSON list of them queues a batch). The service's 400
// answers are shown next to the field they are about, in words.

import { api } from "./api.js";
import { el, setChildren, toast } from "./format.js";

const BATCH_FIELDS = ["name", "personas", "num_days", "start_day_offset", "llm_profile"];

function clearErrors(form) {
  for (const node of form.querySelectorAll(".field-error")) node.replaceChildren();
  for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
}

function showError(form, field, ...content) {
  const box = form.querySelector(`.field-error[data-for="${field}"]`) || form.querySelector('.field-error[data-for="_form"]');
  setChildren(box, ...content);
  const input = form.elements[field];
  if (input && input.setAttribute) {
    input.setAttribute("aria-invalid", "true");
    const describedBy = box.id || (box.id = `err-${form.id}-${field}`);
    input.setAttribute("aria-describedby", describedBy);
  }
  return input;
}

/** Which batch-form field a service message is about. */
export function fieldOf(message) {
  const param = /params\.(num_days|start_day_offset|llm_profile)\b/.exec(message);
  if (param) return param[1];
  if (/personas?\b|persona_file|user_id/.test(message)) return "personas";
  if (/^name\b/.test(message)) return "name";
  return "_form";
}

export function parsePersonas(text) {
  return text.split(/[\n,]+/).map((s) => s.trim()).filter(Boolean);
}

function wholeNumber(form, name, low, high) {
  const raw = form.elements[name].value.trim();
  const value = Number(raw);
  if (raw === "" || !Number.isInteger(value) || value < low || value > high) {
    throw Object.assign(new Error(`a whole number from ${low} to ${high}`), { field: name });
  }
  return value;
}

/** The server's persona files as buttons that add (or remove) a file in the personas field. */
export async function offerPersonas(form) {
  const box = form.querySelector(".persona-choices");
  let personas = [];
  try {
    personas = (await api.personas()).personas || [];
  } catch {
    return; // the field still takes names typed by hand
  }
  const area = form.elements.personas;
  const sync = () => {
    const chosen = new Set(parsePersonas(area.value));
    for (const button of box.querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(chosen.has(button.dataset.file)));
    }
  };
  setChildren(box, el("span.hint", { text: "On the server: " }), ...personas.map((p) =>
    el("button.chip", {
      type: "button", dataset: { file: p.file, testid: "persona-choice" },
      title: `${p.name} (user id ${p.user_id}, from ${p.folder})`,
      text: p.file,
      onclick: () => {
        const chosen = parsePersonas(area.value);
        const next = chosen.includes(p.file) ? chosen.filter((f) => f !== p.file) : [...chosen, p.file];
        area.value = next.join("\n");
        sync();
      },
    })));
  area.addEventListener("input", sync);
  sync();
}

export function setupBatchForm(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const button = form.querySelector("button[type=submit]");
    let body;
    try {
      const name = form.elements.name.value.trim();
      if (!name) throw Object.assign(new Error("give the batch a name"), { field: "name" });
      const personas = parsePersonas(form.elements.personas.value);
      if (!personas.length) throw Object.assign(new Error("name at least one persona file"), { field: "personas" });
      const profile = form.elements.llm_profile.value.trim();
      if (!profile) throw Object.assign(new Error("name an LLM profile (auto, local, openai…)"), { field: "llm_profile" });
      body = {
        name, template: "persona_posts", personas,
        params: { num_days: wholeNumber(form, "num_days", 1, 31),
                  start_day_offset: wholeNumber(form, "start_day_offset", -365, 365), llm_profile: profile },
      };
    } catch (error) {
      showError(form, error.field, error.message)?.focus();
      return;
    }
    button.disabled = true;
    try {
      const answer = await api.submitBatch(body);
      toast(`Batch "${body.name}" queued: ${answer.task_ids.length} task(s)`, "ok");
      form.dataset.lastBatch = answer.batch_id;
    } catch (error) {
      const field = fieldOf(error.message);
      const input = showError(form, BATCH_FIELDS.includes(field) ? field : "_form", error.message);
      input?.focus?.();
    } finally {
      button.disabled = false;
    }
  });
}

/** ComfyUI's node_errors as a list a person can read. */
export function renderNodeErrors(message, nodeErrors) {
  const entries = Object.entries(nodeErrors || {});
  return [
    el("p.error-summary", { text: message }),
    entries.length ? el("ul.node-errors-list", {}, entries.map(([nodeId, info]) =>
      el("li", { dataset: { testid: "node-error", nodeId } },
        el("strong", { text: `Node #${nodeId}${info?.class_type ? ` (${info.class_type})` : ""}` }),
        el("ul", {}, (info?.errors || []).map((e) => {
          const input = e?.extra_info?.input_name;
          const received = e?.extra_info?.received_value;
          return el("li", {},
            input ? el("code", { text: input }) : null, input ? ": " : null,
            e?.message || "invalid",
            e?.details ? el("span.muted", { text: ` (${e.details})` }) : null,
            received !== undefined && received !== null && typeof received !== "object"
              ? el("span.muted", { text: ` got ${JSON.stringify(received)}` }) : null);
        }))))) : null,
  ];
}

function unwrap(value) {
  // Accept a POST /prompt body or a POST /tasks body pasted as-is.
  if (value && typeof value === "object" && !Array.isArray(value)) {
    if (value.prompt && typeof value.prompt === "object") return value.prompt;
    if (value.workflow && typeof value.workflow === "object") return value.workflow;
  }
  return value;
}

export function setupWorkflowForm(form) {
  const area = form.elements.workflow;
  const loadFile = async (file) => {
    if (!file) return;
    area.value = await file.text();
    clearErrors(form);
    area.focus();
  };
  area.addEventListener("dragover", (event) => {
    event.preventDefault();
    area.classList.add("drop-target");
  });
  area.addEventListener("dragleave", () => area.classList.remove("drop-target"));
  area.addEventListener("drop", (event) => {
    event.preventDefault();
    area.classList.remove("drop-target");
    const file = event.dataTransfer?.files?.[0];
    if (file) loadFile(file);
    else area.value = event.dataTransfer?.getData("text") || area.value;
  });
  form.elements.file.addEventListener("change", () => loadFile(form.elements.file.files?.[0]));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const text = area.value.trim();
    if (!text) {
      showError(form, "workflow", "Paste an API-format workflow (File → Export (API) in ComfyUI).").focus();
      return;
    }
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      showError(form, "workflow", `This is not JSON: ${error.message}`).focus();
      return;
    }
    const list = Array.isArray(parsed);
    const workflows = (list ? parsed : [parsed]).map(unwrap);
    if (!workflows.length || workflows.some((w) => !w || typeof w !== "object" || Array.isArray(w))) {
      showError(form, "workflow", "Expected a workflow object (or a list of them).").focus();
      return;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      if (list) {
        const name = form.elements.batch_name.value.trim() || "pasted workflows";
        const answer = await api.submitBatch({ name, tasks: workflows.map((workflow) => ({ workflow })) });
        toast(`Batch "${name}" queued: ${answer.task_ids.length} task(s)`, "ok");
        form.dataset.lastBatch = answer.batch_id;
      } else {
        const answer = await api.submitTask({ workflow: workflows[0] });
        toast(`Task ${answer.task_id.slice(0, 8)} queued`, "ok");
        form.dataset.lastTask = answer.task_id;
      }
    } catch (error) {
      const details = error.body?.error?.node_errors;
      showError(form, "workflow", ...renderNodeErrors(error.message, details));
      area.focus();
    } finally {
      button.disabled = false;
    }
  });
}
