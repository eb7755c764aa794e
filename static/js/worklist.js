// The worklist: search as you type, sortable columns, paging, opened/new status,
// and (for administrators and radiologists) assigning a study to a referring doctor.

import {
  boot, t, el, getJSON, postJSON, deleteJSON, formatDate, formatTime, formatName, formatSex,
  isoDay, debounce, ApiError,
} from "./common.js";
import { openShareDialog } from "./share.js";

const form = document.getElementById("wl-filters");
const body = document.getElementById("wl-body");
const statusLine = document.getElementById("wl-status");
const pageInfo = document.getElementById("pg-info");
const prevButton = document.getElementById("pg-prev");
const nextButton = document.getElementById("pg-next");
const pageSize = document.getElementById("pg-size");
const headers = [...document.querySelectorAll("#wl-table th[data-sort]")];
const canAssign = ["admin", "radiologist"].includes(boot.user?.role);

const FIELDS = ["name", "patient_id", "accession", "date_from", "date_to", "modality", "description", "referring"];
const state = { sort: "date", dir: "desc", page: 1, pages: 1 };
let inflight = null;

function readUrl() {
  const params = new URLSearchParams(location.search);
  for (const name of FIELDS) if (params.has(name)) form.elements[name].value = params.get(name);
  state.sort = params.get("sort") || "date";
  state.dir = params.get("dir") || (state.sort === "date" ? "desc" : "asc");
  state.page = Number(params.get("page")) || 1;
  if (params.get("page_size")) pageSize.value = params.get("page_size");
}

function queryParams() {
  const params = new URLSearchParams();
  for (const name of FIELDS) {
    const value = form.elements[name].value.trim();
    if (value) params.set(name, value);
  }
  params.set("sort", state.sort);
  params.set("dir", state.dir);
  params.set("page", String(state.page));
  params.set("page_size", pageSize.value);
  return params;
}

function showSort() {
  for (const th of headers) {
    th.classList.toggle("sorted-asc", th.dataset.sort === state.sort && state.dir === "asc");
    th.classList.toggle("sorted-desc", th.dataset.sort === state.sort && state.dir === "desc");
    th.setAttribute("aria-sort", th.dataset.sort === state.sort ? (state.dir === "asc" ? "ascending" : "descending") : "none");
  }
}

function row(study) {
  const opened = Boolean(study.opened_at);
  const open = () => location.assign(`/viewer/${encodeURIComponent(study.study_uid)}`);
  const tr = el("tr", { class: opened ? "opened" : "new", dataset: { uid: study.study_uid }, tabindex: 0,
    onclick: open, onkeydown: (e) => { if (e.key === "Enter") open(); } },
    el("td", { class: "c-status" },
      el("span", { class: `dot ${opened ? "opened" : "new"}`, title: opened ? t("wl.opened") : t("wl.new") }),
      el("span", { class: "visually-small" }, opened ? "" : t("wl.new"))),
    el("td", { class: "c-name", "data-label": t("wl.patient_name") }, formatName(study.patient_name)),
    el("td", { "data-label": t("wl.patient_id") }, study.patient_id),
    el("td", { "data-label": t("wl.birth_date") }, [formatDate(study.birth_date), study.sex ? ` · ${formatSex(study.sex)}` : ""].join("")),
    el("td", { "data-label": t("wl.study_date") }, `${formatDate(study.study_date)} ${formatTime(study.study_time)}`.trim()),
    el("td", { "data-label": t("wl.modality") }, study.modalities.map((m) => el("span", { class: "mod" }, m))),
    el("td", { class: "c-desc", "data-label": t("wl.description") }, study.description),
    el("td", { class: "c-accession", "data-label": t("wl.accession") }, study.accession),
    el("td", { class: "c-referring", "data-label": t("wl.referring") }, formatName(study.referring)),
    el("td", { class: "num c-series", "data-label": t("wl.series") }, study.num_series),
    el("td", { class: "num c-images", "data-label": t("wl.images") }, study.num_instances),
    el("td", { class: "c-actions" },
      canAssign ? el("button", { type: "button", class: "small", onclick: (e) => { e.stopPropagation(); openAssign(study); } }, t("wl.assign")) : null,
      canAssign ? el("button", { type: "button", class: "small share-button", onclick: (e) => { e.stopPropagation(); openShareDialog(study); } }, t("share.button")) : null),
  );
  return tr;
}

