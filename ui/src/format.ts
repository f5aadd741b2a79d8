// Text for numbers, values, times and sizes.
import type { Value } from "./api";

export function fmtNumber(v: number): string {
  if (!Number.isFinite(v)) return Number.isNaN(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity";
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-4)) return v.toExponential(4);
  return String(Number.parseFloat(v.toPrecision(6)));
}

export function fmtValue(v: Value | undefined): string {
  if (v === null || v === undefined) return "";
  if (typeof v === "object") return v.f;
  if (typeof v === "number") return fmtNumber(v);
  return String(v);
}

function pad(n: number, width = 2): string {
  return String(n).padStart(width, "0");
}

/** Local "YYYY-MM-DD HH:MM:SS" of an ISO string or epoch seconds. */
export function fmtTime(t: string | number | null | undefined, millis = false): string {
  if (t === null || t === undefined || t === "") return "";
  const d = typeof t === "number" ? new Date(t * 1000) : new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  const s = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return millis ? `${s}.${pad(d.getMilliseconds(), 3)}` : s;
}

export function fmtDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 10) return `${seconds.toFixed(2)} s`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const s = Math.round(seconds);
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d ${pad(Math.floor((s % 86400) / 3600))}h`;
}

/** Seconds from an ISO start to an ISO end (or now). */
export function elapsed(start: string | null, end: string | null): number | null {
  if (!start) return null;
  const a = Date.parse(start);
  const b = end ? Date.parse(end) : Date.now();
  return Number.isNaN(a) || Number.isNaN(b) ? null : (b - a) / 1000;
}

export function fmtBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** A short label for a run id. Ids are UUIDv7: the first digits are a timestamp shared by
 * runs started together, so the random tail is what tells runs apart. */
export function shortId(id: string): string {
  return `…${id.slice(-8)}`;
}

export function runLabel(run: { name: string | null; run_id: string }): string {
  return run.name || shortId(run.run_id);
}
