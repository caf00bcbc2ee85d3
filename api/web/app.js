// The Echo-TTS web page: a client of the JSON API (/v1/...) and nothing else.
//
// No framework and no build step: the API serves this file as it is. It talks to the same endpoints
// as curl or echo_client, with the API key (kept in localStorage) as `Authorization: Bearer ...`.
// Live progress comes from the server-sent events endpoints, read with fetch() because EventSource
// cannot send an Authorization header; when a stream cannot be opened the page polls instead.

const KEY_STORAGE = "echo-tts:api-key";
const TERMINAL = new Set(["succeeded", "failed", "canceled", "expired"]);
const POLL_MS = 1000;

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------------
// The API key

function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

function showKeyState() {
  $("key-state").textContent = apiKey() ? "key saved in this browser" : "no key: works when auth is off";
}

function saveKey(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
  showKeyState();
  loadVoices(); // the voices are per key
}

function forgetKey() {
  localStorage.removeItem(KEY_STORAGE);
  $("api-key").value = "";
  showKeyState();
  loadVoices();
}

// ---------------------------------------------------------------------------------------------
// Talking to the API

// An answer that is not 2xx, carrying the API's error envelope {"error": {code, message, details}}.
class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || `http_${status}`;
    this.details = error.details || {};
  }
}

function authHeaders(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

// fetch() with the key; throws ApiError for an error answer. The body is left unread.
async function request(method, path, { json, form, headers = {}, signal } = {}) {
  const init = { method, headers: authHeaders(headers), signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form; // the browser sets the multipart boundary itself
  }
  const response = await fetch(path, init);
  if (!response.ok) throw new ApiError(response.status, await readJson(response));
  return response;
}

async function call(method, path, options) {
  return (await request(method, path, options)).json();
}

// The body as JSON, or null: a proxy in front of the API may answer with HTML.
async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// Showing errors

// "code: message" plus every field the API named, so a 422 says what to fix.
function describe(error) {
  if (!(error instanceof ApiError)) return `Could not reach the API: ${error.message}`;
  const fields = (error.details.errors || []).map((e) => `${e.field}: ${e.message}`);
  const extra = fields.filter((line) => !error.message.includes(line));
  const status = error.status ? `, HTTP ${error.status}` : ""; // 0: a job's own error, not an answer
  return [`${error.message} (${error.code}${status})`, ...extra].join("\n");
}

function showError(element, error) {
  element.textContent = describe(error);
  element.dataset.code = error instanceof ApiError ? error.code : "network";
  element.hidden = false;
}

function clearError(element) {
  element.textContent = "";
  delete element.dataset.code;
  element.hidden = true;
}

// ---------------------------------------------------------------------------------------------
// Choices: presets and formats come from the OpenAPI document (public), voices from /v1/voices

function fillSelect(select, values, chosen) {
  select.replaceChildren(
    ...values.map((value) => {
      const option = new Option(value, value);
      option.selected = value === chosen;
      return option;
    }),
  );
}

async function loadOptions() {
  // The document is the API's own list of presets and formats: the page never drifts from it.
  const schemas = (await call("GET", "/v1/openapi.json")).components.schemas;
  const job = schemas.JobCreate.properties;
  const book = schemas.BookCreate.properties;
  fillSelect($("preset"), job.preset.enum, job.preset.default);
  fillSelect($("format"), job.format.enum, job.format.default);
  fillSelect($("book-format"), book.format.enum, book.format.default);
}

function voiceLabel(voice) {
  const owner = voice.operator ? "shared" : "yours";
  return voice.status === "ready" ? `${voice.name} (${owner})` : `${voice.name} (${owner}, ${voice.status})`;
}

async function loadVoices(select = null) {
  const chosen = select || $("voice").value;
  try {
    const { voices } = await call("GET", "/v1/voices");
    const options = voices.filter((v) => v.status !== "failed").map((v) => new Option(voiceLabel(v), v.id));
    $("voice").replaceChildren(new Option("None (unconditioned)", ""), ...options);
    $("voice").value = voices.some((v) => v.id === chosen) ? chosen : "";
    clearError($("page-error"));
  } catch (error) {
    showError($("page-error"), error); // typically 401: the key is missing or wrong
  }
}

async function uploadVoice(event) {
  event.preventDefault();
  clearError($("voice-error"));
  const file = $("voice-file").files[0];
  const form = new FormData();
  if (file) form.append("file", file); // none: the API's own message says the file is required
  if ($("voice-name").value.trim()) form.append("name", $("voice-name").value.trim());
  try {
    const voice = await call("POST", "/v1/voices", { form });
    $("voice-state").textContent = `Uploaded ${voice.name}: ${voice.status} (a worker encodes it once).`;
    await loadVoices(voice.id);
  } catch (error) {
    showError($("voice-error"), error);
  }
}

// The sampler fields every submission shares; blank fields are left to the API's defaults.
function samplerOptions() {
  const options = { preset: $("preset").value };
  if ($("voice").value) options.voice = $("voice").value;
  if ($("steps").value !== "") options.overrides = { num_steps: Number($("steps").value) };
  if ($("seed").value !== "") options.seed = Number($("seed").value);
  return options;
}

// ---------------------------------------------------------------------------------------------
// Following a job or a book: server-sent events over fetch(), polling as the fallback

// Calls onView with each state of the record until it is final; returns the final view.
// panel.dataset.via says how the page is following it ("events" or "polling").
async function follow(path, onView, signal, panel) {
  let lastId = null;
  for (;;) {
    let outcome;
    try {
      outcome = await readEvents(`${path}/events`, lastId, onView, signal, panel);
    } catch (error) {
      // 401/404 are answers about the record itself; anything else (no stream support, a proxy
      // that buffers, 503 when the API's stream slots are taken) is a reason to poll instead.
      if (signal.aborted || (error instanceof ApiError && [401, 404].includes(error.status))) throw error;
      panel.dataset.via = "polling";
      return poll(path, onView, signal);
    }
    if (outcome.final) return outcome.final;
    lastId = outcome.lastId; // the stream ended early (its 10-minute cap): resume where it was
  }
}

// Reads one event stream to its end. Resolves {final} after a done event, or {lastId} when the
// stream closed without one.
async function readEvents(path, lastId, onView, signal, panel) {
  const headers = { Accept: "text/event-stream" };
  if (lastId) headers["Last-Event-ID"] = lastId;
  const response = await request("GET", path, { headers, signal });
  panel.dataset.via = "events";
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return { lastId };
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const message = parseEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (message.id) lastId = message.id;
      if (message.event === "gone") throw new ApiError(404, JSON.parse(message.data));
      if (message.data === undefined) continue; // retry: or a keep-alive comment
      const view = JSON.parse(message.data);
      onView(view);
      if (message.event === "done") {
        reader.cancel();
        return { final: view };
      }
    }
  }
}

