// Parla playground: builds its form from GET /v1/engines, submits a job, follows it, plays the
// live preview and the result. The preview is the live HLS stream (GET /v1/videos/{id}/stream.m3u8)
// played by the vendored hls.js (vendor/hls.light.min.js, Media Source Extensions), which sends the
// API key with every request; without MSE, the browser's own HLS player when no key is needed (a
// <video src> sends no Authorization header), else the progressive MP4 (preview.mp4, fetched again
// with the key as chunks finish and played from a blob: URL). `?player=hls.js|native|mp4` picks one.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { engines: [], recorded: null, sample: null, job: null, shownChunks: 0, previewBusy: false, firstSeen: null, hls: null, player: null };
// What happened, for people debugging and for the browser test.
window.parlaPlayground = { log: [], state };

function note(type, details) {
  window.parlaPlayground.log.push({ type, at: performance.now(), ...details });
}

function headers() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function api(path, init = {}) {
  const response = await fetch(path, { ...init, headers: { ...headers(), ...(init.headers || {}) } });
  if (!response.ok) {
    let code = `http_${response.status}`, message = response.statusText;
    try {
      const body = await response.json();
      if (body.error) ({ code, message } = body.error);
    } catch (_) { /* not JSON */ }
    const error = new Error(`${code}: ${message}`);
    error.code = code;
    error.status = response.status;
    throw error;
  }
  return response;
}

function showStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

// --- the engine form -------------------------------------------------------------------------

function resolve(schema, root) {
  if (schema && schema.$ref) {
    const name = schema.$ref.split("/").pop();
    return resolve((root.$defs || {})[name] || {}, root);
  }
  return schema || {};
}

function optionInput(name, schema, root, fallback) {
  const field = resolve(schema, root);
  let input;
  if (field.enum) {
    input = document.createElement("select");
    for (const value of field.enum) input.append(new Option(String(value), JSON.stringify(value)));
    input.value = JSON.stringify(fallback);
    input.dataset.kind = "json";
  } else if (field.type === "boolean") {
    input = document.createElement("input");
    input.type = "checkbox";
    input.checked = Boolean(fallback);
    input.dataset.kind = "boolean";
  } else if (field.type === "number" || field.type === "integer") {
    input = document.createElement("input");
    input.type = "number";
    input.step = field.type === "integer" ? "1" : "any";
    if (field.minimum !== undefined) input.min = field.minimum;
    if (field.maximum !== undefined) input.max = field.maximum;
    input.value = fallback ?? "";
    input.dataset.kind = "number";
  } else {  // anyOf (e.g. a number or a preset word) and strings
    input = document.createElement("input");
    input.type = "text";
    input.value = fallback === undefined || fallback === null ? "" : String(fallback);
    input.dataset.kind = "loose";
    const choices = (field.anyOf || []).flatMap((part) => resolve(part, root).enum || []);
    if (choices.length) input.placeholder = `a number or ${choices.join(", ")}`;
  }
  input.name = name;
  input.addEventListener("change", () => { input.dataset.changed = "1"; });
  const label = document.createElement("label");
  label.append(`${field.title || schema.title || name} `, input);
  if (schema.description || field.description) {
    const help = document.createElement("span");
    help.className = "muted";
    help.textContent = ` ${schema.description || field.description}`;
    label.append(help);
  }
  return label;
}

function renderEngineOptions() {
  const engine = state.engines.find((item) => item.name === $("engine").value);
  const box = $("engine-options");
  box.replaceChildren();
  if (!engine) return;
  $("engine-summary").textContent = engine.summary;
  const properties = engine.options_schema.properties || {};
  if (!Object.keys(properties).length) box.append(Object.assign(document.createElement("p"), { className: "muted", textContent: "This engine has no options of its own." }));
  for (const [name, schema] of Object.entries(properties)) {
    box.append(optionInput(name, schema, engine.options_schema, engine.defaults[name]));
  }
}

function engineOptions() {
  const options = {};
  for (const input of $("engine-options").querySelectorAll("input, select")) {
    if (!input.dataset.changed) continue;  // unchanged: the server's default applies
    const kind = input.dataset.kind;
    if (kind === "boolean") options[input.name] = input.checked;
    else if (kind === "number") options[input.name] = Number(input.value);
    else if (kind === "json") options[input.name] = JSON.parse(input.value);
    else options[input.name] = input.value.trim() !== "" && !Number.isNaN(Number(input.value)) ? Number(input.value) : input.value;
  }
  return options;
}

async function loadEngines() {
  try {
    const body = await (await api("/v1/engines")).json();
    state.engines = body.data;
    const select = $("engine");
    select.replaceChildren(...state.engines.map((engine) => new Option(engine.name + (engine.default ? " (default)" : ""), engine.name, engine.default, engine.default)));
    renderEngineOptions();
    showStatus(state.engines.length ? "Ready." : "No engine is served right now.", !state.engines.length);
    note("engines", { names: state.engines.map((engine) => engine.name) });
  } catch (error) {
    showStatus(`Could not list the engines: ${error.message}`, true);
    note("error", { code: error.code, message: error.message });
  }
}

