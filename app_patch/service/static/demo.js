// Demo client for the image-rendering API. Every request carries the bearer token, so images
// are fetched as blobs and shown through blob: URLs. Text goes in with textContent only.
"use strict";

const API = "/api/v1/chat";
const state = { token: null, urls: [] };
const $ = (id) => document.getElementById(id);

function status(text) { $("status").textContent = text; }

async function authFetch(url) {
  const response = await fetch(url, { headers: { Authorization: "Bearer " + state.token } });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(response.status + ": " + (typeof detail === "string" ? detail : JSON.stringify(detail)));
  }
  return response;
}

async function blobUrl(url) {
  const blob = await (await authFetch(url)).blob();
  const objectUrl = URL.createObjectURL(blob);
  state.urls.push(objectUrl);
  return objectUrl;
}

function forgetBlobs() {
  state.urls.forEach((u) => URL.revokeObjectURL(u));
  state.urls = [];
}

async function download(upload) {
  try {
    const href = await blobUrl(upload.download_url);
    const a = document.createElement("a");
    a.href = href;
    a.download = upload.name || "download";
    document.body.appendChild(a);
    a.click();
    a.remove();
  } catch (err) {
    status("Download failed: " + err.message);
  }
}

async function openViewer(upload) {
  const full = $("full");
  full.dataset.fileId = upload.file_id;
  full.alt = upload.name;
  $("full-name").textContent = upload.name;
  $("full-download").onclick = (event) => { event.preventDefault(); download(upload); };
  try {
    full.onerror = async () => {  // a type the browser cannot show (TIFF, HEIC): largest thumbnail
      full.onerror = null;
      full.src = await blobUrl(upload.thumbnail_medium);
    };
    full.src = await blobUrl(upload.url);
    $("viewer").showModal();
  } catch (err) {
    status("Cannot open " + upload.name + ": " + err.message);
  }
}

function renderUpload(upload) {
  const box = document.createElement("div");
  box.className = "upload";
  box.dataset.fileId = upload.file_id;
  if (upload.is_image) {
    const img = document.createElement("img");
    img.className = "thumb";
    img.alt = upload.name;
    img.dataset.fileId = upload.file_id;
    img.addEventListener("click", () => openViewer(upload));
    box.appendChild(img);
    blobUrl(upload.thumbnail_url)
      .then((src) => { img.src = src; })
      .catch((err) => {
        img.remove();
        const note = document.createElement("span");
        note.className = "error";
        note.textContent = "no preview (" + err.message + ")";
        box.prepend(note);
      });
  }
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = upload.name + " · " + upload.mime + " · " + upload.size + " B";
  box.appendChild(name);
  const link = document.createElement("a");
  link.className = "download";
  link.href = upload.download_url;
  link.textContent = "Download";
  link.addEventListener("click", (event) => { event.preventDefault(); download(upload); });
  box.appendChild(link);
  return box;
}

function renderMessage(message) {
  const div = document.createElement("div");
  div.className = "msg " + (message.role === "assistant" ? "assistant" : "user");
  div.dataset.messageId = message.id;
  const role = document.createElement("div");
  role.className = "role";
  role.textContent = message.role + (message.created_at ? " · " + message.created_at : "");
  const text = document.createElement("div");
  text.className = "text";
  text.textContent = message.content || "";
  div.append(role, text);
  if (message.uploads.length) {
    const list = document.createElement("div");
    list.className = "uploads";
    message.uploads.forEach((u) => list.appendChild(renderUpload(u)));
    div.appendChild(list);
  }
  return div;
}

async function loadSession(sessionId) {
  forgetBlobs();
  const main = $("history");
  main.replaceChildren();
  status("Loading " + sessionId + " ...");
  try {
    const url = API + "/sessions/" + encodeURIComponent(sessionId) + "/history?limit=200";
    const body = await (await authFetch(url)).json();
    body.history.forEach((m) => main.appendChild(renderMessage(m)));
    const files = body.history.reduce((n, m) => n + m.uploads.length, 0);
    status(body.count + " messages, " + files + " files" + (body.has_more ? " (older ones not shown)" : ""));
    document.body.dataset.loaded = sessionId;
  } catch (err) {
    status("Cannot load the session: " + err.message);
  }
}

async function demoLogin() {
  try {
    const response = await fetch("/demo/login", { method: "POST" });
    if (!response.ok) throw new Error((await response.json()).detail || response.statusText);
    const body = await response.json();
    state.token = body.token;
    const select = $("sessions");
    select.replaceChildren();
    body.sessions.forEach((s) => {
      const option = document.createElement("option");
      option.value = s.session_id;
      option.textContent = (s.topic || s.session_id) + " (" + s.files + " files)";
      select.appendChild(option);
    });
    select.disabled = body.sessions.length === 0;
    if (body.sessions.length) await loadSession(body.sessions[0].session_id);
    else status("Logged in as " + body.user_id + "; no sessions.");
  } catch (err) {
    status("Demo login failed: " + err.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("demo-login").addEventListener("click", demoLogin);
  $("sessions").addEventListener("change", (e) => loadSession(e.target.value));
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("token").value.trim();
    if (state.token && $("session-id").value.trim()) loadSession($("session-id").value.trim());
  });
  $("close").addEventListener("click", () => $("viewer").close());
  const params = new URLSearchParams(location.search);
  if (params.get("autologin") !== "0") demoLogin();
});
