// The voxgate console: connects over WebRTC exactly as a browser app connects to the hosted
// Realtime API (mic track + "oai-events" data channel, SDP offer POSTed to /realtime/calls),
// then shows the conversation, turn latency and usage as they happen.

// Hosted gpt-realtime list prices, USD per million tokens. voxgate itself charges nothing;
// the figure says what the same traffic would cost there, so it is labelled an estimate.
const PRICES_PER_MILLION = {
  textIn: 4.0,
  cachedTextIn: 0.4,
  audioIn: 32.0,
  cachedAudioIn: 0.4,
  textOut: 16.0,
  audioOut: 64.0,
};
// RMS (full scale = 1) above which the assistant counts as audible: far above the near-zero
// samples a WebRTC receiver plays while nothing arrives, far below speech (~0.05-0.2).
const AUDIBLE_RMS = 0.01;
const METER_INTERVAL_MS = 20;
const MAX_EVENTS = 5000; // the test-facing event log is bounded like every other buffer
const API_BASE = `${location.origin}/v1`;
const KEY_STORAGE = "voxgate.apiKey";
// Client secrets (minted by an app's backend) are short-lived and single-use: never stored.
const SECRET_PREFIX = "ek_";
// Error codes with which the server ends a session, and what the console calls them.
const END_REASONS = {
  session_duration_exceeded: "the session reached its maximum duration",
  idle_timeout: "the session was idle for too long",
  budget_exceeded: "a budget was used up",
  api_key_revoked: "the API key was revoked",
  client_secret_revoked: "the client secret was revoked",
  server_shutting_down: "the server is restarting",
};
// Refusals that a policy or a client secret's binding gives to a session.update.
const POLICY_CODES = new Set([
  "bound_by_client_secret",
  "model_not_allowed",
  "voice_not_allowed",
  "tool_not_allowed",
]);

const $ = (id) => document.getElementById(id);

// Live figures, read by people through the page and by tests through window.voxgate.
const stats = {
  state: "idle",
  peerState: null, // the RTCPeerConnection's connectionState
  callId: null,
  model: null, // the session's model as the server last reported it
  speaking: false,
  userTranscripts: [],
  assistantTranscripts: [],
  assistantAudioMs: 0,
  level: 0,
  peakLevel: 0,
  audible: false,
  lastAudibleAt: null,
  events: [],
  lastEventAt: {}, // type -> performance.now() of its latest arrival
  latenciesMs: [],
  responseStatuses: [],
  usage: { responses: 0, input_tokens: 0, output_tokens: 0, total_tokens: 0 },
  costUsd: 0,
  errors: [],
  errorCodes: [], // the code of every error shown, in order
  endReason: null, // the code the server ended the session with, if it did
};
// From the devtools console, window.voxgate.send({type: ...}) sends any client event.
window.voxgate = Object.assign(stats, { send: (event) => send(event) });

let call = null; // { pc, dc, mic, callId } while connected or connecting
let endMessage = null; // why the server ended the session, once it said so
let audioCtx = null;
let meter = null; // { analyser, samples, timer, lastTick }
let turn = null; // { since, armed }: a user turn ended, waiting for the reply to be heard
const items = new Map(); // item id -> { role, el, text }
const callNames = new Map(); // function call_id -> name, to label results

// ---- connection ---------------------------------------------------------------------------

async function connect(event) {
  event?.preventDefault();
  if (call || stats.state === "connecting") return;
  clearMessage();
  stats.callId = null;
  stats.endReason = null;
  endMessage = null;
  $("connect").disabled = true; // one call at a time
  setState("connecting");
  // Created inside the click, so browsers let it run; the level meter needs it.
  audioCtx ??= new AudioContext();
  audioCtx.resume();
  if (!usingClientSecret()) localStorage.setItem(KEY_STORAGE, $("api-key").value);
  let mic;
  try {
    mic = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    setState("idle");
    setButtons(false);
    showError(microphoneMessage(err));
    return;
  }
  const pc = new RTCPeerConnection();
  const dc = pc.createDataChannel("oai-events");
  const current = { pc, dc, mic, callId: null };
  call = current;
  const live = () => call === current; // handlers of an old call must not touch a new one
  pc.ontrack = (e) => live() && playRemote(e.streams[0] ?? new MediaStream([e.track]));
  pc.onconnectionstatechange = () => live() && onPeerState(pc.connectionState);
  dc.onopen = () => live() && onChannelOpen();
  dc.onmessage = (e) => live() && onServerEvent(JSON.parse(e.data));
  dc.onclose = () => live() && endCall(endMessage ?? "The session ended: the server closed the event channel.");
  for (const track of mic.getAudioTracks()) pc.addTrack(track, mic);
  try {
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const res = await fetch(`${API_BASE}/realtime/calls`, {
      method: "POST",
      body: offer.sdp,
      headers: { ...authHeader(), "Content-Type": "application/sdp" },
    });
    if (!res.ok) throw new Error(await httpErrorMessage(res));
    current.callId = res.headers.get("Location")?.split("/").pop() ?? null;
    stats.callId = current.callId;
    await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
  } catch (err) {
    if (live()) endCall(`Could not connect: ${err.message}`);
  }
}