// One event block ("id: ...\nevent: ...\ndata: ...") as {id, event, data}.
function parseEvent(block) {
  const message = { event: "message" };
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue; // a comment (keep-alive)
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "data") message.data = message.data === undefined ? value : `${message.data}\n${value}`;
    else if (field === "event" || field === "id") message[field] = value;
  }
  return message;
}

async function poll(path, onView, signal) {
  for (;;) {
    const view = await call("GET", path, { signal });
    onView(view);
    if (TERMINAL.has(view.status)) return view;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    if (signal.aborted) throw signal.reason;
  }
}

// ---------------------------------------------------------------------------------------------
// Audio: a source the <audio> element can play

// Result URLs on another origin are presigned S3/MinIO URLs: they carry their own signature.
function isPresigned(url) {
  return new URL(url, location.href).origin !== location.origin;
}

// A presigned URL needs no key and plays as it is. The API's own URL (local storage) needs the key,
// which an <audio> element cannot send: fetch it as a blob instead.
async function playableUrl(url, signal) {
  const target = new URL(url, location.href);
  if (isPresigned(url)) return { url: target.href, blob: false };
  const blob = await (await request("GET", target.pathname + target.search, { signal })).blob();
  return { url: URL.createObjectURL(blob), blob: true };
}

function setSource(audio, link, source, filename) {
  if (audio.dataset.blob === "true") URL.revokeObjectURL(audio.src); // free the last one
  audio.dataset.blob = String(source.blob);
  audio.src = source.url;
  audio.hidden = false;
  link.href = source.url;
  link.download = filename; // honoured for blob: URLs; a presigned URL names the file itself
  link.hidden = false;
}

