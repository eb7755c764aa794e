// The worklist's consultation column: a badge per study with a consultation, and for
// radiologists and administrators a button to ask a partner hospital (or to push).
// The worklist announces each page of rows with a "pacs:worklist-rows" event.

import { boot, t, el, getJSON, postJSON } from "./common.js";
import { ct, statusBadge } from "./consult_common.js";

const staff = ["admin", "radiologist"].includes(boot.user?.role);
let partners = null;

async function strings() {
  // The worklist page does not carry our strings: fetch them once.
  if (!boot.consult_strings) boot.consult_strings = (await getJSON("/consult/api/strings")).strings;
}

async function partnerList() {
  if (partners === null) partners = (await getJSON("/consult/api/partners")).items;
  return partners;
}

function dialog() {
  let node = document.getElementById("consult-dialog");
  if (node) return node;
  node = el("dialog", { id: "consult-dialog", class: "consult-dialog" },
    el("form", { method: "dialog", class: "stack", id: "consult-ask" },
      el("h2", {}, ct("ask")),
      el("p", { id: "consult-study", class: "muted" }),
      el("label", {}, ct("partner"), el("select", { name: "partner_id", id: "consult-partner" })),
      el("label", {}, ct("urgency"), el("select", { name: "urgency", id: "consult-urgency" },
        ["routine", "urgent", "emergency"].map((u) => el("option", { value: u }, ct(`urgency.${u}`))))),
      el("label", {}, ct("message"), el("textarea", { name: "message", id: "consult-message", rows: 4, required: true, maxlength: 4000 })),
      el("p", { class: "alert error", id: "consult-ask-error", hidden: true }),
      el("p", { class: "alert info", id: "consult-ask-done", hidden: true }),
      el("div", { class: "row" },
        el("button", { type: "button", class: "primary", id: "consult-send" }, ct("ask.send")),
        el("button", { type: "button", id: "consult-push" }, ct("push")),
        el("button", { value: "close" }, t("common.close")))));
  document.body.append(node);
  return node;
}

async function ask(study) {
  await strings();
  const node = dialog();
  const select = node.querySelector("#consult-partner");
  select.replaceChildren(el("option", { value: "" }, ct("partner.none")),
    ...(await partnerList()).map((p) => el("option", { value: p.id }, p.name)));
  node.querySelector("#consult-study").textContent = `${study.patient_name} · ${study.description || study.study_uid}`;
  const error = node.querySelector("#consult-ask-error");
  const done = node.querySelector("#consult-ask-done");
  error.hidden = done.hidden = true;
  const fail = (err) => { error.textContent = err.message; error.hidden = false; };
  node.querySelector("#consult-send").onclick = async () => {
    try {
      const made = await postJSON("/consult/api/requests", {
        study_uid: study.study_uid, partner_id: select.value || null,
        urgency: node.querySelector("#consult-urgency").value, message: node.querySelector("#consult-message").value,
      });
      done.textContent = made.link ? `${ct("ask.link")} ${made.link}` : ct("ask.done");
      done.hidden = false;
      error.hidden = true;
    } catch (err) { fail(err); }
  };
  node.querySelector("#consult-push").onclick = async () => {
    if (!select.value) return;
    try {
      await postJSON("/consult/api/pushes", { study_uid: study.study_uid, partner_id: Number(select.value) });
      done.textContent = ct("push.queued");
      done.hidden = false;
    } catch (err) { fail(err); }
  };
  node.showModal();
}

async function decorate(rows) {
  if (!rows.length || !staff) return;
  await strings();
  const uids = rows.map((r) => r.study_uid);
  let found = {};
  try { found = (await getJSON(`/consult/api/studies/status?uids=${uids.map(encodeURIComponent).join(",")}`)).studies; } catch { return; }
  for (const study of rows) {
    const tr = document.querySelector(`#wl-body tr[data-uid="${CSS.escape(study.study_uid)}"]`);
    if (!tr) continue;
    const status = tr.querySelector(".c-status");
    for (const c of found[study.study_uid] || []) {
      const badge = statusBadge(c.status);
      badge.title = ct(c.direction === "incoming" ? "badge.in" : "badge.out", { status: ct(`status.${c.status}`) });
      badge.classList.add("consult-badge", `dir-${c.direction}`);
      status?.append(badge);
      break; // the newest one says enough in a list
    }
    tr.querySelector(".c-actions")?.append(
      el("button", { type: "button", class: "small consult-button", onclick: (e) => { e.stopPropagation(); ask(study); } }, ct("ask.short")));
  }
}

document.addEventListener("pacs:worklist-rows", (e) => { decorate(e.detail || []); });
