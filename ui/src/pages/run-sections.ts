// Parts of the run page that are lists: files, captured output and the event history.
// Each can take live additions.
import { api, fileUrl, NOTE_TAG, type FileInfo, type RunEvent } from "../api";
import { h, message, setChildren } from "../dom";
import { fmtBytes, fmtTime, fmtValue } from "../format";

const MAX_OUTPUT_LINES = 50_000;

export class FilesSection {
  readonly el = h("div", { id: "files" });

  constructor(
    private readonly runId: string,
    private readonly signal: AbortSignal,
  ) {}

  async load(): Promise<FileInfo[]> {
    const { files } = await api.files(this.runId, this.signal);
    setChildren(
      this.el,
      files.length
        ? h("table", { class: "grid" },
            h("thead", null, h("tr", null, h("th", null, "Path"), h("th", { class: "num" }, "Size"), h("th", null, "Type"), h("th", null, "Created"))),
            h("tbody", null, files.map((f) =>
              h("tr", { data: { path: f.path } },
                h("td", null, h("a", { href: fileUrl(this.runId, f.path), download: f.path.split("/").pop() ?? f.path }, f.path)),
                h("td", { class: "num" }, fmtBytes(f.size)),
                h("td", null, f.content_type),
                h("td", null, fmtTime(f.created_at))))))
        : message("No files."),
    );
    return files;
  }
}

/** Captured stdout/stderr/log lines (GET /api/runs/{id}/logs), appended to live. */
export class OutputSection {
  readonly el: HTMLElement;
  private readonly pre = h("pre", { class: "output", id: "output" });
  private readonly note = h("p", { class: "muted" });
  private lines = 0;
  private lastSeq = -1;

  constructor(
    private readonly runId: string,
    private readonly signal: AbortSignal,
  ) {
    this.el = h("div", null, this.note, this.pre);
  }

  async load(): Promise<void> {
    let afterSeq = -1;
    let afterIdx: number | null = null;
    for (;;) {
      const page = await api.logs(this.runId, afterSeq, afterIdx, this.signal);
      for (const l of page.lines) this.add(l.seq, l.stream, l.line, l.ts);
      if (page.next_after_seq === null || this.lines >= MAX_OUTPUT_LINES) break;
      afterSeq = page.next_after_seq;
      afterIdx = page.next_after_idx;
    }
    this.updateNote();
  }

  /** A log.lines event that arrived live. */
  addEvent(e: RunEvent): void {
    if (e.seq <= this.lastSeq) return;
    const p = e.payload as { stream: string; lines: string[]; times: number[] };
    p.lines.forEach((line, i) => this.add(e.seq, p.stream, line, p.times[i]));
    this.updateNote();
  }

  private add(seq: number, stream: string, line: string, ts: string | number | null): void {
    if (this.lines >= MAX_OUTPUT_LINES) return;
    const follow = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 4;
    this.pre.append(h("span", { class: `line stream-${stream}`, title: `${stream} ${fmtTime(ts, true)}` }, line, "\n"));
    this.lines++;
    this.lastSeq = Math.max(this.lastSeq, seq);
    if (follow) this.pre.scrollTop = this.pre.scrollHeight;
  }

  private updateNote(): void {
    this.pre.hidden = this.lines === 0;
    this.note.textContent = this.lines === 0 ? "No captured output." : this.lines >= MAX_OUTPUT_LINES ? `First ${MAX_OUTPUT_LINES} lines.` : `${this.lines} line${this.lines === 1 ? "" : "s"}`;
    this.pre.dataset.lines = String(this.lines);
  }
}

