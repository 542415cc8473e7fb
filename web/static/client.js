// Roomgate browser client: one WebSocket to /ws/{class}/{room} that
// survives restarts, drains and network blips.
//
//   import { RoomSocket } from "/client.js";
//   const s = new RoomSocket({ class: "chat", room: "lobby", query: { name: "ada" }, resume: "chat" });
//   s.addEventListener("message", (e) => console.log(e.detail.json ?? e.detail.data));
//   s.send(JSON.stringify({ type: "say", text: "hi" }));
//
// It reconnects with exponential backoff and jitter, buffers sends while it
// is not connected (and sends them, in order, once it is), and for chat
// rooms resumes with ?since= the last seq it delivered, so a reconnect
// neither loses nor repeats a message. A token (a string, or an async
// function asked before every connect) goes as ?token=; when it expires
// (4401, or 401 at the handshake) the function is asked for a fresh one
// and the socket reconnects at once. Types: /client.d.ts.

// Close codes after which reconnecting would only repeat the refusal.
const FINAL = new Set([1000, 1002, 1003, 1007, 1009, 4403, 4404]);

// The server's error codes for a handshake it refuses for good (400, 403,
// 404); any other answer to the probe (#refusal) is no reason to stop.
const REFUSALS = new Set(["bad_name", "bad_query", "origin_refused", "forbidden", "unknown_class"]);

export const CloseCodes = Object.freeze({
  NORMAL: 1000, GOING_AWAY: 1001, INVALID_UTF8: 1007, POLICY: 1008, TOO_BIG: 1009,
  ROOM_FAILED: 1011, DRAINING: 1012, TOKEN_EXPIRED: 4401, FORBIDDEN: 4403, ROOM_DELETED: 4404,
});

export class RoomSocket extends EventTarget {
  #o;
  #ws = null;
  #buffer = [];
  #attempt = 0;
  #timer = 0;
  #closed = false;
  #lastSeq = null;
  #generation = 0; // bumped by reconnect(): a connect begun before it gives up
  #renewed = false; // a handshake refused with 401 was retried with a fresh token; the next 401 is final

