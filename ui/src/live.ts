// A running run's new events, pushed by GET /api/runs/{id}/live?after_seq=N as
// Server-Sent Events: "id: <seq>", "event: <event type>", "data: <event JSON>", and a
// final "event: end" once the run has ended.
import { enc, type RunEvent } from "./api";

export const EVENT_TYPES = [
  "run.started", "run.status", "metric.points", "metric.list", "metric.rows", "metric.table",
  "metric.image", "tag.set", "tag.removed", "artifact.recorded", "log.lines",
  "params.logged", "run.renamed", "run.deleted", "run.restored",
];

/** "failed": the stream closed for good without an "end" (e.g. the endpoint answered an error). */
export type LiveState = "connecting" | "open" | "retrying" | "ended" | "failed";

export interface LiveHandlers {
  event: (e: RunEvent) => void;
  state: (s: LiveState) => void;
}

/** Follow a run's events after ``afterSeq`` until it ends or ``signal`` aborts. */
export function follow(runId: string, afterSeq: number, signal: AbortSignal, on: LiveHandlers): void {
  let lastSeq = afterSeq;
  const source = new EventSource(`/api/runs/${enc(runId)}/live?after_seq=${afterSeq}`);
  const close = (state: LiveState) => {
    source.close();
    on.state(state);
  };
  signal.addEventListener("abort", () => source.close());
  on.state("connecting");
  source.onopen = () => on.state("open");
  // EventSource reconnects by itself (sending Last-Event-ID); say so meanwhile.
  source.onerror = () => on.state(source.readyState === EventSource.CLOSED ? "failed" : "retrying");
  const handle = (msg: MessageEvent<string>) => {
    let event: RunEvent;
    try {
      event = JSON.parse(msg.data) as RunEvent;
    } catch {
      return;
    }
    // Only the SDK's numbering is monotonic here: the query API's own events (run
    // management) take seqs from 2**62, which a JS number does not hold exactly.
    if (typeof event.seq === "number" && Number.isSafeInteger(event.seq)) {
      if (event.seq <= lastSeq) return; // already seen (a reconnect may replay)
      lastSeq = event.seq;
    }
    if (!event.type) event.type = msg.type;
    on.event(event);
  };
  for (const type of EVENT_TYPES) source.addEventListener(type, handle as EventListener);
  source.addEventListener("message", handle as EventListener);
  source.addEventListener("end", () => close("ended"));
}
