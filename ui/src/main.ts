// The single-page app: a router over the four pages the query API serves index.html for
// (see query_api/ui.py). Links marked data-nav change pages without a reload; each page
// gets an AbortSignal that fires when the user leaves it (closing its requests, live
// stream and charts).
import "./style.css";
import { ApiError } from "./api";
import { h, link, message, setChildren, type Child } from "./dom";
import { loginForm, showSession, whoami } from "./login";
import { navigate, NAVIGATE } from "./nav";
import { comparePage } from "./pages/compare";
import { experimentsPage } from "./pages/experiments";
import { runPage } from "./pages/run";
import { runsPage } from "./pages/runs";

export interface PageContext {
  root: HTMLElement;
  signal: AbortSignal;
  params: URLSearchParams;
  /** Set the breadcrumbs after "runstream". */
  crumbs: (...items: Child[]) => void;
}

type Page = (ctx: PageContext, ...groups: string[]) => Promise<void> | void;

const ROUTES: [RegExp, Page][] = [
  [/^\/$/, experimentsPage],
  [/^\/experiments\/(.+)$/, runsPage],
  [/^\/runs\/([^/]+)$/, runPage],
  [/^\/compare$/, comparePage],
];

let current: AbortController | null = null;

async function render(): Promise<void> {
  current?.abort();
  const controller = new AbortController();
  current = controller;
  const root = document.getElementById("app")!;
  const crumbsEl = document.getElementById("crumbs")!;
  const crumbs = (...items: Child[]) =>
    setChildren(crumbsEl, items.map((item) => h("span", { class: "crumb" }, item)));
  root.replaceChildren();
  crumbs();
  // Logged in (or authentication off)? Otherwise the login form, then this page again.
  const session = document.getElementById("session")!;
  const who = await whoami().catch(() => undefined);
  if (controller.signal.aborted) return;
  const again = () => void render();
  showSession(session, who ?? null, again);
  if (who === null) {
    loginForm(root, again);
    return;
  }
  const path = location.pathname;
  for (const [pattern, page] of ROUTES) {
    const m = pattern.exec(path);
    if (!m) continue;
    const groups = m.slice(1).map((g) => decodeURIComponent(g));
    try {
      await page({ root, signal: controller.signal, params: new URLSearchParams(location.search), crumbs }, ...groups);
    } catch (err) {
      if (controller.signal.aborted) return;
      if (err instanceof ApiError && err.status === 401) {
        loginForm(root, again); // the token was revoked or expired meanwhile
        return;
      }
      root.append(message(`Could not load this page: ${(err as Error).message}`, "error"));
    }
    return;
  }
  root.append(message(`No page at ${path}.`, "error"), h("p", null, link("/", "All experiments")));
}


document.addEventListener("click", (e) => {
  const a = (e.target as Element | null)?.closest?.("a[data-nav]") as HTMLAnchorElement | null;
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  if (a.origin !== location.origin) return;
  e.preventDefault();
  navigate(a.pathname + a.search + a.hash);
});
window.addEventListener("popstate", () => void render());
window.addEventListener(NAVIGATE, () => void render());
// MLflow's clients print links into MLflow's UI (`/#/experiments/<id>/runs/<run id>`, the
// run id as 32 hex digits): pointed at runstream, such a link opens that run's page.
const mlflowRun = /^#\/experiments\/[^/]+\/runs\/([0-9a-f]{32})/.exec(location.hash);
if (mlflowRun) {
  const x = mlflowRun[1];
  history.replaceState(null, "", `/runs/${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`);
}
void render();
