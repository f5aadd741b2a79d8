// The query API's shapes (GET /api/openapi.json documents them) and one fetch helper.

/** A metric value as JSON carries it: non-finite floats are {"f": "NaN" | "Infinity" | "-Infinity"}. */
export type Value = number | boolean | string | null | { f: "NaN" | "Infinity" | "-Infinity" };

export interface Summary {
  kind: "scalar" | "list" | "table" | "image";
  last: Value;
  min: Value;
  max: Value;
  count: number;
  last_step: number | null;
  description: string | null;
}

export interface Run {
  run_id: string;
  name: string | null;
  experiment: string;
  status: string;
  kind: string;
  parent_run_id: string | null;
  error: string | null;
  started_at: string | null;
  ended_at: string | null;
  updated_at: string | null;
  duration_s: number | null;
  last_seq: number;
  tags: Record<string, string | null>;
  metrics: Record<string, Summary>;
}

export interface RunDetail extends Run {
  properties: Record<string, Value> | null;
  children: string[];
  /** Events or single points/rows the processors set aside (`runstream dead-letters list`). */
  dead_letters?: number;
}

export interface Experiment {
  name: string;
  created_at: string | null;
  run_count: number;
  last_activity: string | null;
}

export interface Vector {
  name: string;
  kind: "scalar" | "list";
  count: number;
  steps: number[];
  values: Value[];
  times: number[];
  downsampled: boolean;
}

export interface Table {
  name: string;
  columns: Record<string, Value[]>;
  rows: number;
}

export interface FileInfo {
  path: string;
  size: number;
  sha256: string;
  content_type: string;
  created_at: string | null;
}

export interface RunEvent {
  type: string;
  seq: number;
  ts: number;
  run_id: string;
  payload: Record<string, unknown>;
}

export interface LogLine {
  seq: number;
  idx: number;
  ts: string | null;
  stream: string;
  line: string;
}

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

/** GET an API path and parse its JSON; errors carry the API's message. */
export async function get<T>(path: string, query: Query = {}, signal?: AbortSignal): Promise<T> {
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
  return (await resp.json()) as T;
}

export const enc = encodeURIComponent;

export const api = {
  experiments: (signal?: AbortSignal) => get<{ experiments: Experiment[] }>("/api/experiments", {}, signal),
  runs: (experiment: string, query: Query, signal?: AbortSignal) =>
    get<{ runs: Run[]; total: number }>(`/api/experiments/${enc(experiment)}/runs`, query, signal),
  run: (id: string, signal?: AbortSignal) => get<RunDetail>(`/api/runs/${enc(id)}`, {}, signal),
  vector: (id: string, name: string, query: Query, signal?: AbortSignal) =>
    get<Vector>(`/api/runs/${enc(id)}/metrics/${enc(name)}`, query, signal),
  table: (id: string, name: string, signal?: AbortSignal) =>
    get<Table>(`/api/runs/${enc(id)}/tables/${enc(name)}`, {}, signal),
  files: (id: string, signal?: AbortSignal) => get<{ files: FileInfo[] }>(`/api/runs/${enc(id)}/files`, {}, signal),
  events: (id: string, afterSeq: number, signal?: AbortSignal) =>
    get<{ events: RunEvent[]; next_after_seq: number | null }>(
      `/api/runs/${enc(id)}/events`,
      { after_seq: afterSeq, limit: 200 },
      signal,
    ),
  logs: (id: string, afterSeq: number, afterIdx: number | null, signal?: AbortSignal) =>
    get<{ lines: LogLine[]; next_after_seq: number | null; next_after_idx: number | null }>(
      `/api/runs/${enc(id)}/logs`,
      { after_seq: afterSeq, after_idx: afterIdx, limit: 5000 },
      signal,
    ),
  compare: (runs: string[], query: Query, signal?: AbortSignal) =>
    get<{ runs: (Run & { vectors?: Record<string, Vector> })[] }>("/api/compare", { run: runs, ...query }, signal),
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
