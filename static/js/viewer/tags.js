// The DICOM tag browser: the current image's header as a filterable table.

import { t, el, getJSON } from "../common.js";

const dialog = document.getElementById("tags-dialog");
const body = document.getElementById("tags-body");
const filter = document.getElementById("tags-filter");
let rows = [];

function flatten(elements, depth, out) {
  for (const e of elements) {
    out.push({ ...e, depth });
    (e.items || []).forEach((item, i) => {
      out.push({ tag: "", keyword: `Item ${i + 1}`, name: "", vr: "", value: "", depth: depth + 1, item: true });
      flatten(item, depth + 2, out);
    });
  }
  return out;
}

function show() {
  const words = filter.value.trim().toLowerCase();
  const visible = words
    ? rows.filter((r) => `${r.tag} ${r.keyword} ${r.name} ${r.value}`.toLowerCase().includes(words))
    : rows;
  body.replaceChildren(...visible.map((r) => el("tr", {},
    el("td", { class: "t-tag" }, r.tag ? `(${r.tag})` : ""),
    el("td", { class: "t-name" }, `${"  ".repeat(r.depth)}${r.depth ? "› " : ""}${r.keyword || r.name}`),
    el("td", { class: "t-vr" }, r.vr),
    el("td", { class: "t-value" }, r.value))));
}

export async function openTags(sopUid) {
  rows = [];
  body.replaceChildren(el("tr", {}, el("td", {}, t("common.loading"))));
  if (!dialog.open) dialog.showModal();
  try {
    const data = await getJSON(`/api/instances/${encodeURIComponent(sopUid)}/tags`);
    rows = [...flatten(data.meta, 0, []), ...flatten(data.dataset, 0, [])];
    show();
  } catch (err) {
    body.replaceChildren(el("tr", {}, el("td", {}, `${t("common.error")}: ${err.message}`)));
  }
}

filter.addEventListener("input", show);
