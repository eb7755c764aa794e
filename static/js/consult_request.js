// One consultation request: its facts, the message, the answer, and (asked of us) the answer form.

import { getJSON, postJSON, el, boot } from "./common.js";
import { ct, requestView, keyImagePicker, showError, pushProgress } from "./consult_common.js";

const article = document.getElementById("request");
const form = document.getElementById("answer-form");
let chosen = () => [];

async function load() {
  const item = await getJSON(`/consult/api/requests/${boot.id}`);
  article.replaceChildren(...[
    ...requestView(item),
    el("p", {}, el("a", { class: "button primary", id: "open-images", href: `/viewer/${encodeURIComponent(item.study_uid)}` }, ct("open_images"))),
    item.push ? el("p", { class: "push-line" }, pushProgress(item.push)) : null,
  ].filter(Boolean));
  const canAnswer = item.direction === "incoming" && !["answered", "failed", "cancelled"].includes(item.status);
  form.hidden = !canAnswer;
  if (canAnswer && !form.dataset.ready) {
    form.dataset.ready = "1";
    try {
      chosen = keyImagePicker(document.getElementById("key-images"), await getJSON(`/consult/api/requests/${boot.id}/images`));
    } catch (err) { showError(err); }
  }
  if (!["answered", "failed", "cancelled"].includes(item.status)) setTimeout(() => load().catch(showError), 4000);
}

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const button = document.getElementById("answer-send");
  button.disabled = true;
  try {
    await postJSON(`/consult/api/requests/${boot.id}/answer`, { text: form.elements.text.value, key_images: chosen() });
    showError(null);
    await load();
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
  }
});

load().catch(showError);