async function httpErrorMessage(res) {
  let detail = res.statusText;
  let code = null;
  try {
    const error = (await res.json()).error;
    detail = error?.message ?? detail;
    code = error?.code ?? null;
  } catch {
    // not JSON: the status text is all there is
  }
  if (code) stats.errorCodes.push(code);
  const why = code ? ` (${code})` : "";
  return `the server answered ${res.status}${why}: ${detail}`;
}

function microphoneMessage(err) {
  switch (err?.name) {
    case "NotAllowedError":
      return "Microphone access was refused. Allow the microphone for this page in the browser's site settings, then press Connect again.";
    case "NotFoundError":
      return "No microphone was found. Connect one, then press Connect again.";
    case "NotReadableError":
      return "The microphone could not be opened; another application may be using it.";
    default:
      if (!navigator.mediaDevices) {
        return "This page cannot use the microphone: browsers allow it only on https:// pages or http://localhost.";
      }
      return `Could not open the microphone: ${err?.message ?? err}`;
  }
}

function onChannelOpen() {
  setState("connected");
  setButtons(true);
}

function onPeerState(state) {
  stats.peerState = state;
  if (state === "failed") {
    endCall("The connection failed: no network path to the server was found (ICE) or the secure handshake did not complete.");
  } else if (state === "disconnected") {
    showMessage("The connection was interrupted; waiting for it to recover…", "info");
    $("message").dataset.recovering = "1";
  } else if (state === "connected" && $("message").dataset.recovering) {
    // Only the interruption notice goes away on recovery; a message shown meanwhile
    // (such as the client-secret notice) stays.
    clearMessage();
  }
}

async function hangUp() {
  const current = call;
  if (!current) return;
  if (current.callId) {
    const url = `${API_BASE}/realtime/calls/${encodeURIComponent(current.callId)}/hangup`;
    try {
      await fetch(url, { method: "POST", headers: authHeader() });
    } catch {
      // the server is gone already; closing our side is all that is left
    }
  }
  if (call === current) endCall("Call ended.", "info");
}

function endCall(message, kind = "error") {
  const current = call;
  call = null;
  if (current) {
    current.dc.close();
    current.pc.close();
    for (const track of current.mic.getTracks()) track.stop();
  }
  stopMeter();
  turn = null;
  setSpeaking(false);
  setButtons(false);
  setState("ended");
  if (kind === "error") showError(message);
  else showMessage(message, kind);
}

function authHeader() {
  return { Authorization: `Bearer ${$("api-key").value.trim() || "dev"}` };
}

function usingClientSecret() {
  return $("api-key").value.trim().startsWith(SECRET_PREFIX);
}

function showModel(session) {
  stats.model = session?.model ?? null;
  $("model").textContent = stats.model ?? "–";
}

function onSessionCreated() {
  if (usingClientSecret()) {
    // The secret fixed the session's configuration when it was minted; changing a bound
    // field would be refused, so the console keeps what the secret says.
    showMessage("Connected with a client secret: its session configuration applies.", "info");
    return;
  }
  send({ type: "session.update", session: sessionSettings() });
}

function onError(e) {
  const code = e.error?.code ?? null;
  const message = e.error?.message ?? "unknown";
  if (code) stats.errorCodes.push(code);
  if (code === "budget_warning") {
    showMessage(`Budget warning: ${message}`, "info");
  } else if (code in END_REASONS) {
    stats.endReason = code;
    endMessage = `The session ended because ${END_REASONS[code]} (${code}): ${message}`;
    showError(endMessage);
  } else if (POLICY_CODES.has(code)) {
    showError(`Refused by the credential's policy (${code}): ${message}`);
  } else {
    showError(`Server error${code ? ` (${code})` : ""}: ${message}`);
  }
}

function send(event) {
  if (call?.dc.readyState === "open") call.dc.send(JSON.stringify(event));
}

// ---- server events --------------------------------------------------------------------------

