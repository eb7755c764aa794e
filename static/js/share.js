// The share dialog (worklist and viewer): make a link (expiry, PIN, download, de-identified,
// chosen series), see every link of the study with its status and opens, revoke one,
// and share with a referring doctor's account for a while.
//
// A new link's address and QR code come once, in the answer that made it; the
// server keeps only a hash of the token, so the dialog says: copy it now.

import { boot, t, el, getJSON, postJSON, deleteJSON, formatDate, formatName } from "./common.js";

const dialog = document.getElementById("share-dialog");
const form = document.getElementById("share-form");
const errorBox = document.getElementById("share-error");
const daysSelect = document.getElementById("share-days");
const seriesBox = document.getElementById("share-series");
const allSeries = document.getElementById("share-all-series");
const deidentify = document.getElementById("share-deidentify");
const burnedBox = document.getElementById("share-burned");
const result = document.getElementById("share-result");
const urlInput = document.getElementById("share-url");
const qrBox = document.getElementById("share-qr");
const linksList = document.getElementById("share-links");
const accountsList = document.getElementById("share-accounts");
const userSelect = document.getElementById("share-user");

const DAY_CHOICES = [1, 3, 7, 14, 30, 60, 90];
let study = null;
let burned = [];
let referring = null;

const studyUrl = (suffix = "") => `/api/studies/${encodeURIComponent(study.study_uid)}${suffix}`;

/** An ISO time as local date and time in the page's language. */
export function formatWhen(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(boot.lang === "vi" ? "vi-VN" : "en-GB", {
    day: "2-digit", month: "2-digit", year: "numeric", hour: "2-digit", minute: "2-digit",
  });
}

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = !message;
}

function options(link) {
  return [
    link.protected ? t("share.opt.pin") : "",
    link.can_download ? t("share.opt.download") : "",
    link.deidentify ? t("share.opt.deid") : "",
    link.series ? t("share.opt.series", { n: link.series.length }) : "",
  ].filter(Boolean).join(" · ");
}

function linkItem(link) {
  const live = link.status === "active" || link.status === "locked";
  const opened = link.open_count
    ? t("share.opened_times", { n: link.open_count, when: formatWhen(link.last_opened_at), from: link.last_opened_from })
    : t("share.never_opened");
  const history = (link.opens || []).map((o) => `${formatWhen(o.at)} · ${o.address} · ${o.agent}`).join("\n");
  return el("li", { class: `share-link status-${link.status}`, dataset: { link: link.id } },
    el("div", {},
      el("span", { class: `badge ${link.status}` }, t(`share.status.${link.status}`)), " ",
      el("strong", {}, link.label || `#${link.id}`), " ",
      el("span", { class: "muted" }, `${t("share.expires")}: ${formatWhen(link.expires_at)}`)),
    el("div", { class: "muted small", title: history || null }, [opened, options(link)].filter(Boolean).join(" · ")),
    live ? el("button", { type: "button", class: "small danger", dataset: { revoke: link.id },
      onclick: () => revoke(link.id) }, t("share.revoke")) : null);
}

function accountItem(a) {
  return el("li", { class: `share-link ${a.expired ? "status-expired" : "status-active"}` },
    el("div", {}, el("strong", {}, a.name ? `${a.name} (${a.username})` : a.username), " ",
      el("span", { class: "muted" }, `${t("share.expires")}: ${formatWhen(a.expires_at)}`)),
    el("button", { type: "button", class: "small danger", onclick: () => unshare(a.username) }, t("share.revoke")));
}

function showLists(data) {
  if (data.links) {
    linksList.replaceChildren(...(data.links.length ? data.links.map(linkItem) : [el("li", { class: "muted" }, t("common.none"))]));
  }
  if (data.accounts) {
    accountsList.replaceChildren(...(data.accounts.length ? data.accounts.map(accountItem) : [el("li", { class: "muted" }, t("common.none"))]));
  }
}