// --- recording ---------------------------------------------------------------------------------

let recorder = null;
async function toggleRecording() {
  if (recorder) { recorder.stop(); return; }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const parts = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (event) => parts.push(event.data);
    recorder.onstop = () => {
      stream.getTracks().forEach((track) => track.stop());
      state.recorded = new Blob(parts, { type: recorder.mimeType || "audio/webm" });
      recorder = null;
      $("record").textContent = "Record speech";
      $("record-state").textContent = `recorded ${(state.recorded.size / 1024).toFixed(0)} KiB (used when no file is chosen)`;
      $("recorded").src = URL.createObjectURL(state.recorded);
      $("recorded").hidden = false;
    };
    recorder.start();
    $("record").textContent = "Stop";
    $("record-state").textContent = "recording…";
  } catch (error) {
    $("record-state").textContent = `cannot record: ${error.message}`;
  }
}

async function useSample() {
  const fetchFile = async (name, type) => new File([await (await fetch(`sample/${name}`)).blob()], name, { type });
  state.sample = { image: await fetchFile("portrait.jpg", "image/jpeg"), audio: await fetchFile("speech.ogg", "audio/ogg") };
  $("sample-state").textContent = "sample chosen: portrait.jpg + speech.ogg (used where no file is chosen)";
  note("sample", {});
}

// --- a job ---------------------------------------------------------------------------------------

