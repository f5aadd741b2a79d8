// One fetch helper for the query API; its answers' types come from ./contract (generated).

import type {
  Compare,
  EventsPage,
  Experiments,
  Files,
  LogsPage,
  RunDetail,
  RunsPage,
  Table,
  Value,
  Vector,
} from "./contract";

// The shapes are generated from the contract (schemas/api.py) into contract.ts.
export type * from "./contract";
export { NOTE_TAG, STATUSES, TERMINAL_STATUSES } from "./contract";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export type Query = Record<string, string | number | boolean | null | undefined | (string | number)[]>;

export function url(path: string, query: Query = {}): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === null || value === undefined || value === "") continue;
    for (const v of Array.isArray(value) ? value : [value]) params.append(key, String(v));
  }
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

/** GET an API path and parse its JSON (with ``reviver``, if given); errors carry the API's message. */
export async function get<T>(path: string, query: Query = {}, signal?: AbortSignal, reviver?: Reviver): Promise<T> {
  const resp = await fetch(url(path, query), { signal, headers: { Accept: "application/json" } });
  if (!resp.ok) {
    let text = `${resp.status} ${resp.statusText}`;
    try {
      const body = await resp.json();
      text = body?.error?.message ?? text;
    } catch {
      /* not JSON */
    }
    throw new ApiError(resp.status, text);
  }
  return (reviver ? JSON.parse(await resp.text(), reviver) : await resp.json()) as T;
}

type Reviver = (this: unknown, key: string, value: unknown, context?: { source?: string }) => unknown;

/** Seqs of the events the query API writes start at 2**62 (SERVER_SEQ_BASE), past what a
 * JS number holds exactly: such a ``seq``/``next_after_seq`` is kept as its exact decimal
 * string (compare them with BigInt). Uses JSON.parse's source text (Chromium 114+). */
export const exactSeqs: Reviver = (key, value, context) =>
  (key === "seq" || key === "next_after_seq") && typeof value === "number" && !Number.isSafeInteger(value) && context?.source
    ? context.source
    : value;

export const enc = encodeURIComponent;

export const api = {
  experiments: (signal?: AbortSignal) => get<Experiments>("/api/experiments", {}, signal),
  runs: (experiment: string, query: Query, signal?: AbortSignal) =>
    get<RunsPage>(`/api/experiments/${enc(experiment)}/runs`, query, signal),
  run: (id: string, signal?: AbortSignal) => get<RunDetail>(`/api/runs/${enc(id)}`, {}, signal),
  vector: (id: string, name: string, query: Query, signal?: AbortSignal) =>
    get<Vector>(`/api/runs/${enc(id)}/metrics/${enc(name)}`, query, signal),
  table: (id: string, name: string, signal?: AbortSignal) =>
    get<Table>(`/api/runs/${enc(id)}/tables/${enc(name)}`, {}, signal),
  files: (id: string, signal?: AbortSignal) => get<Files>(`/api/runs/${enc(id)}/files`, {}, signal),
  /** Seqs past 2**53 come as exact strings (see exactSeqs). */
  events: (id: string, afterSeq: number | string, signal?: AbortSignal) =>
    get<EventsPage>(
      `/api/runs/${enc(id)}/events`,
      { after_seq: afterSeq, limit: 200 },
      signal,
      exactSeqs,
    ),
  logs: (id: string, afterSeq: number, afterIdx: number | null, signal?: AbortSignal) =>
    get<LogsPage>(
      `/api/runs/${enc(id)}/logs`,
      { after_seq: afterSeq, after_idx: afterIdx, limit: 5000 },
      signal,
    ),
  compare: (runs: string[], query: Query, signal?: AbortSignal) =>
    get<Compare>("/api/compare", { run: runs, ...query }, signal),
};

export function fileUrl(runId: string, path: string): string {
  return `/api/runs/${enc(runId)}/files/${path.split("/").map(enc).join("/")}`;
}

/** A value as a plottable number: NaN and infinities become null (a gap), bools 0/1, strings null. */
export function toNumber(v: Value): number | null {
  if (typeof v === "number") return Number.isFinite(v) ? v : null;
  if (typeof v === "boolean") return v ? 1 : 0;
  return null;
}

/** A value as a sortable number (non-finite ones included), or null. */
export function toFloat(v: Value): number | null {
  if (v !== null && typeof v === "object") return v.f === "NaN" ? NaN : v.f === "Infinity" ? Infinity : -Infinity;
  if (typeof v === "number") return v;
  if (typeof v === "boolean") return v ? 1 : 0;
  return null;
}

/** Send a non-GET request with an optional JSON body; parse the JSON answer. Errors carry
 * the API's status and message (a 400 names the field at fault). */
export async function send<T>(method: "POST" | "PATCH" | "PUT" | "DELETE", path: string, body?: unknown,
                              signal?: AbortSignal): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp: Response;
  try {
    resp = await fetch(path, { method, signal, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    if ((err as Error).name === "AbortError") throw err;
    throw new ApiError(0, `the API did not answer (${(err as Error).message})`);
  }
  if (!resp.ok) {
    let text = `${resp.status} ${resp.statusText}`;
    try {
      text = (await resp.json())?.error?.message ?? text;
    } catch {
      /* not JSON */
    }
    throw new ApiError(resp.status, text);
  }
  return (await resp.json()) as T;
}

/** A run's changes (query_api/manage.py); each answers the run's detail once materialized. */
export interface RunChange {
  name?: string;
  /** key -> value, or null to remove the tag */
  tags?: Record<string, string | null>;
  /** null clears the note */
  note?: string | null;
}

export const manage = {
  patch: (id: string, change: RunChange) => send<RunDetail>("PATCH", `/api/runs/${enc(id)}`, change),
  delete: (id: string) => send<RunDetail>("POST", `/api/runs/${enc(id)}/delete`),
  restore: (id: string) => send<RunDetail>("POST", `/api/runs/${enc(id)}/restore`),
};

