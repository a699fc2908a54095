// Server-Sent Events over fetch(), so the stream can carry the bearer token
// (EventSource cannot send headers). One code path with or without a token.
//
// Reconnects by itself with exponential backoff (from the server's `retry:`,
// doubling up to 30 s, with jitter) and resumes with `Last-Event-ID`, so events
// sent while the page was away are replayed in order: no refetch, no polling.
// A stream silent for longer than three of the server's 15 s pings is taken
// for dead and reopened.

import { apiUrl, authHeaders, getToken, tokenNeeded } from "./api.js";

const MAX_BACKOFF_MS = 30000;
const SILENCE_MS = 45000;

export class EventStream {
  /**
   * @param {object} options
   * @param {string} options.path       path relative to /twitterchat/ (e.g. "api/v1/events")
   * @param {(kind: string, data: any, id: number|null) => void} options.onEvent
   * @param {(state: "live"|"reconnecting", detail: object) => void} [options.onState]
   * @param {(error: Error) => void} [options.onFatal]  a refusal that retrying cannot fix
   */
  constructor({ path, onEvent, onState = () => {}, onFatal = () => {} }) {
    this.path = path;
    this.onEvent = onEvent;
    this.onState = onState;
    this.onFatal = onFatal;
    this.lastEventId = null;
    this.retryMs = 2000;
    this.failures = 0;
    this.state = "reconnecting";
    this.stopped = true;
    this.held = false;
    this.immediate = false;
    this.controller = null;
    this.wake = null;
    this.stats = { connects: 0, events: 0, resumedWith: [], lastError: null };
    this._opened = null;
    this.opened = new Promise((resolve) => { this._opened = resolve; });
  }

  start() {
    if (!this.stopped) return this;
    this.stopped = false;
    this.loop();
    return this;
  }

  /** Close for good (a dialog that closes). */
  stop() {
    this.stopped = true;
    this.controller?.abort();
    this.wake?.();
  }

  /** Drop the connection and stay away until `connect()`. */
  disconnect() {
    this.held = true;
    this.controller?.abort();
    this.setState("reconnecting", { held: true });
  }

  /** Connect now (after `disconnect()`, or to skip a backoff wait). */
  connect() {
    this.held = false;
    this.failures = 0;
    this.wake?.();
  }

  /** Reopen the stream now; it resumes from the last event seen. */
  reconnect() {
    this.failures = 0;
    this.immediate = true;
    this.controller?.abort();
    this.wake?.();
  }

  setState(state, detail = {}) {
    if (this.state === state && !detail.force) return;
    this.state = state;
    this.onState(state, detail);
  }

  sleep(ms) {
    return new Promise((resolve) => {
      const timer = ms === Infinity ? null : setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(timer);
        self.wake = null;
        resolve();
      }
      this.wake = done;
    });
  }

  backoff() {
    const base = Math.min(MAX_BACKOFF_MS, this.retryMs * 2 ** Math.max(0, this.failures - 1));
    return Math.round(base * (0.75 + Math.random() * 0.5));
  }

  async loop() {
    while (!this.stopped) {
      if (this.held) {
        await this.sleep(Infinity);
        continue;
      }
      const controller = new AbortController();
      this.controller = controller;
      let fatal = false;
      let delay = 0;
      try {
        const sent = getToken();
        const headers = { Accept: "text/event-stream", ...authHeaders() };
        if (this.lastEventId !== null) headers["Last-Event-ID"] = String(this.lastEventId);
        const response = await fetch(apiUrl(this.path), { headers, signal: controller.signal, cache: "no-store" });
        if (response.status === 401 || response.status === 403) {
          response.body?.cancel().catch(() => {});
          if (!(await tokenNeeded(response.status, sent))) {
            this.setState("reconnecting", { needsToken: true, force: true });
            await this.sleep(Infinity); // until connect(): a token was entered
          }
          continue;
        }
        if (!response.ok || !response.body) {
          let message = `HTTP ${response.status}`;
          try {
            const body = await response.json();
            message = body?.error?.message || message;
            fatal = response.status === 503 && body?.error?.type === "token_required";
          } catch { /* not JSON */ }
          throw new Error(message);
        }
        this.stats.connects += 1;
        this.immediate = false;
        this.stats.resumedWith.push(this.lastEventId);
        this.setState("live");
        this._opened();
        await this.read(response.body, controller);
        this.stats.lastError = "the server closed the stream";
      } catch (error) {
        if (!controller.signal.aborted || this.stopped) this.stats.lastError = String(error?.message || error);
        if (fatal) {
          this.onFatal(error);
          this.setState("reconnecting", { fatal: true, force: true });
          this._opened();
          await this.sleep(Infinity);
          continue;
        }
      }
      if (this.stopped) break;
      if (this.held) continue;
      if (this.immediate) {
        this.immediate = false;
        continue;
      }
      this.failures += 1;
      delay = this.backoff();
      this.setState("reconnecting", { retryInMs: delay, force: true });
      this._opened(); // callers waiting for the first connection go on without it
      await this.sleep(delay);
    }
    this.controller = null;
  }

  async read(body, controller) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let id = null;
    let kind = "message";
    let data = [];
    let silence = setTimeout(() => controller.abort(), SILENCE_MS);
    const heard = () => {
      clearTimeout(silence);
      silence = setTimeout(() => controller.abort(), SILENCE_MS);
    };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        heard();
        buffer += decoder.decode(value, { stream: true });
        let start = 0;
        for (;;) {
          const match = /\r\n|\r|\n/.exec(buffer.slice(start));
          if (!match) break;
          // A lone "\r" at the very end may be the first half of "\r\n".
          if (match[0] === "\r" && start + match.index + 1 === buffer.length) break;
          const line = buffer.slice(start, start + match.index);
          start += match.index + match[0].length;
          if (line === "") {
            // As in EventSource: an id with no data still moves the resume point.
            if (id !== null && /^\d+$/.test(id)) this.lastEventId = Number(id);
            if (data.length) this.dispatch(kind, data.join("\n"));
            kind = "message";
            data = [];
            continue;
          }
          if (line.startsWith(":")) continue; // keep-alive comment
          const colon = line.indexOf(":");
          const field = colon === -1 ? line : line.slice(0, colon);
          let value = colon === -1 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "id") id = value;
          else if (field === "event") kind = value || "message";
          else if (field === "data") data.push(value);
          else if (field === "retry" && /^\d+$/.test(value)) this.retryMs = Math.max(500, Number(value));
        }
        buffer = buffer.slice(start);
        if (this.state !== "live") this.setState("live");
        this.failures = 0;
      }
    } finally {
      clearTimeout(silence);
      reader.cancel().catch(() => {});
    }
  }

  dispatch(kind, text) {
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch {
      return; // not ours
    }
    this.stats.events += 1;
    this.onEvent(kind, parsed, this.lastEventId);
  }
}