async function search({ keepPage = false } = {}) {
  if (!keepPage) state.page = 1;
  const params = queryParams();
  history.replaceState(null, "", `?${params}`);
  showSort();
  inflight?.abort();
  const controller = new AbortController();
  inflight = controller;
  statusLine.textContent = t("common.loading");
  let data;
  try {
    data = await getJSON(`/api/studies?${params}`, { signal: controller.signal });
  } catch (err) {
    if (err.name === "AbortError") return;
    statusLine.textContent = `${t("common.error")}: ${err.message}`;
    return;
  }
  if (controller !== inflight) return;
  state.page = data.page;
  state.pages = data.pages;
  body.replaceChildren(...data.items.map(row));
  // Features that add to the rows (consultation badges) listen for this.
  document.dispatchEvent(new CustomEvent("pacs:worklist-rows", { detail: data.items }));
  statusLine.textContent = data.total
    ? `${t("wl.results", { total: data.total.toLocaleString(boot.lang) })} · ${t("wl.search_ms", { ms: Math.round(data.elapsed_ms) })}`
    : t("wl.no_results");
  pageInfo.textContent = t("wl.page", { page: data.page, pages: data.pages });
  prevButton.disabled = data.page <= 1;
  nextButton.disabled = data.page >= data.pages;
}

// ---------------------------------------------------------------- filters

const searchSoon = debounce(() => search(), 300);
form.addEventListener("input", (e) => { if (e.target.type !== "date") searchSoon(); });
form.addEventListener("change", (e) => {
  if (e.target.type === "date" || e.target.tagName === "SELECT") {
    document.querySelectorAll(".shortcuts button").forEach((b) => b.classList.remove("active"));
    search();
  }
});
form.addEventListener("submit", (e) => { e.preventDefault(); search(); });
form.addEventListener("reset", () => setTimeout(() => {
  document.querySelectorAll(".shortcuts button").forEach((b) => b.classList.remove("active"));
  search();
}, 0));

for (const button of document.querySelectorAll(".shortcuts button")) {
  button.addEventListener("click", () => {
    const today = new Date();
    const day = (offset) => { const d = new Date(today); d.setDate(d.getDate() + offset); return isoDay(d); };
    const ranges = {
      today: [day(0), day(0)],
      yesterday: [day(-1), day(-1)],
      last7: [day(-6), day(0)],
      any: ["", ""],
    };
    const [from, to] = ranges[button.dataset.range];
    form.elements.date_from.value = from;
    form.elements.date_to.value = to;
    document.querySelectorAll(".shortcuts button").forEach((b) => b.classList.toggle("active", b === button));
    search();
  });
}

for (const th of headers) {
  th.addEventListener("click", () => {
    const key = th.dataset.sort;
    if (state.sort === key) state.dir = state.dir === "asc" ? "desc" : "asc";
    else { state.sort = key; state.dir = key === "date" ? "desc" : "asc"; }
    search();
  });
}
prevButton.addEventListener("click", () => { state.page -= 1; search({ keepPage: true }); });
nextButton.addEventListener("click", () => { state.page += 1; search({ keepPage: true }); });
pageSize.addEventListener("change", () => search());

// ---------------------------------------------------------------- assignment

const dialog = document.getElementById("assign-dialog");
const assignList = document.getElementById("assign-list");
const assignUser = document.getElementById("assign-user");
const assignError = document.getElementById("assign-error");
let assignStudy = null;
let referringUsers = null;

function showAssignments(assignments) {
  assignList.replaceChildren(...(assignments.length ? assignments.map((a) =>
    el("li", {},
      el("span", {}, a.name ? `${a.name} (${a.username})` : a.username),
      el("button", { type: "button", class: "small", onclick: () => unassign(a.username) }, t("wl.unassign")))
  ) : [el("li", {}, t("common.none"))]));
}

async function openAssign(study) {
  assignStudy = study;
  assignError.hidden = true;
  document.getElementById("assign-study").textContent =
    `${formatName(study.patient_name)} · ${formatDate(study.study_date)} · ${study.description}`;
  dialog.showModal();
  try {
    referringUsers ??= (await getJSON("/api/users?role=referring")).users;
    assignUser.replaceChildren(...referringUsers.map((u) => el("option", { value: u.username }, u.name ? `${u.name} (${u.username})` : u.username)));
    if (!referringUsers.length) throw new ApiError(0, t("wl.no_referring"));
    const data = await getJSON(`/api/studies/${encodeURIComponent(study.study_uid)}/assignments`);
    showAssignments(data.assignments);
  } catch (err) {
    assignError.textContent = err.message;
    assignError.hidden = false;
  }
}

async function unassign(username) {
  const data = await deleteJSON(`/api/studies/${encodeURIComponent(assignStudy.study_uid)}/assignments/${encodeURIComponent(username)}`);
  showAssignments(data.assignments);
}

document.getElementById("assign-add").addEventListener("click", async () => {
  if (!assignUser.value) return;
  try {
    const data = await postJSON(`/api/studies/${encodeURIComponent(assignStudy.study_uid)}/assignments`, { username: assignUser.value });
    showAssignments(data.assignments);
    assignError.hidden = true;
  } catch (err) {
    assignError.textContent = err.message;
    assignError.hidden = false;
  }
});

const more = document.getElementById("f-more");
more.addEventListener("click", () => {
  const open = form.classList.toggle("expanded");
  more.setAttribute("aria-expanded", String(open));
});

readUrl();
// On a phone, filters set from the address stay visible.
if (FIELDS.slice(1).some((name) => form.elements[name].value)) form.classList.add("expanded");
search({ keepPage: true });
