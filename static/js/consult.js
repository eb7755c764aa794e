// The consultation page: requests asked of us and by us, transfers, and (administrators)
// partner hospitals and routing rules.

import { el, getJSON, postJSON, deleteJSON } from "./common.js";
import { ct, statusBadge, urgencyBadge, when, patient, showError, pushProgress } from "./consult_common.js";

const tabs = [...document.querySelectorAll(".consult-tabs [data-tab]")];
const panels = [...document.querySelectorAll("[data-panel]")];
let current = "incoming";
let timer = 0;

function info(text) {
  const box = document.getElementById("consult-info");
  box.textContent = text || "";
  box.hidden = !text;
}

function requestRow(item) {
  const open = () => location.assign(`/consult/requests/${item.id}`);
  return el("tr", { class: `urgency-${item.urgency}`, tabindex: 0, dataset: { id: item.id }, onclick: open,
    onkeydown: (e) => { if (e.key === "Enter") open(); } },
    el("td", {}, urgencyBadge(item.urgency)),
    el("td", {}, patient(item)),
    el("td", {}, item.study_description || item.study_uid),
    el("td", {}, item.partner || (item.by_link ? ct("partner.none") : "")),
    el("td", {}, item.requested_by),
    el("td", { class: "c-consult-status" }, statusBadge(item.status)),
    el("td", {}, when(item.created_at)));
}

function pushRow(push) {
  const actions = [];
  if (["failed", "cancelled"].includes(push.state)) {
    actions.push(el("button", { type: "button", class: "small", onclick: () => act(`/consult/api/pushes/${push.id}/retry`) }, ct("push.retry")));
  }
  if (["queued", "sending", "retrying"].includes(push.state)) {
    actions.push(el("button", { type: "button", class: "small", onclick: () => act(`/consult/api/pushes/${push.id}/cancel`) }, ct("push.cancel")));
  }
  return el("tr", { dataset: { id: push.id }, class: `push-${push.state}` },
    el("td", {}, push.id),
    el("td", {}, push.partner),
    el("td", {}, push.study_uid),
    el("td", { title: push.last_error || "" }, el("span", { class: `cbadge push-${push.state}` }, ct(`push.state.${push.state}`)),
      push.last_error ? el("div", { class: "muted small-text" }, push.last_error) : null),
    el("td", { class: "c-progress" }, pushProgress(push)),
    el("td", {}, actions));
}

function partnerRow(p) {
  return el("tr", { dataset: { id: p.id } },
    el("td", {}, p.name, p.description ? el("div", { class: "muted" }, p.description) : null),
    el("td", {}, p.ae_title ? `${p.ae_title} @ ${p.host}:${p.port}` : "—"),
    el("td", {}, [p.dicomweb_url, p.pacs_url].filter(Boolean).join(" · ") || "—",
      p.token_hint ? el("div", { class: "muted" }, p.token_hint) : null),
    el("td", {}, p.transport, p.compression !== "none" ? ` · ${p.compression}` : "",
      p.bandwidth_bps ? ` · ${Math.round(p.bandwidth_bps / 1000)} KB/s` : ""),
    el("td", {}, p.scope ? ct(`partner.scope.${p.scope}`) : "—"),
    el("td", {},
      el("button", { type: "button", class: "small", onclick: () => testPartner(p) }, ct("partner.test")),
      el("button", { type: "button", class: "small", onclick: () => issueToken(p) }, ct("partner.issue")),
      el("button", { type: "button", class: "small danger", onclick: () => removePartner(p) }, ct("partner.remove"))));
}

function ruleRow(r) {
  return el("tr", { dataset: { id: r.id } },
    el("td", {}, r.name), el("td", {}, r.calling_ae || ct("rule.any")), el("td", {}, r.modality || ct("rule.any")),
    el("td", {}, r.description_contains || ct("rule.any")), el("td", {}, r.partner),
    el("td", {}, el("button", { type: "button", class: "small danger", onclick: () => removeRule(r) }, ct("partner.remove"))));
}

function fill(tableId, rows) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 7, class: "muted" }, ct("empty")))]));
}

async function load() {
  clearTimeout(timer);
  showError(null);
  try {
    if (current === "incoming" || current === "outgoing") {
      const data = await getJSON(`/consult/api/requests?direction=${current}`);
      fill(`${current}-table`, data.items.map(requestRow));
    } else if (current === "pushes") {
      const data = await getJSON("/consult/api/pushes");
      fill("pushes-table", data.items.map(pushRow));
    } else if (current === "partners") {
      const data = await getJSON("/consult/api/partners");
      fill("partners-table", data.items.map(partnerRow));
    } else if (current === "rules") {
      const [rules, partners] = await Promise.all([getJSON("/consult/api/rules"), getJSON("/consult/api/partners")]);
      fill("rules-table", rules.items.map(ruleRow));
      document.getElementById("rule-partner").replaceChildren(...partners.items.map((p) => el("option", { value: p.id }, p.name)));
    }
  } catch (err) {
    showError(err);
  }
  // Statuses and transfers move on their own: look again every few seconds.
  if (current !== "partners" && current !== "rules") timer = setTimeout(load, 4000);
}

async function act(url, body = {}) {
  try { await postJSON(url, body); } catch (err) { showError(err); }
  load();
}

async function testPartner(p) {
  try {
    const data = await postJSON(`/consult/api/partners/${p.id}/test`, {});
    info(data.checks.map((c) => `${c.what}: ${c.ok ? "✓" : "✗"} ${c.detail}`).join(" · "));
  } catch (err) { showError(err); }
}

async function issueToken(p) {
  try {
    const data = await postJSON(`/consult/api/partners/${p.id}/token`, {});
    info(ct("partner.issued", { token: data.token }));
  } catch (err) { showError(err); }
  load();
}

async function removePartner(p) {
  if (!confirm(ct("partner.remove_confirm", { name: p.name }))) return;
  try { await deleteJSON(`/consult/api/partners/${p.id}`); } catch (err) { showError(err); }
  load();
}

async function removeRule(r) {
  try { await deleteJSON(`/consult/api/rules/${r.id}`); } catch (err) { showError(err); }
  load();
}

function formData(form) {
  const data = {};
  for (const [key, value] of new FormData(form).entries()) if (String(value).trim() !== "") data[key] = String(value).trim();
  return data;
}

document.getElementById("partner-form")?.addEventListener("submit", async (e) => {
  e.preventDefault();
  const data = formData(e.target);
  if (data.bandwidth_kb !== undefined) { data.bandwidth_bps = Number(data.bandwidth_kb) * 1000; delete data.bandwidth_kb; }
  try { await postJSON("/consult/api/partners", data); e.target.reset(); } catch (err) { showError(err); }
  load();
});

document.getElementById("rule-form")?.addEventListener("submit", async (e) => {
  e.preventDefault();
  try { await postJSON("/consult/api/rules", formData(e.target)); e.target.reset(); } catch (err) { showError(err); }
  load();
});

for (const tab of tabs) {
  tab.addEventListener("click", () => {
    current = tab.dataset.tab;
    for (const t of tabs) t.classList.toggle("active", t === tab);
    for (const p of panels) p.hidden = p.dataset.panel !== current;
    info("");
    load();
  });
}

load();