  constructor(options) {
    super();
    if (!options || !options.class || !options.room) throw new TypeError("RoomSocket: class and room are required");
    this.#o = {
      host: location.host,
      secure: location.protocol === "https:",
      minDelay: 250,
      maxDelay: 10000,
      maxBuffered: 1000,
      query: {},
      ...options,
    };
    this.#connect();
  }

  /** The seq of the last chat message delivered, when resuming chat. */
  get lastSeq() { return this.#lastSeq; }

  /** WebSocket.CONNECTING, OPEN, CLOSING or CLOSED, as the current socket says. */
  get readyState() { return this.#ws ? this.#ws.readyState : WebSocket.CONNECTING; }

  /** How many sends wait for the connection. */
  get buffered() { return this.#buffer.length; }

  /** Sends now if connected, else once reconnected. Returns false when the buffer is full. */
  send(data) {
    if (this.#ws && this.#ws.readyState === WebSocket.OPEN) {
      this.#ws.send(data);
      return true;
    }
    if (this.#buffer.length >= this.#o.maxBuffered) return false;
    this.#buffer.push(data);
    return true;
  }

  /** Closes for good: no reconnect. */
  close(code = 1000, reason = "") {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#ws?.close(code, reason);
  }

  /** Drops the current socket and connects again at once (e.g. with a fresh token). */
  reconnect() {
    clearTimeout(this.#timer);
    this.#attempt = 0;
    this.#renewed = false;
    this.#generation++;
    const old = this.#ws;
    this.#ws = null;
    old?.close(1000, "reconnect");
    this.#connect();
  }

  // #tokenSource is the function that hands out tokens: the token option
  // when it is one, or getToken (the older name). null for a fixed token.
  #tokenSource() {
    if (typeof this.#o.token === "function") return this.#o.token;
    return typeof this.#o.getToken === "function" ? this.#o.getToken : null;
  }

  async #url() {
    const q = new URLSearchParams(this.#o.query);
    const source = this.#tokenSource();
    const token = source ? await source() : this.#o.token;
    if (token) q.set("token", token);
    if (this.#o.resume === "chat" && this.#lastSeq !== null) q.set("since", String(this.#lastSeq));
    const qs = q.toString();
    return `${this.#o.secure ? "wss" : "ws"}://${this.#o.host}/ws/${encodeURIComponent(this.#o.class)}/${encodeURIComponent(this.#o.room)}${qs ? "?" + qs : ""}`;
  }

  async #connect() {
    if (this.#closed) return;
    const generation = this.#generation;
    let url;
    try {
      url = await this.#url();
    } catch (error) {
      if (this.#closed || generation !== this.#generation) return;
      // The app could not hand a token (its endpoint is down, the user is
      // signed out): ask again after the usual backoff, not in a loop.
      this.dispatchEvent(new CustomEvent("tokenerror", { detail: { error } }));
      if (this.#closed || generation !== this.#generation) return; // a listener gave up
      this.#schedule(0, this.#backoff());
      return;
    }
    // closed, or reconnect() started another connect while the token came
    if (this.#closed || generation !== this.#generation) return;
    const ws = new WebSocket(url);
    this.#ws = ws;
    ws.binaryType = "arraybuffer";
    let opened = 0; // when it opened, performance.now(); 0 while it has not
    ws.onopen = () => {
      if (ws !== this.#ws) return;
      opened = performance.now();
      this.#attempt = 0;
      this.#renewed = false;
      // What waited goes first: a listener that sends on "open" comes after it.
      const pending = this.#buffer;
      this.#buffer = [];
      for (const data of pending) ws.send(data);
      this.dispatchEvent(new CustomEvent("open"));
    };
    ws.onmessage = (e) => {
      if (ws !== this.#ws) return;
      let json;
      if (typeof e.data === "string") {
        try { json = JSON.parse(e.data); } catch { json = undefined; }
      }
      if (this.#o.resume === "chat" && json && !this.#track(json)) return;
      this.dispatchEvent(new CustomEvent("message", { detail: { data: e.data, json } }));
    };
    ws.onclose = (e) => {
      if (ws !== this.#ws) return;
      this.#ws = null;
      this.dispatchEvent(new CustomEvent("close", { detail: { code: e.code, reason: e.reason, wasClean: e.wasClean } }));
      if (this.#closed || generation !== this.#generation) return; // a listener closed or reconnected
      if (e.code === 4401) {
        // A token that lived its life is routine: a fresh one goes at once.
        // One that dies within a second of opening goes after the backoff
        // instead, so a token source that hands out tokens about to expire
        // does not spin.
        this.#expired(e.code, e.reason, opened && performance.now() - opened >= 1000);
        return;
      }
      if (opened || e.code !== 1006) {
        this.#retry(e);
        return;
      }
      this.#refusal(url).then((refused) => {
        if (this.#closed || generation !== this.#generation) return;
        if (!refused) {
          this.#retry(e);
        } else if (refused.status === 401 && this.#tokenSource() && !this.#renewed) {
          // Expired or revoked between the token source and the server:
          // one fresh token, at once. If that is refused too, the source
          // hands out tokens this server does not take; say so and stop.
          this.#renewed = true;
          this.#expired(401, refused.code, true);
        } else {
          this.#closed = true;
          this.dispatchEvent(new CustomEvent("refused", { detail: refused }));
        }
      });
    };
  }

  // #refusal asks the server over plain HTTP why a handshake failed: a
  // browser reports a refused upgrade only as 1006, without its status, and
  // retrying a refusal forever would hide it. The same URL without the
  // upgrade goes through the same admission. It resolves to the refusal
  // ({status, code, message}) when trying again would be refused again, or
  // to null: the server would admit the socket (it answers bad_handshake,
  // as the request is no upgrade), is draining (503), cannot be asked
  // (down, slow, or another origin without CORS), or is not Roomgate (a
  // proxy's own error page).
  async #refusal(url) {
    try {
      const res = await fetch(url.replace(/^ws/, "http"), { cache: "no-store", signal: AbortSignal.timeout(5000) });
      if (![400, 401, 403, 404].includes(res.status)) return null;
      const { error } = await res.json();
      if (typeof error?.code !== "string") return null;
      if (res.status !== 401 && !REFUSALS.has(error.code)) return null;
      return { status: res.status, code: error.code, message: String(error.message ?? "") };
    } catch {
      return null;
    }
  }

  // #track remembers the newest chat seq delivered and reports whether m
  // is new. With ?since= the server repeats nothing; a message that is not
  // newer is dropped all the same.
  #track(m) {
    if (m.type === "message" && typeof m.seq === "number") {
      if (this.#lastSeq !== null && m.seq <= this.#lastSeq) return false;
      this.#lastSeq = m.seq;
    } else if (m.type === "welcome" && Array.isArray(m.history)) {
      if (this.#lastSeq !== null) m.history = m.history.filter((h) => h.seq > this.#lastSeq);
      if (m.history.length) this.#lastSeq = Math.max(this.#lastSeq ?? 0, m.history[m.history.length - 1].seq);
    }
    return true;
  }

  // #expired handles a token the server no longer takes (4401 after the
  // open, 401 at the handshake): with a token source it connects again,
  // at once when now is set, asking the source for a fresh token; with a
  // fixed token, or none, it stops, as trying again would be refused again.
  #expired(code, reason, now) {
    const generation = this.#generation;
    this.dispatchEvent(new CustomEvent("tokenexpired", { detail: { code, reason } }));
    if (this.#closed || generation !== this.#generation) return; // a listener closed or reconnected
    if (!this.#tokenSource()) {
      this.#closed = true;
      return;
    }
    this.#schedule(code, now ? 0 : this.#backoff());
  }

  #retry(e) {
    if (this.#closed) return;
    if (FINAL.has(e.code)) {
      this.#closed = true;
      return;
    }
    this.#schedule(e.code, this.#backoff());
  }

  // #backoff is the next delay: exponential, with jitter (each delay is
  // drawn between half and all of the step) so clients do not return in step.
  #backoff() {
    const ceiling = Math.min(this.#o.maxDelay, this.#o.minDelay * 2 ** this.#attempt);
    return Math.round(ceiling / 2 + Math.random() * ceiling / 2);
  }

  #schedule(code, delay) {
    const generation = this.#generation;
    this.#attempt++;
    this.dispatchEvent(new CustomEvent("reconnecting", { detail: { attempt: this.#attempt, delay, code } }));
    if (this.#closed || generation !== this.#generation) return; // a listener closed or reconnected
    this.#timer = setTimeout(() => this.#connect(), delay);
  }
}
