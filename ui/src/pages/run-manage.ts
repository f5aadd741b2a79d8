// Run management on the run page: rename (inline edit of the title), tags (add, change,
// remove), a free-text note, delete (after a confirmation) and restore. Each change is one
// request (PATCH /api/runs/{id}, POST …/delete, POST …/restore, see query_api/manage.py)
// whose answer is the run's detail, from which the page redraws; a failure is shown next
// to the control that asked, never swallowed.
import { ApiError, manage, NOTE_TAG, type RunDetail } from "../api";
import { h, setChildren } from "../dom";

/** What a failed change tells the user: the API's message (a 400 names the field). */
export function errorText(err: unknown): string {
  if (!(err instanceof ApiError)) return `Failed: ${(err as Error).message}`;
  const why: Record<number, string> = {
    0: "No answer",
    400: "Refused",
    401: "Not signed in",
    403: "Not allowed (this token cannot write)",
    404: "Not found",
    503: "Unavailable, retry later",
  };
  return `${why[err.status] ?? "Failed"} (${err.status || "network"}): ${err.message}`;
}

function errorLine(id: string): HTMLElement {
  return h("div", { class: "msg msg-error manage-error", id, hidden: true, attrs: { role: "alert" } });
}

function showError(el: HTMLElement, err: unknown): void {
  setChildren(el, err === null ? null : errorText(err));
  el.hidden = err === null;
}

export class RunManagement {
  /** Next to the title: the rename form (shown instead of the title while editing). */
  readonly renameForm: HTMLFormElement;
  readonly renameButton: HTMLButtonElement;
  /** Under the header: the rename error, the deleted banner, the delete confirmation. */
  readonly lifecycle: HTMLElement;
  readonly deleteButton: HTMLButtonElement;
  /** The tags' chips (each removable and editable) and the form that sets one. */
  readonly tags: HTMLElement;
  /** The note as plain text, and its editor. */
  readonly note: HTMLElement;

  private run: RunDetail;
  private readonly renameInput = h("input", { id: "rename-input", size: 40, attrs: { "aria-label": "run name", autocomplete: "off" } });
  private readonly renameError = errorLine("rename-error");
  private readonly banner = h("div", { class: "deleted-banner", id: "deleted-banner", hidden: true, attrs: { role: "status" } });
  private readonly confirm = h("div", { class: "confirm", id: "delete-confirm", hidden: true });
  private readonly lifecycleError = errorLine("lifecycle-error");
  private readonly chips = h("div", { class: "chips", id: "tags" });
  private readonly tagKey = h("input", { id: "tag-key", placeholder: "key", size: 16, attrs: { "aria-label": "tag key", autocomplete: "off" } });
  private readonly tagValue = h("input", { id: "tag-value", placeholder: "value", size: 24, attrs: { "aria-label": "tag value", autocomplete: "off" } });
  private readonly tagsError = errorLine("tags-error");
  private readonly noteText = h("p", { class: "note", id: "note" });
  private readonly noteInput = h("textarea", { id: "note-input", rows: 4, cols: 80, attrs: { "aria-label": "note" } });
  private readonly noteForm: HTMLFormElement;
  private readonly noteEdit: HTMLButtonElement;
  private readonly noteClear: HTMLButtonElement;
  private readonly noteError = errorLine("note-error");

  constructor(
    run: RunDetail,
    private readonly title: HTMLElement,
    /** Redraw the page from a run detail (the answer of a change). */
    private readonly apply: (run: RunDetail) => void,
  ) {
    this.run = run;
    this.renameButton = h("button", { id: "rename-button", class: "small", title: "Rename this run",
      on: { click: () => this.editName(true) } }, "Rename");
    this.renameForm = h("form", { class: "inline rename", id: "rename-form", hidden: true,
      on: { submit: (e) => { e.preventDefault(); void this.change(this.renameError, this.renameForm, () => manage.patch(this.run.run_id, { name: this.renameInput.value.trim() })); } } },
      this.renameInput,
      h("button", { type: "submit", class: "primary", id: "rename-save" }, "Save"),
      h("button", { type: "button", id: "rename-cancel", on: { click: () => this.editName(false) } }, "Cancel"));
    this.renameInput.addEventListener("keydown", (e) => {
      if (e.key === "Escape") this.editName(false);
    });

    this.deleteButton = h("button", { id: "delete-run", class: "small danger", title: "Hide this run from the runs lists and search (restorable)",
      on: { click: () => { this.confirm.hidden = false; (this.confirm.querySelector("#delete-confirm-yes") as HTMLElement).focus(); } } }, "Delete…");
    setChildren(this.confirm,
      "Delete this run? It disappears from the runs list and search; you can restore it later. ",
      h("button", { class: "danger", id: "delete-confirm-yes",
        on: { click: () => void this.change(this.lifecycleError, this.confirm, () => manage.delete(this.run.run_id)) } }, "Delete"),
      " ",
      h("button", { id: "delete-confirm-cancel", on: { click: () => (this.confirm.hidden = true) } }, "Cancel"));
    this.lifecycle = h("div", null, this.renameError, this.banner, this.confirm, this.lifecycleError);

    const tagForm = h("form", { class: "inline tag-form", id: "tag-form",
      on: { submit: (e) => { e.preventDefault(); this.setTag(); } } },
      this.tagKey, this.tagValue, h("button", { type: "submit", id: "tag-set" }, "Set tag"));
    this.tags = h("div", null, this.chips, tagForm, this.tagsError);

    this.noteEdit = h("button", { id: "note-edit", class: "small", on: { click: () => this.editNote(true) } }, "Edit note");
    this.noteClear = h("button", { type: "button", id: "note-clear",
      on: { click: () => void this.change(this.noteError, this.noteForm, () => manage.patch(this.run.run_id, { note: null })) } }, "Clear note");
    this.noteForm = h("form", { class: "note-form", id: "note-form", hidden: true,
      on: { submit: (e) => { e.preventDefault(); void this.saveNote(); } } },
      this.noteInput,
      h("div", { class: "buttons" },
        h("button", { type: "submit", class: "primary", id: "note-save" }, "Save note"),
        h("button", { type: "button", id: "note-cancel", on: { click: () => this.editNote(false) } }, "Cancel"),
        this.noteClear));
    this.note = h("div", { id: "note-box" }, this.noteText, this.noteEdit, this.noteForm, this.noteError);
    this.render(run);
  }

