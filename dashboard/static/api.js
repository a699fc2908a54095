// JSON over HTTP to the pack's API, with the bearer token when one is needed.
//
// Paths are relative to the page (/twitterchat/dashboard), so the page also
// works behind a proxy that mounts ComfyUI under a sub-path.
//
// Token: a 401 means "this server wants a token": the page asks once (one
// prompt shared by every request waiting for it) and keeps the answer in
// sessionStorage, for this tab only. A 403 means the token was refused: it is
// dropped and asked for again. A 503 "token_required" means the server has no
// token configured at all, so asking would not help: the caller shows why.

const TOKEN_KEY = "twitterchat.dashboard.token";
const BASE = new URL("./", window.location.href); // .../twitterchat/

export class ApiError extends Error {
  constructor(status, body, fallback) {
    const error = body && typeof body === "object" ? body.error : null;
    super(error?.message || fallback || `HTTP ${status}`);
    this.status = status;
    this.type = error?.type || null;
    this.body = body;
  }
}

let asker = null;        // async (reason) => token | null, installed by the page
let pending = null;      // the one prompt on screen
let declined = false;    // the user closed the prompt: do not ask again until asked to

export function setTokenAsker(fn) {
  asker = fn;
}

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    /* storage disabled: the token lives as long as the prompt's answer */
  }
  declined = false;
}

export function authHeaders() {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export function apiUrl(path) {
  return new URL(path, BASE).toString();
}

/** ComfyUI's root URL (for /view links the API gives as "/view?...") */
export function comfyUrl(path) {
  return new URL(String(path).replace(/^\//, ""), new URL("../", BASE)).toString();
}

/**
 * Called after a 401/403 answered a request sent with `sentToken`.
 * Resolves true when there is a (new) token to retry with.
 */
export async function tokenNeeded(status, sentToken) {
  const current = getToken();
  if (current && current !== sentToken) return true; // someone else already got a new one
  if (status === 403 && current) setToken(null);
  if (!asker || declined) return false;
  if (!pending) {
    const reason = status === 403 ? "refused" : "needed";
    pending = asker(reason).then((token) => {
      if (token) setToken(token);
      else declined = true;
      return !!token;
    }).finally(() => {
      pending = null;
    });
  }
  return pending;
}

/** Ask again after the user closed the prompt (the "Enter token" button). */
export function allowAskingAgain() {
  declined = false;
}

/** Requests made (for tests and for checking that an idle page stays quiet); `lists`: task and batch lists. */
export const counters = { requests: 0, lists: 0 };

export async function request(path, { method = "GET", body, signal, accept = [] } = {}) {
  for (let attempt = 0; attempt < 4; attempt += 1) {
    counters.requests += 1;
    const sent = getToken();
    const headers = { Accept: "application/json", ...authHeaders() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(apiUrl(path), {
      method, headers, signal, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    const text = await response.text();
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = text;
    }
    if ((response.status === 401 || response.status === 403) && await tokenNeeded(response.status, sent)) {
      continue;
    }
    if (response.ok || accept.includes(response.status)) return data;
    throw new ApiError(response.status, data, response.statusText);
  }
  throw new ApiError(401, null, "the token was not accepted");
}

export const api = {
  listTasks: ({ status, batch, cursor, limit }) => {
    counters.lists += 1;
    const query = new URLSearchParams({ limit: String(limit) });
    if (status) query.set("status", status);
    if (batch) query.set("batch_id", batch);
    if (cursor) query.set("cursor", cursor);
    return request(`api/v1/tasks?${query}`);
  },
  getTask: (id) => request(`api/v1/tasks/${encodeURIComponent(id)}`),
  cancelTask: (id) => request(`api/v1/tasks/${encodeURIComponent(id)}/cancel`, { method: "POST", body: {} }),
  listBatches: ({ cursor, limit }) => {
    counters.lists += 1;
    const query = new URLSearchParams({ limit: String(limit) });
    if (cursor) query.set("cursor", cursor);
    return request(`api/v1/batches?${query}`);
  },
  getBatch: (id) => request(`api/v1/batches/${encodeURIComponent(id)}`),
  cancelBatch: (id) => request(`api/v1/batches/${encodeURIComponent(id)}/cancel`, { method: "POST", body: {} }),
  submitTask: (body) => request("api/v1/tasks", { method: "POST", body }),
  submitBatch: (body) => request("api/v1/batches", { method: "POST", body }),
  personas: () => request("api/v1/personas"),
  // health answers 503 with a body when degraded: that is data, not an error
  health: () => request("health", { accept: [503] }),
  monitorStats: () => request("monitor/stats"),
};