// ---------------------------------------------------------------------------------------------
// Speech jobs

let jobRun = null; // {id, controller} of the job being followed

function jobBody() {
  return { text: $("text").value, format: $("format").value, ...samplerOptions() };
}

function showJob(job) {
  const p = job.progress;
  $("job").dataset.id = job.id;
  $("job").dataset.status = job.status;
  $("job-progress").value = job.status === "succeeded" ? 1 : p.fraction;
  const pieces = p.segments_total > 1 ? `, piece ${Math.min(p.segments_done + 1, p.segments_total)}/${p.segments_total}` : "";
  const step = job.status === "running" && p.total_steps ? ` — step ${p.step}/${p.total_steps}${pieces}` : "";
  $("job-state").textContent = `${job.status} ${Math.round(p.fraction * 100)}%${step}`;
}

async function submitJob(event) {
  event.preventDefault();
  if (jobRun) jobRun.controller.abort(); // a new job replaces the one on screen
  const controller = new AbortController();
  clearError($("job-error"));
  resetJobView();
  try {
    const job = await call("POST", "/v1/jobs", { json: jobBody(), signal: controller.signal });
    jobRun = { id: job.id, controller };
    $("job").hidden = false;
    $("job-cancel").hidden = false;
    showJob(job);
    const final = await follow(`/v1/jobs/${job.id}`, showJob, controller.signal, $("job"));
    await finishJob(final, controller.signal);
  } catch (error) {
    if (!controller.signal.aborted) showError($("job-error"), error);
  } finally {
    if (jobRun && jobRun.controller === controller) $("job-cancel").hidden = true;
  }
}

function resetJobView() {
  $("job").hidden = true;
  delete $("job").dataset.via;
  $("job-audio").hidden = true;
  $("job-audio").removeAttribute("src");
  $("job-download").hidden = true;
  $("job-note").textContent = "";
}

async function finishJob(job, signal) {
  if (job.status !== "succeeded") {
    if (job.error) showError($("job-error"), new ApiError(0, { error: job.error }));
    return;
  }
  const result = job.result;
  const filename = `${job.id}.${result.format === "aac" ? "m4a" : result.format}`;
  const source = await playableUrl(result.url, signal);
  setSource($("job-audio"), $("job-download"), source, filename);
  if (result.format === "pcm") {
    // raw samples have no header: a browser cannot play them, but the download is the file
    $("job-audio").hidden = true;
    $("job-note").textContent = `raw 16-bit PCM at ${result.sample_rate} Hz: download only`;
  } else {
    $("job-note").textContent = `${result.duration_s.toFixed(2)} s, ${result.bytes} bytes`;
  }
}

async function cancelJob() {
  if (!jobRun) return;
  try {
    showJob(await call("DELETE", `/v1/jobs/${jobRun.id}`)); // the stream then brings "canceled"
  } catch (error) {
    showError($("job-error"), error);
  }
}

// ---------------------------------------------------------------------------------------------
// Audiobooks

let bookRun = null;

function bookForm() {
  const form = new FormData();
  const file = $("book-file").files[0];
  if (file) form.append("file", file); // none: the API says which field is missing
  const options = { ...samplerOptions(), format: $("book-format").value };
  for (const [name, value] of Object.entries(options)) {
    form.append(name, typeof value === "object" ? JSON.stringify(value) : String(value));
  }
  return form;
}

function showBook(book) {
  $("book-view").dataset.id = book.id;
  $("book-view").dataset.status = book.status;
  $("book-progress").value = book.status === "succeeded" ? 1 : book.progress;
  const eta = book.eta_s ? `, about ${Math.ceil(book.eta_s)} s left` : "";
  $("book-state").textContent =
    `${book.title}: ${book.status}, ${book.segments_done}/${book.segments_total} segments${eta}`;
  showChapters(book.chapters);
}

