// A consultation link's page: the request, the images in the viewer, and the answer form.

import { getJSON, postJSON, el } from "./common.js";
import { ct, requestView, keyImagePicker, showError } from "./consult_common.js";

const article = document.getElementById("request");
const form = document.getElementById("answer-form");
let chosen = () => [];

async function load() {
  const item = await getJSON("/consult/link/api");
  article.replaceChildren(...[
    ...requestView(item),
    el("p", {}, el("a", { class: "button primary", id: "open-images", href: `/viewer/${encodeURIComponent(item.study_uid)}` }, ct("open_images"))),
  ].filter(Boolean));
  const canAnswer = !["answered", "failed", "cancelled"].includes(item.status);
  form.hidden = !canAnswer;
  if (canAnswer && !form.dataset.ready) {
    form.dataset.ready = "1";
    chosen = keyImagePicker(document.getElementById("key-images"), item.images);
  }
}

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const button = document.getElementById("answer-send");
  button.disabled = true;
  try {
    await postJSON("/consult/link/api/answer", {
      text: form.elements.text.value, author: form.elements.author.value, key_images: chosen(),
    });
    showError(null);
    await load();
  } catch (err) {
    showError(err);
  } finally {
    button.disabled = false;
  }
});

load().catch(showError);