function formatEta(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

async function submit(event) {
  event.preventDefault();
  const sample = state.sample || {};
  const image = $("image").files[0] || sample.image;
  const recorded = state.recorded && new File([state.recorded], "speech.webm", { type: state.recorded.type });
  const audio = $("audio").files[0] || recorded || sample.audio;
  if (!image || !audio) { showStatus("Choose a portrait and a speech recording (or record one).", true); return; }
  const form = new FormData();
  form.append("image", image);
  form.append("audio", audio);
  form.append("engine", $("engine").value);
  for (const name of ["size", "fps", "seed", "framing"]) if ($(name).value !== "") form.append(name, $(name).value);
  const options = engineOptions();
  if (Object.keys(options).length) form.append("engine_options", JSON.stringify(options));
  stopHls();
  Object.assign(state, { shownChunks: 0, firstSeen: null, player: previewPlayer() });
  for (const id of ["preview", "result"]) $(id).removeAttribute("src");
  $("download").hidden = true;
  $("thumbnail").hidden = true;
  $("submit").disabled = true;
  try {
    const job = await (await api("/v1/videos", { method: "POST", body: form, headers: { "Idempotency-Key": crypto.randomUUID() } })).json();
    note("submitted", { id: job.id });
    $("job-id").textContent = job.id;
    follow(job.id);
  } catch (error) {
    showStatus(`Refused: ${error.message}`, true);
    note("error", { code: error.code, message: error.message });
    $("submit").disabled = false;
  }
}

async function follow(jobId) {
  let job;
  try {
    job = await (await api(`/v1/videos/${jobId}`)).json();
  } catch (error) {
    showStatus(`Lost the job: ${error.message}`, true);
    setTimeout(() => follow(jobId), 2000);
    return;
  }
  state.job = job;
  const p = job.progress;
  const fraction = p.frames_total ? p.frames_done / p.frames_total : 0;
  $("progress").value = fraction;
  showStatus(`${job.status}: ${p.frames_done}/${p.frames_total || "?"} frames, ${p.chunks_done}/${p.chunks_total || "?"} chunks`);
  const now = performance.now() / 1000;
  if (job.status === "running" && p.frames_total) {
    if (!state.firstSeen) state.firstSeen = { at: now, frames: p.frames_done };
    const rate = (p.frames_done - state.firstSeen.frames) / (now - state.firstSeen.at || 1);
    $("eta").textContent = rate > 0 ? `about ${formatEta((p.frames_total - p.frames_done) / rate)} left` : "";
  }
  if (p.chunks_done > state.shownChunks && job.status !== "succeeded") showPreview(job);
  if (state.hls) $("preview-chunks").textContent = `${p.chunks_done}/${p.chunks_total} chunks`;  // hls.js follows the playlist
  if (["succeeded", "failed", "canceled"].includes(job.status)) { finished(job); return; }
  setTimeout(() => follow(jobId), 400);
}

// --- the live preview ----------------------------------------------------------------------------

function previewPlayer() {
  const asked = new URLSearchParams(location.search).get("player");
  if (["hls.js", "native", "mp4"].includes(asked)) return asked;
  if (window.Hls && window.Hls.isSupported()) return "hls.js";
  const nativeHls = $("preview").canPlayType("application/vnd.apple.mpegurl") !== "";
  return nativeHls && !headers().Authorization ? "native" : "mp4";
}

function stopHls() {
  if (state.hls) { state.hls.destroy(); state.hls = null; }
}

async function showThumbnail(job) {
  const thumb = await (await api(`/v1/videos/${job.id}/thumbnail.jpg`)).blob();
  $("thumbnail").src = URL.createObjectURL(thumb);
  $("thumbnail").hidden = false;
}

// Notes the first moment the stream plays (its clock moves), with the job's status then.
function watchStream(video, player) {
  const playing = () => {
    if (video.currentTime <= 0) return;
    video.removeEventListener("timeupdate", playing);
    $("thumbnail").hidden = true;
    note("stream-playing", { player, status: state.job.status, currentTime: video.currentTime, readyState: video.readyState, width: video.videoWidth, audioBytes: video.webkitAudioDecodedByteCount });
  };
  video.addEventListener("timeupdate", playing);
  video.addEventListener("error", () => note("preview-error", { player, code: video.error && video.error.code }), { once: true });
}

async function startStream(job) {
  state.shownChunks = job.progress.chunks_done;
  await showThumbnail(job).catch((error) => note("preview-error", { message: error.message }));
  const video = $("preview");
  const source = `/v1/videos/${job.id}/stream.m3u8`;
  watchStream(video, state.player);
  if (state.player === "native") {
    video.src = source;
    video.play().catch(() => {});
    return;
  }
  const key = headers().Authorization;
  // startPosition 0: the viewer sees the video from its first frame, not from the live edge.
  const hls = new window.Hls({ startPosition: 0, xhrSetup: (xhr) => { if (key) xhr.setRequestHeader("Authorization", key); } });
  state.hls = hls;
  hls.on(window.Hls.Events.LEVEL_UPDATED, (_, data) => {
    note("stream-playlist", { segments: data.details.fragments.length, live: data.details.live, status: state.job.status });
  });
  hls.on(window.Hls.Events.ERROR, (_, data) => {
    if (!data.fatal) { note("stream-stall", { details: data.details }); return; }  // hls.js recovers
    note("preview-error", { player: "hls.js", details: data.details });
    stopHls();
    state.player = "mp4";  // carry on with the progressive MP4
  });
  hls.loadSource(source);
  hls.attachMedia(video);
  video.play().catch(() => {});
}

async function showPreview(job) {
  if (state.previewBusy) return;
  if (state.player !== "mp4") {
    if (!state.shownChunks) {
      state.previewBusy = true;
      try { await startStream(job); } finally { state.previewBusy = false; }
    }
    return;
  }
  state.previewBusy = true;
  const chunks = job.progress.chunks_done;
  try {
    if (!state.shownChunks) await showThumbnail(job);
    const blob = await (await api(`/v1/videos/${job.id}/preview.mp4`)).blob();
    const video = $("preview");
    const resumeAt = video.currentTime || 0;
    const old = video.src;
    video.src = URL.createObjectURL(blob);
    video.addEventListener("loadeddata", () => {
      note("preview", { player: "mp4", chunks, status: state.job.status, duration: video.duration, readyState: video.readyState, width: video.videoWidth });
      video.currentTime = Math.min(resumeAt, video.duration || 0);  // go on where the viewer was
      $("thumbnail").hidden = true;
      video.play().catch(() => {});
      if (old) URL.revokeObjectURL(old);
    }, { once: true });
    video.addEventListener("error", () => note("preview-error", { code: video.error && video.error.code }), { once: true });
    state.shownChunks = chunks;
    $("preview-chunks").textContent = `${chunks}/${job.progress.chunks_total} chunks`;
  } catch (error) {
    note("preview-error", { message: error.message });
  } finally {
    state.previewBusy = false;
  }
}

async function finished(job) {
  $("submit").disabled = false;
  $("eta").textContent = "";
  if (job.status !== "succeeded") {
    const reason = job.error ? `${job.error.code}: ${job.error.message}` : "";
    showStatus(`${job.status} ${reason}`, job.status === "failed");
    note(job.status, { error: job.error });
    return;
  }
  try {
    const blob = await (await api(`/v1/videos/${job.id}/video`)).blob();
    const url = URL.createObjectURL(blob);
    const video = $("result");
    video.addEventListener("loadeddata", () => note("result", { duration: video.duration, readyState: video.readyState, bytes: blob.size }), { once: true });
    video.addEventListener("error", () => note("result-error", { code: video.error && video.error.code }), { once: true });
    video.src = url;
    Object.assign($("download"), { href: url, download: `${job.id}.mp4`, hidden: false });
    showStatus(`succeeded: ${job.result.duration_s.toFixed(2)} s, ${job.result.width}×${job.result.height}`);
  } catch (error) {
    showStatus(`Could not download the video: ${error.message}`, true);
  }
}

// --- wiring ------------------------------------------------------------------------------------

$("api-key").value = localStorage.getItem("parla-api-key") || "";
$("api-key").addEventListener("change", () => { localStorage.setItem("parla-api-key", $("api-key").value.trim()); loadEngines(); });
$("engine").addEventListener("change", renderEngineOptions);
$("record").addEventListener("click", toggleRecording);
$("use-sample").addEventListener("click", useSample);
$("job-form").addEventListener("submit", submit);
loadEngines();