async function refresh() {
  const data = await getJSON(studyUrl("/shares"));
  burned = data.burned_in || [];
  daysSelect.replaceChildren(...DAY_CHOICES.filter((d) => d <= data.max_days).map((d) =>
    el("option", { value: d, selected: d === data.default_days }, t("share.n_days", { n: d }))));
  showLists(data);
  showBurned();
}

function showBurned() {
  burnedBox.hidden = !(deidentify.checked && burned.length);
}

function chosenSeries() {
  if (allSeries.checked) return null;
  return [...seriesBox.querySelectorAll("input:checked")].map((i) => i.value);
}

function showSeries(list) {
  seriesBox.replaceChildren(...list.map((s) => el("label", { class: "check" },
    el("input", { type: "checkbox", value: s.series_uid, checked: true, disabled: allSeries.checked }),
    ` ${s.number ?? ""} ${s.modality} ${s.description || ""} (${s.num_instances})`)));
}

/** Open the dialog for a study (a worklist item or the viewer's study JSON). */
export async function openShareDialog(studyInfo, seriesList = null) {
  study = studyInfo;
  showError("");
  result.hidden = true;
  form.reset();
  allSeries.checked = true;
  document.getElementById("share-study").textContent =
    [formatName(study.patient_name), study.patient_id, formatDate(study.study_date), study.description].filter(Boolean).join(" · ");
  if (!dialog.open) dialog.showModal();
  try {
    const list = seriesList ?? (await getJSON(studyUrl())).series;
    showSeries(list);
    await refresh();
    referring ??= (await getJSON("/api/users?role=referring")).users;
    userSelect.replaceChildren(...referring.map((u) => el("option", { value: u.username }, u.name ? `${u.name} (${u.username})` : u.username)));
    document.getElementById("share-user-add").disabled = !referring.length;
  } catch (err) {
    showError(err.message);
  }
}

async function revoke(id) {
  try {
    await postJSON(`/api/shares/${id}/revoke`, {});
    await refresh();
  } catch (err) { showError(err.message); }
}

async function unshare(username) {
  try {
    showLists(await deleteJSON(studyUrl(`/shares/accounts/${encodeURIComponent(username)}`)));
  } catch (err) { showError(err.message); }
}

function bind() {
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    showError("");
    const series = chosenSeries();
    if (series && !series.length) { showError(t("share.no_series")); return; }
    const body = {
      days: Number(daysSelect.value),
      pin: document.getElementById("share-pin").value.trim(),
      label: document.getElementById("share-label").value.trim(),
      download: document.getElementById("share-download").checked,
      deidentify: deidentify.checked,
      series,
    };
    try {
      const data = await postJSON(studyUrl("/shares"), body);
      urlInput.value = data.url;
      const svg = new DOMParser().parseFromString(data.qr_svg, "image/svg+xml").documentElement;
      qrBox.replaceChildren(document.importNode(svg, true));
      result.hidden = false;
      document.getElementById("share-pin").value = "";
      await refresh();
    } catch (err) {
      showError(err.message);
    }
  });

  document.getElementById("share-copy").addEventListener("click", async () => {
    urlInput.select();
    try {
      await navigator.clipboard.writeText(urlInput.value);
    } catch {
      document.execCommand?.("copy"); // plain http: no clipboard API
    }
  });

  document.getElementById("share-user-add").addEventListener("click", async () => {
    if (!userSelect.value) return;
    try {
      showLists(await postJSON(studyUrl("/shares"), { username: userSelect.value, days: Number(daysSelect.value) }));
    } catch (err) { showError(err.message); }
  });

  allSeries.addEventListener("change", () => {
    for (const box of seriesBox.querySelectorAll("input")) box.disabled = allSeries.checked;
  });
  deidentify.addEventListener("change", showBurned);
}

// Pages show the dialog to administrators and radiologists only; elsewhere this module is inert.
if (dialog) bind();
