// GENERATED from the contract (schemas/api.py, schemas/events.py) by `runstream schema --ts`.
// Do not edit: change the contract and regenerate; tests/test_contract.py checks this file.

export type Status = "canceled" | "completed" | "failed" | "running";

export type TerminalStatus = "canceled" | "completed" | "failed";

export type Value = boolean | number | string | NonFinite | null;

export type Columns = Record<string, Value[]>;

/** get_metrics shape: a Value if logged once, a list if repeated or logged with log_list, Columns for a table, an ImageRef for an image. */
export type MetricShape = Value | Value[] | Columns | ImageRef;

export type Metrics = Record<string, MetricShape>;

export type MetricsByRun = Record<string, Metrics>;

/** Every run status, and those after which a run records nothing more. */
export const STATUSES: readonly Status[] = ["running", "completed", "failed", "canceled"];
export const TERMINAL_STATUSES: readonly TerminalStatus[] = ["completed", "failed", "canceled"];
/** The tag a run's free-text note is kept in (MLflow's). */
export const NOTE_TAG = "mlflow.note.content";

/** The point an as-of answer reflects. */
export interface AsOf {
  /** the last event seq folded */
  seq: number;
  /** its ts (epoch seconds) */
  ts: number;
}

export interface Compare {
  runs: CompareRun[];
}

export interface CompareRun {
  /** deleted runs are hidden from listings unless asked for; restorable */
  deleted: boolean;
  /** null until the run ends */
  duration_s: number | null;
  ended_at: string | null;
  error: string | null;
  experiment: string;
  kind: "child" | "interactive" | "offline" | "submitted";
  last_seq: number;
  metrics: Record<string, Summary>;
  name: string | null;
  parent_run_id: string | null;
  run_id: string;
  started_at: string;
  status: Status;
  updated_at: string;
  vectors?: Record<string, Vector>;
}

export interface ErrorBody {
  message: string;
  status: number;
}

/** Every error answer; a bad parameter's message names the parameter and its value. */
export interface ErrorResponse {
  error: ErrorBody;
}

export interface EventsPage {
  events: RunEvent[];
  next_after_seq: number | null;
}

export interface Experiment {
  created_at: string;
  last_activity: string | null;
  name: string;
  run_count: number;
}

export interface Experiments {
  experiments: Experiment[];
}

export interface FileInfo {
  content_type: string;
  created_at: string;
  path: string;
  sha256: string;
  size: number;
}

export interface Files {
  files: FileInfo[];
}

/** One group of runs' metric: per step bucket, the mean, minimum and maximum over every finite point of the group's runs in it. */
export interface GroupBand {
  /** the tag or param value (JSON text for a non-string param); null: runs without it, or every run when not grouped */
  group: string | null;
  max: number[];
  mean: number[];
  min: number[];
  /** runs of the group that have points */
  runs: number;
  /** each bucket's first step */
  steps: number[];
}

/** ``/api/health`` (``ok``) and ``/api/ready`` (``ready``). */
export interface Health {
  status: string;
}

export interface History {
  entries: HistoryEntry[];
  next_after_seq: number | null;
}

/** One event of a run's history: who wrote it and what it changed. */
export interface HistoryEntry {
  principal: string | null;
  seq: number;
  summary: string;
  ts: string;
  type: string;
}

/** An image metric in ``get_metrics``: the artifact holding its last image. */
export interface ImageRef {
  artifact: string | null;
  sha256: string | null;
}

/** The ``data`` of the live stream's final ``end`` message (other messages carry a RunEvent). */
export interface LiveEnd {
  last_seq: number;
  status: TerminalStatus;
}

export interface LogLine {
  idx: number;
  line: string;
  seq: number;
  stream: "log" | "stderr" | "stdout";
  ts: string;
}

/** ``/api/logout``: the login cookie is cleared. */
export interface LoggedOut {
  logged_out: boolean;
}

export interface LogsPage {
  lines: LogLine[];
  next_after_idx: number | null;
  next_after_seq: number | null;
}

/** ``/api/experiments/{name}/groups``: a metric of the filtered runs, grouped. */
export interface MetricGroups {
  group_by: string | null;
  groups: GroupBand[];
  metric: string;
  /** runs read (at most max_runs, newest first) */
  runs: number;
  /** more runs matched than max_runs */
  truncated: boolean;
}

/** ``/api/runs/{run_id}/metrics`` with ``as_of_seq`` or ``as_of``. */
export interface MetricsAsOf {
  as_of: AsOf;
  metrics: Metrics;
}

/** A float JSON cannot carry: NaN, +Infinity or -Infinity. */
export interface NonFinite {
  f: "-Infinity" | "Infinity" | "NaN";
}

/** ``/api/whoami`` and ``/api/login``: who the token acts as (token_id null: authentication off). */
export interface Principal {
  scope: "admin" | "read" | "write";
  token_id: string | null;
  workspace: string;
}

/** A run in the runs listing. */
export interface Run {
  /** deleted runs are hidden from listings unless asked for; restorable */
  deleted: boolean;
  /** null until the run ends */
  duration_s: number | null;
  ended_at: string | null;
  error: string | null;
  experiment: string;
  kind: "child" | "interactive" | "offline" | "submitted";
  last_seq: number;
  metrics: Record<string, Summary>;
  name: string | null;
  /** parameters (immutable once logged) */
  params: Record<string, string>;
  parent_run_id: string | null;
  /** start_logging's keyword arguments (params.* in filters) */
  properties: Record<string, Value>;
  run_id: string;
  started_at: string;
  status: Status;
  tags: Record<string, string | null>;
  updated_at: string;
}

/** ``/api/runs/{run_id}``: a run with properties and child ids. */
export interface RunDetail {
  as_of?: AsOf;
  children: string[];
  dead_letters?: number;
  /** deleted runs are hidden from listings unless asked for; restorable */
  deleted: boolean;
  /** null until the run ends */
  duration_s: number | null;
  ended_at: string | null;
  error: string | null;
  experiment: string;
  kind: "child" | "interactive" | "offline" | "submitted";
  last_seq: number;
  metrics: Record<string, Summary>;
  name: string | null;
  /** parameters (immutable once logged) */
  params: Record<string, string>;
  parent_run_id: string | null;
  /** start_logging's keyword arguments (params.* in filters) */
  properties: Record<string, Value>;
  run_id: string;
  started_at: string;
  status: Status;
  tags: Record<string, string | null>;
  updated_at: string;
}

/** An archived event exactly as sent (its payload per ``schemas/json/events.schema.json``). */
export interface RunEvent {
  event_id: string;
  payload: Record<string, unknown>;
  principal?: string | null;
  run_id: string;
  seq: number;
  ts: number;
  type: string;
  v: number;
}

export interface RunsPage {
  runs: Run[];
  total: number;
}

/** A metric's summary in a run's answer. */
export interface Summary {
  count: number;
  description: string | null;
  kind: "image" | "list" | "scalar" | "table";
  last: Value;
  last_step: number | null;
  max: Value;
  min: Value;
}

export interface Table {
  columns: Columns;
  name: string;
  rows: number;
}

export interface Vector {
  /** points in the step range before downsampling */
  count: number;
  downsampled: boolean;
  kind: "list" | "scalar";
  name: string;
  steps: number[];
  /** epoch seconds */
  times: number[];
  values: Value[];
}
