// Logging in to a query API that requires a token (docs/SECURITY.md): the token is posted
// once to /api/login, which answers with an HttpOnly, SameSite=Strict cookie; page reads and
// the live stream (EventSource) send that cookie by themselves. The script never keeps the
// token. Logout posts /api/logout, which clears the cookie.
import type { Principal } from "./contract";
import { h, message } from "./dom";

/** The caller, or null when the API answers 401 (not logged in) or 429 (a cookie that
 * failed from an address over its failed-authentication budget: the login form then shows
 * the limit's message when the user tries again). */
export async function whoami(): Promise<Principal | null> {
  const resp = await fetch("/api/whoami", { headers: { Accept: "application/json" } });
  if (resp.status === 401 || resp.status === 429) return null;
  if (!resp.ok) throw new Error(`${resp.status} ${resp.statusText}`);
  return (await resp.json()) as Principal;
}

async function post(path: string, body?: unknown): Promise<Response> {
  return fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

/** The login form in `root`; `done` runs once the cookie is set. */
export function loginForm(root: HTMLElement, done: () => void): void {
  const input = h("input", {
    type: "password",
    id: "login-token",
    name: "token",
    autocomplete: "off",
    placeholder: "rs_…",
    required: true,
  });
  const error = h("div", { id: "login-error" });
  const form = h(
    "form",
    { class: "login", id: "login" },
    h("h1", null, "Log in"),
    h("p", null, "This runstream requires a token (", h("code", null, "runstream token create"), ")."),
    h("label", { attrs: { for: "login-token" } }, "Token "),
    input,
    " ",
    h("button", { type: "submit" }, "Log in"),
    error,
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    void (async () => {
      const resp = await post("/api/login", { token: input.value.trim() });
      if (resp.ok) {
        input.value = "";
        done();
        return;
      }
      let text = `${resp.status} ${resp.statusText}`;
      try {
        text = (await resp.json())?.error?.message ?? text;
      } catch {
        /* not JSON */
      }
      error.replaceChildren(message(`Login failed: ${text}`, "error"));
    })();
  });
  root.replaceChildren(form);
  input.focus();
}

/** Show who is logged in and a logout button in `bar` (nothing with authentication off). */
export function showSession(bar: HTMLElement, who: Principal | null, loggedOut: () => void): void {
  if (who === null || who.token_id === null) {
    bar.replaceChildren();
    return;
  }
  const button = h("button", { type: "button", id: "logout" }, "Log out");
  button.addEventListener("click", () => {
    void post("/api/logout").then(loggedOut);
  });
  bar.replaceChildren(h("span", { class: "who" }, `workspace ${who.workspace} (${who.scope}) `), button);
}