/** One line of text saying what an event did. */
export function describe(e: RunEvent): string {
  const p = e.payload as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  switch (e.type) {
    case "run.started":
      return `started in ${p.experiment}${p.name ? ` as ${p.name}` : ""}${p.parent_run_id ? ` (child of ${String(p.parent_run_id).slice(0, 8)})` : ""}`;
    case "run.status":
      return `${p.status}${p.error ? `: ${String(p.error).split("\n").filter(Boolean).pop()}` : ""}`;
    case "metric.points":
      return (p.series as { name: string; steps: number[]; values: unknown[] }[])
        .map((s) => `${s.name}: ${s.steps.length === 1 ? `${fmtValue(s.values[0] as never)} at step ${s.steps[0]}` : `${s.steps.length} points`}`)
        .join("; ");
    case "metric.list":
      return `${p.name}: list of ${(p.values as unknown[]).length}`;
    case "metric.rows":
      return `${p.name}: ${(p.rows as unknown[]).length} row(s)`;
    case "metric.table":
      return `${p.name}: table with columns ${Object.keys(p.columns).join(", ")}`;
    case "metric.image":
      return `${p.name}: image ${p.artifact?.path ?? ""}`;
    case "tag.set":
      if (p.key === NOTE_TAG) return `note set: ${noteSummary(String(p.value ?? ""))}`;
      return `tag ${p.key}${p.value ? ` = ${p.value}` : ""}`;
    case "tag.removed":
      return p.key === NOTE_TAG ? "note cleared" : `tag ${p.key} removed`;
    case "run.renamed":
      return `renamed to “${p.name}”`;
    case "run.deleted":
      return "deleted (hidden from the runs lists)";
    case "run.restored":
      return "restored";
    case "artifact.recorded":
      return `file ${p.path} (${fmtBytes(Number(p.size) || 0)})`;
    case "log.lines":
      return `${p.stream}: ${(p.lines as string[]).length} line(s)`;
    default:
      return "";
  }
}

/** A note's first line, cut to 80 characters. */
function noteSummary(note: string): string {
  const first = note.split("\n")[0];
  const cut = first.length > 80 ? `${first.slice(0, 80)}…` : first;
  return cut === note ? cut : `${cut} (${note.length} characters)`;
}

/** Who wrote an event: the token id the gateway stamped, or a dash on a local stack. */
function byWhom(e: RunEvent): HTMLElement {
  return e.principal
    ? h("code", { class: "principal" }, e.principal)
    : h("span", { class: "muted", title: "unauthenticated (a local stack)" }, "—");
}

/** The run's history: its archived events (GET /api/runs/{id}/events, each with the
 * principal that wrote it), a page at a time, plus live ones. All text is text nodes. */
export class EventsSection {
  readonly el: HTMLElement;
  private readonly body = h("tbody");
  private readonly more = h("button", { hidden: true }, "Load more");
  /** The paging cursor and the greatest seq paged in, exact: the query API's own events
   * (run management) take seqs from 2**62, past what a JS number holds (api.exactSeqs). */
  private next: number | string | null = -1;
  private pagedSeq = -1n;
  /** Events shown, by id: live events may repeat paged ones, and two numberings (the
   * SDK's, the API's) interleave, so a seq is no high-water mark. */
  private readonly shown = new Set<string>();

  constructor(
    private readonly runId: string,
    private readonly signal: AbortSignal,
  ) {
    this.more.addEventListener("click", () => void this.loadPage());
    this.el = h("div", null,
      h("table", { class: "grid events", id: "events" },
        h("thead", null, h("tr", null, h("th", { class: "num" }, "seq"), h("th", null, "Time"), h("th", null, "Type"), h("th", null, "By"), h("th", null, "What"))),
        this.body),
      this.more);
  }

  async loadPage(): Promise<void> {
    if (this.next === null) return;
    const page = await api.events(this.runId, this.next, this.signal);
    for (const e of page.events) {
      this.add(e);
      const seq = BigInt(e.seq);
      if (seq > this.pagedSeq) this.pagedSeq = seq;
    }
    this.next = page.next_after_seq;
    this.more.hidden = this.next === null;
  }

  /** Events written since the last one shown (a change made from this page), once every
   * earlier page is loaded (else "Load more" brings them). */
  async loadNew(): Promise<void> {
    if (this.next !== null) return;
    this.next = this.pagedSeq.toString();
    await this.loadPage();
  }

  /** A live event: shown once every earlier page is loaded (else "Load more" brings it). */
  addLive(e: RunEvent): void {
    if (this.next === null) this.add(e);
  }

  private add(e: RunEvent): void {
    const id = e.event_id ?? `seq:${e.seq}`;
    if (this.shown.has(id)) return;
    this.shown.add(id);
    const json = h("pre", { class: "json" }, JSON.stringify(e.payload, null, 2));
    this.body.append(
      h("tr", { data: { seq: String(e.seq), type: e.type } },
        h("td", { class: "num" }, String(e.seq)),
        h("td", null, fmtTime(e.ts, true)),
        h("td", null, h("code", null, e.type)),
        h("td", { class: "by" }, byWhom(e)),
        h("td", null, h("details", null, h("summary", null, describe(e)), json))),
    );
  }
}