  /** Draw the controls for ``run`` (after a change, a live tag or a refetch). */
  render(run: RunDetail): void {
    this.run = run;
    const deleted = run.deleted;
    setChildren(this.banner, deleted
      ? [h("b", null, "This run is deleted."), " It is hidden from the runs lists and search until restored. ",
          h("button", { class: "primary", id: "restore-run",
            on: { click: () => void this.change(this.lifecycleError, this.banner, () => manage.restore(this.run.run_id)) } }, "Restore")]
      : null);
    this.banner.hidden = !deleted;
    this.deleteButton.hidden = deleted;
    if (deleted) this.confirm.hidden = true;

    const entries = Object.entries(run.tags).filter(([k]) => k !== NOTE_TAG);
    setChildren(this.chips, entries.length
      ? entries.map(([k, v]) => h("span", { class: "tag-chip" },
          h("button", { type: "button", class: "tag tag-text", data: { tagKey: k }, title: "Change this tag",
            on: { click: () => this.fillTag(k, v ?? "") } }, h("b", null, k), v ? `: ${v}` : ""),
          h("button", { class: "chip-x", title: "Remove this tag", data: { removeTag: k }, attrs: { "aria-label": `remove tag ${k}` },
            on: { click: () => void this.change(this.tagsError, this.chips, () => manage.patch(this.run.run_id, { tags: { [k]: null } })) } }, "×")))
      : h("span", { class: "muted" }, "No tags."));

    const note = run.tags[NOTE_TAG];
    setChildren(this.noteText, note ? note : h("span", { class: "muted" }, "No note."));
    this.noteText.dataset.empty = String(!note);
    this.noteClear.hidden = !note;
    this.noteEdit.textContent = note ? "Edit note" : "Add a note";
  }

  private editName(on: boolean): void {
    this.renameForm.hidden = !on;
    this.title.hidden = on;
    this.renameButton.hidden = on;
    if (!on) return;
    this.renameInput.value = this.run.name ?? "";
    this.renameInput.focus();
    this.renameInput.select();
  }

  private editNote(on: boolean): void {
    this.noteForm.hidden = !on;
    this.noteText.hidden = on;
    this.noteEdit.hidden = on;
    if (!on) return;
    this.noteInput.value = this.run.tags[NOTE_TAG] ?? "";
    this.noteInput.focus();
  }

  private fillTag(key: string, value: string): void {
    this.tagKey.value = key;
    this.tagValue.value = value;
    this.tagValue.focus();
    this.tagValue.select();
  }

  private setTag(): void {
    const key = this.tagKey.value.trim();
    if (!key) {
      showError(this.tagsError, new ApiError(400, "a tag needs a key"));
      this.tagKey.focus();
      return;
    }
    void this.change(this.tagsError, this.tags, () => manage.patch(this.run.run_id, { tags: { [key]: this.tagValue.value } }))
      .then((ok) => {
        if (!ok) return;
        this.tagKey.value = "";
        this.tagValue.value = "";
      });
  }

  private async saveNote(): Promise<void> {
    const text = this.noteInput.value;
    await this.change(this.noteError, this.noteForm, () => manage.patch(this.run.run_id, { note: text.trim() ? text : null }));
  }

  /** Run one change with ``scope``'s buttons disabled; on success close the editors and
   * redraw from the answer, else show the error in ``errorEl``. */
  private async change(errorEl: HTMLElement, scope: HTMLElement, request: () => Promise<RunDetail>): Promise<boolean> {
    const buttons = [...scope.querySelectorAll("button")];
    buttons.forEach((b) => (b.disabled = true));
    scope.dataset.busy = "true";
    try {
      const run = await request();
      for (const el of [this.renameError, this.lifecycleError, this.tagsError, this.noteError]) showError(el, null);
      this.editName(false);
      this.editNote(false);
      this.confirm.hidden = true;
      this.apply(run);
      return true;
    } catch (err) {
      showError(errorEl, err);
      return false;
    } finally {
      buttons.forEach((b) => (b.disabled = false));
      delete scope.dataset.busy;
    }
  }
}
