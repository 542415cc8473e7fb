// Types for /client.js, the Roomgate browser client.

export declare const CloseCodes: Readonly<{
  NORMAL: 1000; GOING_AWAY: 1001; INVALID_UTF8: 1007; POLICY: 1008; TOO_BIG: 1009;
  ROOM_FAILED: 1011; DRAINING: 1012; TOKEN_EXPIRED: 4401; FORBIDDEN: 4403; ROOM_DELETED: 4404;
}>;

export interface RoomSocketOptions {
  /** Room class, e.g. "chat". */
  class: string;
  /** Room name: 1–128 of [A-Za-z0-9._~-]. */
  room: string;
  /** host:port of a Roomgate node; default location.host. */
  host?: string;
  /** wss instead of ws; default: the page is https. */
  secure?: boolean;
  /** A JWT, sent as ?token=. */
  token?: string;
  /** Called before every connect; use it to refresh a token (4401). */
  getToken?: () => string | Promise<string>;
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
  /** ms until the next attempt */
  delay: number;
  /** the close code that caused it */
  code: number;
}

export interface RoomRefusedDetail {
  /** The HTTP status the handshake was refused with: 400, 403 or 404. */
  status: number;
  /** The error code: "unknown_class", "bad_name" or "bad_query". */
  code: string;
  message: string;
}

export interface RoomSocketEventMap {
  open: CustomEvent<void>;
  message: CustomEvent<RoomMessageDetail>;
  close: CustomEvent<RoomCloseDetail>;
  reconnecting: CustomEvent<RoomReconnectingDetail>;
  tokenexpired: CustomEvent<{ code: number; reason: string }>;
  /** The server refuses the handshake itself (bad name, forbidden, unknown class): no more attempts. */
  refused: CustomEvent<RoomRefusedDetail>;
}

/**
 * One WebSocket to /ws/{class}/{room} that reconnects with backoff and
 * jitter, buffers sends while disconnected, and (resume: "chat") resumes
 * with ?since=. It stops for good after close(), 1000, 1002 (protocol
 * error), 1003, 1007 (invalid UTF-8), 1009 (too big), 4403 (kicked or
 * forbidden) and 4404 (room deleted), and after a handshake the server
 * refuses (400, 403, 404: the "refused" event); after 4401, or a handshake
 * refused with 401, it retries only with getToken.
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
