// The runs table's columns beyond the fixed ones: a metric's last, min or max value, a
// param (the run's params, else its properties) or a tag. A column is kept in the URL as `col=<key>`:
// `mse` (a metric's last value: the URL form from before), `min:mse`, `max:mse`,
// `param:alpha`, `tag:team`. Each column knows its header, its API sort key (order_by),
// its field in the search language (for brushing) and how to read it from a run.
import { toFloat, type Run, type Value } from "./api";

export type ColumnKind = "last" | "min" | "max" | "param" | "tag";

export interface Column {
  key: string;
  kind: ColumnKind;
  name: string;
}

const PREFIXES: ColumnKind[] = ["min", "max", "param", "tag"];

export function parseColumn(key: string): Column {
  const colon = key.indexOf(":");
  if (colon > 0) {
    const prefix = key.slice(0, colon) as ColumnKind;
    if (PREFIXES.includes(prefix) && colon < key.length - 1) return { key, kind: prefix, name: key.slice(colon + 1) };
  }
  return { key, kind: "last", name: key };
}

export function columnKey(kind: ColumnKind, name: string): string {
  return kind === "last" ? name : `${kind}:${name}`;
}

export function isMetric(c: Column): boolean {
  return c.kind === "last" || c.kind === "min" || c.kind === "max";
}

/** Header text: `mse`, `mse (min)`, `params.alpha`, `tags.team`. */
export function columnLabel(c: Column): string {
  if (c.kind === "last") return c.name;
  if (c.kind === "min" || c.kind === "max") return `${c.name} (${c.kind})`;
  return `${c.kind}s.${c.name}`;
}

/** The API's order_by for this column. */
export function sortKey(c: Column): string {
  return { last: "metric", min: "metric.min", max: "metric.max", param: "param", tag: "tag" }[c.kind] + `:${c.name}`;
}

/** The column as a field of the search language (names in backticks: any character but one). */
export function filterField(c: Column): string | null {
  if (c.name.includes("`")) return null;
  const name = `\`${c.name}\``;
  if (c.kind === "last") return `metrics.${name}`;
  if (c.kind === "min" || c.kind === "max") return `metrics.${name}.${c.kind}`;
  return `${c.kind}s.${name}`;
}

/** The run's raw value in this column (undefined: the run lacks it). */
export function cellValue(r: Run, c: Column): Value | undefined {
  if (c.kind === "param") return r.params?.[c.name] ?? r.properties?.[c.name];
  if (c.kind === "tag") return c.name in r.tags ? r.tags[c.name] : undefined;
  const s = r.metrics[c.name];
  if (!s) return undefined;
  return c.kind === "last" ? s.last : c.kind === "min" ? s.min : s.max;
}

/** The run's value in this column as a finite number, else null. */
export function numericValue(r: Run, c: Column): number | null {
  const v = cellValue(r, c);
  if (v === undefined || v === null) return null;
  const n = typeof v === "string" ? (v.trim() === "" ? NaN : Number(v)) : toFloat(v);
  return n !== null && Number.isFinite(n) ? n : null;
}