const handlers = {
  "session.created": (e) => {
    showModel(e.session);
    onSessionCreated();
  },
  // A relayed session's model is its upstream's; after a failover it names the new engine.
  "session.updated": (e) => showModel(e.session),
  "input_audio_buffer.speech_started": (e) => bubble(e.item_id, "user"),
  "input_audio_buffer.speech_stopped": () => {
    turn = { since: performance.now(), armed: !stats.audible };
  },
  "conversation.item.input_audio_transcription.delta": (e) => appendText(e.item_id, "user", e.delta),
  "conversation.item.input_audio_transcription.completed": (e) => setText(e.item_id, "user", e.transcript),
  "conversation.item.input_audio_transcription.failed": (e) =>
    setText(e.item_id, "user", `(not transcribed: ${e.error?.message ?? "unknown error"})`),
  "response.output_audio_transcript.delta": (e) => appendText(e.item_id, "assistant", e.delta),
  "response.output_audio_transcript.done": (e) => setText(e.item_id, "assistant", e.transcript),
  "response.output_text.delta": (e) => appendText(e.item_id, "assistant", e.delta),
  "response.output_text.done": (e) => setText(e.item_id, "assistant", e.text),
  "response.function_call_arguments.done": (e) => showToolCall(e.item_id, e.call_id, e.name, e.arguments),
  "conversation.item.added": (e) => showItem(e.item),
  "conversation.item.truncated": (e) => items.get(e.item_id)?.el.classList.add("cut"),
  "output_audio_buffer.started": () => setSpeaking(true),
  "output_audio_buffer.stopped": () => setSpeaking(false),
  "output_audio_buffer.cleared": () => setSpeaking(false),
  "response.done": (e) => onResponseDone(e.response),
  error: onError,
};

function onServerEvent(event) {
  stats.events.push(event.type);
  stats.lastEventAt[event.type] = performance.now();
  if (stats.events.length > MAX_EVENTS) stats.events.shift();
  handlers[event.type]?.(event);
}

function sessionSettings() {
  const turnDetection = $("turn-detection").value;
  const session = {
    type: "realtime",
    audio: {
      input: {
        turn_detection: turnDetection === "none" ? null : { type: turnDetection },
        transcription: $("transcribe").checked ? { model: "whisper-1" } : null,
      },
      output: { voice: $("voice").value },
    },
  };
  const instructions = $("instructions").value.trim();
  if (instructions) session.instructions = instructions;
  return session;
}

function showItem(item) {
  if (item.type === "function_call") {
    showToolCall(item.id, item.call_id, item.name, item.arguments);
  } else if (item.type === "function_call_output") {
    const name = callNames.get(item.call_id) ?? item.call_id;
    setText(item.id, "tool-result", `${name} → ${item.output}`);
  } else if (item.type === "message") {
    // Typed text is complete when added; audio items get their text from transcripts later.
    const typed = (item.content ?? []).map((c) => c.text ?? "").join("");
    if (typed) setText(item.id, item.role, typed);
    else bubble(item.id, item.role);
  }
}

function showToolCall(itemId, callId, name, args) {
  if (callId && name) callNames.set(callId, name);
  setText(itemId, "tool", `${name ?? callNames.get(callId) ?? "tool"}(${args ?? ""})`);
}

function onResponseDone(response) {
  stats.responseStatuses.push(response.status);
  if (response.status === "cancelled") {
    for (const item of response.output ?? []) items.get(item.id)?.el.classList.add("cut");
  }
  addUsage(response.usage);
}

function addUsage(usage) {
  if (!usage) return;
  const total = stats.usage;
  total.responses += 1;
  total.input_tokens += usage.input_tokens ?? 0;
  total.output_tokens += usage.output_tokens ?? 0;
  total.total_tokens += usage.total_tokens ?? 0;
  stats.costUsd += costUsd(usage);
  $("usage").textContent = `${total.input_tokens} / ${total.output_tokens}`;
  $("cost").textContent = `≈ $${stats.costUsd.toFixed(4)} (estimate)`;
}

function costUsd(usage) {
  const input = usage.input_token_details ?? {};
  const output = usage.output_token_details ?? {};
  const cached = input.cached_tokens_details ?? {};
  const p = PRICES_PER_MILLION;
  const cachedText = cached.text_tokens ?? 0;
  const cachedAudio = cached.audio_tokens ?? 0;
  const dollars =
    ((input.text_tokens ?? 0) - cachedText) * p.textIn +
    cachedText * p.cachedTextIn +
    ((input.audio_tokens ?? 0) - cachedAudio) * p.audioIn +
    cachedAudio * p.cachedAudioIn +
    (output.text_tokens ?? 0) * p.textOut +
    (output.audio_tokens ?? 0) * p.audioOut;
  return dollars / 1e6;
}

// ---- transcript -----------------------------------------------------------------------------

// One bubble per item id, in the order items were first seen.
function bubble(id, role) {
  let entry = items.get(id);
  if (!entry) {
    const el = document.createElement("li");
    el.className = `bubble ${role} pending`;
    el.dataset.testid = `bubble-${role}`;
    el.dataset.itemId = id;
    $("transcript").append(el);
    entry = { role, el, text: "" };
    items.set(id, entry);
    render(entry);
  }
  return entry;
}