// One <li> per chapter, updated in place: an assembled chapter's player is set once, since its
// presigned URL changes on every read and a new src would restart playback.
function showChapters(chapters) {
  const list = $("chapters");
  for (const chapter of chapters) {
    let item = list.querySelector(`li[data-index="${chapter.index}"]`);
    if (!item) {
      item = document.createElement("li");
      item.dataset.index = chapter.index;
      item.append(document.createElement("span"));
      list.append(item);
    }
    item.dataset.status = chapter.status;
    const length = chapter.duration_s ? `, ${chapter.duration_s.toFixed(1)} s` : "";
    item.firstChild.textContent =
      `${chapter.title} — ${chapter.status} (${chapter.segments_done}/${chapter.segments_total})${length}`;
    if (chapter.url && !item.dataset.player) addChapterPlayer(item, chapter);
  }
}

// A chapter's player. A presigned URL plays as it is; the API's own URL (local storage) is fetched only
// when asked: a book's files can be large, and a fetched file is held in the page's memory.
function addChapterPlayer(item, chapter) {
  item.dataset.player = "true";
  const audio = document.createElement("audio");
  audio.controls = true;
  audio.preload = "metadata";
  if (isPresigned(chapter.url)) {
    audio.src = chapter.url;
    item.append(audio);
    return;
  }
  const load = document.createElement("button");
  load.type = "button";
  load.textContent = "Load audio";
  load.addEventListener("click", async () => {
    load.disabled = true;
    try {
      audio.src = (await playableUrl(chapter.url, bookRun.controller.signal)).url;
      load.replaceWith(audio);
    } catch (error) {
      load.disabled = false;
      showError($("book-error"), error);
    }
  });
  item.append(load);
}

// The M4B link: a presigned URL as it is; the API's own URL is fetched with the key on the first click.
function offerDownload(link, url, filename, signal) {
  link.download = filename;
  link.hidden = false;
  if (isPresigned(url)) {
    link.href = url;
    return;
  }
  link.href = "#";
  link.onclick = async (event) => {
    event.preventDefault();
    try {
      link.href = (await playableUrl(url, signal)).url;
      link.onclick = null;
      link.click(); // now a blob: URL, saved under link.download
    } catch (error) {
      showError($("book-error"), error);
    }
  };
}

async function submitBook(event) {
  event.preventDefault();
  if (bookRun) bookRun.controller.abort();
  const controller = new AbortController();
  bookRun = { id: null, controller };
  clearError($("book-error"));
  $("book-view").hidden = true;
  $("book-download").hidden = true;
  $("chapters").replaceChildren();
  try {
    const book = await call("POST", "/v1/audiobooks", { form: bookForm(), signal: controller.signal });
    bookRun.id = book.id;
    $("book-view").hidden = false;
    $("book-cancel").hidden = false;
    showBook(book);
    const final = await follow(`/v1/audiobooks/${book.id}`, showBook, controller.signal, $("book-view"));
    if (final.status === "succeeded") {
      offerDownload($("book-download"), final.result.m4b_url, `${book.id}.m4b`, controller.signal);
    } else if (final.error) {
      showError($("book-error"), new ApiError(0, { error: final.error }));
    }
  } catch (error) {
    if (!controller.signal.aborted) showError($("book-error"), error);
  } finally {
    if (bookRun.controller === controller) $("book-cancel").hidden = true;
  }
}

async function cancelBook() {
  if (!bookRun || !bookRun.id) return;
  try {
    showBook(await call("DELETE", `/v1/audiobooks/${bookRun.id}`));
  } catch (error) {
    showError($("book-error"), error);
  }
}

// ---------------------------------------------------------------------------------------------

async function start() {
  $("api-key").value = apiKey();
  showKeyState();
  $("key-form").addEventListener("submit", saveKey);
  $("key-forget").addEventListener("click", forgetKey);
  $("voice-form").addEventListener("submit", uploadVoice);
  $("job-form").addEventListener("submit", submitJob);
  $("job-cancel").addEventListener("click", cancelJob);
  $("book-form").addEventListener("submit", submitBook);
  $("book-cancel").addEventListener("click", cancelBook);
  try {
    await loadOptions();
  } catch (error) {
    showError($("page-error"), error);
  }
  await loadVoices();
  document.body.dataset.ready = "true"; // the tests wait for this
}

start();
