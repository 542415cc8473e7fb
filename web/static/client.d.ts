// Types for /client.js, the Roomgate browser client.

export declare const CloseCodes: Readonly<{
  NORMAL: 1000; GOING_AWAY: 1001; INVALID_UTF8: 1007; POLICY: 1008; TOO_BIG: 1009;
  ROOM_FAILED: 1011; DRAINING: 1012; TOKEN_EXPIRED: 4401; FORBIDDEN: 4403; ROOM_DELETED: 4404;
}>;

/** Hands out a token for the next connect: the app's own token endpoint, say. */
export type TokenSource = () => string | null | undefined | Promise<string | null | undefined>;

export interface RoomSocketOptions {
  /** Room class, e.g. "chat". */
  class: string;
  /** Room name: 1–128 of [A-Za-z0-9._~-]. */
  room: string;
  /** host:port of a Roomgate node; default location.host. */
  host?: string;
  /** wss instead of ws; default: the page is https. */
  secure?: boolean;
  /**
   * A JWT, sent as ?token= (browsers cannot set headers on a WebSocket).
   * Either a fixed string, or a function called before every connect and
   * reconnect, whose (awaited) result is the token for that attempt: after
   * 4401 (token expired) it is called again and the socket reconnects at
   * once; after a handshake refused with 401 likewise, once, and a second
   * 401 in a row is reported as "refused". A function that throws or
   * rejects fires "tokenerror" and is asked again after the usual backoff.
   * With a fixed string, 4401 stops the socket and 401 is "refused".
   */
  token?: string | TokenSource;
  /** The older name of a token function; `token` wins when both are given. */
  getToken?: TokenSource;
  /** More query parameters, e.g. { name: "ada" } in dev mode. */
  query?: Record<string, string>;
  /** "chat": resume with ?since= the last seq delivered, so nothing is lost or repeated. */
  resume?: "chat";
  /** First reconnect delay in ms (doubling, with jitter); default 250. */
  minDelay?: number;
  /** Longest reconnect delay in ms; default 10000. */
  maxDelay?: number;
  /** Sends kept while disconnected; default 1000. */
  maxBuffered?: number;
}

export interface RoomMessageDetail {
  /** The frame: a string for text, an ArrayBuffer for binary. */
  data: string | ArrayBuffer;
  /** The frame parsed as JSON, when it is JSON text. */
  json?: any;
}

export interface RoomCloseDetail {
  code: number;
  reason: string;
  wasClean: boolean;
}

export interface RoomReconnectingDetail {
  attempt: number;
  /** ms until the next attempt: 0 for a fresh token after 4401 or 401 */
  delay: number;
  /** the close code that caused it; 401 for a handshake refused with 401; 0 when the token source failed */
  code: number;
}

export interface RoomRefusedDetail {
  /** The HTTP status the handshake was refused with: 400, 401, 403 or 404. */
  status: number;
  /** The error code, e.g. "unknown_class", "bad_name", "bad_query", "forbidden", or a 401's code. */
  code: string;
  message: string;
}

export interface RoomTokenExpiredDetail {
  /** 4401: the open socket's token expired; 401: the handshake's token was refused. */
  code: number;
  /** The close reason, or the 401's error code. */
  reason: string;
}

export interface RoomSocketEventMap {
  open: CustomEvent<void>;
  message: CustomEvent<RoomMessageDetail>;
  close: CustomEvent<RoomCloseDetail>;
  reconnecting: CustomEvent<RoomReconnectingDetail>;
  /** The token expired (4401) or was refused (401); a token function is asked for a fresh one. */
  tokenexpired: CustomEvent<RoomTokenExpiredDetail>;
  /** The token function threw or rejected; it is asked again after the backoff. */
  tokenerror: CustomEvent<{ error: unknown }>;
  /** The server refuses the handshake itself (bad name, no valid token, forbidden, unknown class): no more attempts. */
  refused: CustomEvent<RoomRefusedDetail>;
}

/**
 * One WebSocket to /ws/{class}/{room} that reconnects with backoff and
 * jitter, buffers sends while disconnected, and (resume: "chat") resumes
 * with ?since=. It stops for good after close(), 1000, 1002 (protocol
 * error), 1003, 1007 (invalid UTF-8), 1009 (too big), 4403 (kicked or
 * forbidden) and 4404 (room deleted), and after a handshake the server
 * refuses (400, 403, 404: the "refused" event). After 4401, or a
 * handshake refused with 401, it reconnects at once with a fresh token
 * when `token` is a function (a second 401 in a row is "refused"), and
 * stops otherwise.
 */
export declare class RoomSocket extends EventTarget {
  constructor(options: RoomSocketOptions);
  readonly readyState: number;
  readonly buffered: number;
  readonly lastSeq: number | null;
  send(data: string | ArrayBufferLike | Blob | ArrayBufferView): boolean;
  close(code?: number, reason?: string): void;
  reconnect(): void;
  addEventListener<K extends keyof RoomSocketEventMap>(type: K, listener: (ev: RoomSocketEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
}