function appendText(id, role, delta) {
  const entry = bubble(id, role);
  entry.text += delta ?? "";
  render(entry);
}

// A final text replaces whatever streamed before it, so nothing is ever shown twice.
function setText(id, role, text) {
  const entry = bubble(id, role);
  entry.text = text ?? "";
  entry.el.classList.remove("pending");
  render(entry);
}

function render(entry) {
  entry.el.textContent = entry.text || "…";
  entry.el.scrollIntoView({ block: "nearest" });
  const texts = (role) => [...items.values()].filter((e) => e.role === role).map((e) => e.text);
  stats.userTranscripts = texts("user");
  stats.assistantTranscripts = texts("assistant");
}

// ---- assistant audio ------------------------------------------------------------------------

function playRemote(stream) {
  // Chrome feeds a remote stream to WebAudio only while a media element plays it too.
  $("remote-audio").srcObject = stream;
  stopMeter();
  const analyser = audioCtx.createAnalyser();
  analyser.fftSize = 1024;
  audioCtx.createMediaStreamSource(stream).connect(analyser);
  meter = { analyser, samples: new Float32Array(analyser.fftSize), lastTick: performance.now() };
  meter.timer = setInterval(measure, METER_INTERVAL_MS);
}

function measure() {
  const now = performance.now();
  // A throttled timer must not count a long gap as heard audio.
  const elapsed = Math.min(now - meter.lastTick, 100);
  meter.lastTick = now;
  meter.analyser.getFloatTimeDomainData(meter.samples);
  let sum = 0;
  for (const s of meter.samples) sum += s * s;
  const level = Math.sqrt(sum / meter.samples.length);
  const audible = level > AUDIBLE_RMS;
  stats.level = level;
  stats.peakLevel = Math.max(stats.peakLevel, level);
  stats.audible = audible;
  $("level").value = level;
  if (audible) {
    stats.assistantAudioMs += elapsed;
    stats.lastAudibleAt = now;
  }
  timeTurn(now, audible);
}

// Latency = end of the user's speech to the first assistant sound after it; the reply must
// rise out of silence, so the tail of an earlier reply is never taken for it.
function timeTurn(now, audible) {
  if (!turn) return;
  if (!audible) {
    turn.armed = true;
  } else if (turn.armed) {
    const ms = Math.round(now - turn.since);
    turn = null;
    stats.latenciesMs.push(ms);
    const all = stats.latenciesMs;
    const mean = Math.round(all.reduce((a, b) => a + b, 0) / all.length);
    $("latency").textContent = `${ms} ms (mean ${mean} ms over ${all.length})`;
  }
}

function stopMeter() {
  if (meter) clearInterval(meter.timer);
  meter = null;
  stats.audible = false;
  stats.level = 0;
}

// ---- page state -----------------------------------------------------------------------------

function setState(state) {
  stats.state = state;
  const status = $("status");
  status.dataset.state = state;
  status.textContent = stats.speaking ? `${state} · assistant speaking` : state;
}

function setSpeaking(speaking) {
  stats.speaking = speaking;
  setState(stats.state);
}

function setButtons(connected) {
  $("connect").disabled = connected;
  $("hangup").disabled = !connected;
  $("mute").disabled = !connected;
  $("mute").textContent = "Mute";
  $("text-input").disabled = !connected;
  $("send-text").disabled = !connected;
  $("end-turn").disabled = !connected || $("turn-detection").value !== "none";
}

function showMessage(text, kind) {
  const el = $("message");
  delete el.dataset.recovering;
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = false;
}

function showError(text) {
  stats.errors.push(text);
  showMessage(text, "error");
}

function clearMessage() {
  $("message").hidden = true;
}

function toggleMute() {
  const track = call?.mic.getAudioTracks()[0];
  if (!track) return;
  track.enabled = !track.enabled;
  $("mute").textContent = track.enabled ? "Mute" : "Unmute";
}

function sendText(event) {
  event.preventDefault();
  const text = $("text-input").value.trim();
  if (!text) return;
  send({
    type: "conversation.item.create",
    item: { type: "message", role: "user", content: [{ type: "input_text", text }] },
  });
  send({ type: "response.create" });
  $("text-input").value = "";
}

function endTurn() {
  send({ type: "input_audio_buffer.commit" });
  send({ type: "response.create" });
}

function applySettings(event) {
  event.preventDefault();
  send({ type: "session.update", session: sessionSettings() });
  setButtons(call?.dc.readyState === "open");
}

$("api-key").value = localStorage.getItem(KEY_STORAGE) ?? "dev";
$("call-form").addEventListener("submit", connect);
$("hangup").addEventListener("click", hangUp);
$("mute").addEventListener("click", toggleMute);
$("end-turn").addEventListener("click", endTurn);
$("text-form").addEventListener("submit", sendText);
$("settings").addEventListener("submit", applySettings);
