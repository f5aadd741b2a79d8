// Changing pages without a reload: main.ts renders on this event (and on popstate).
export const NAVIGATE = "runstream:navigate";

export function navigate(href: string, replace = false): void {
  if (replace) history.replaceState(null, "", href);
  else history.pushState(null, "", href);
  window.dispatchEvent(new Event(NAVIGATE));
}
