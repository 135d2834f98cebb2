// The call page: one peer connection to the server, the microphone in, the agent's voice out,
// and a "captions" data channel carrying both sides' words. No build step, no dependencies.
"use strict";

const $ = (id) => document.getElementById(id);
const callButton = $("call");
const hangupButton = $("hangup");
const statusLine = $("status");
const errorBox = $("error");
const captions = $("captions");
const agentAudio = $("agent-audio");

const ICE_GATHER_LIMIT_MS = 3000;
let pc = null;
let channel = null;
let microphone = null;
let ending = false;

function setStatus(text) { statusLine.textContent = text; }

function showError(text) {
  errorBox.textContent = text;
  errorBox.hidden = false;
}

function addCaption(role, text, interrupted) {
  const item = document.createElement("li");
  item.className = role + (interrupted ? " interrupted" : "");
  item.dataset.role = role;
  item.textContent = text;
  captions.appendChild(item);
  item.scrollIntoView({ block: "end" });
}

function micErrorMessage(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone access was refused. Allow the microphone for this page in your " +
        "browser's site settings, then press Call again.";
    case "NotFoundError":
      return "No microphone was found. Connect one and press Call again.";
    case "NotReadableError":
      return "The microphone is in use by another application.";
    default:
      return "The microphone could not be opened (" + (err && err.name || "unknown error") + ").";
  }
}

// A server whose web calls are not public hands out links ending in #token=<API token>.
const accessToken = new URLSearchParams(location.hash.slice(1)).get("token");

async function postJson(url, body) {
  const headers = { "Content-Type": "application/json" };
  if (accessToken) headers.Authorization = "Bearer " + accessToken;
  const response = await fetch(url, {
    method: "POST",
    headers,
    body: JSON.stringify(body || {}),
  });
  let data = {};
  try { data = await response.json(); } catch (e) { /* keep the status below */ }
  if (!response.ok) {
    const err = new Error(data.message || ("the server answered " + response.status));
    err.status = response.status;
    throw err;
  }
  return data;
}

function iceGatheringDone(peer) {
  // Send the offer once candidates are gathered (or after a short limit: host candidates are
  // enough on a LAN, and TURN relays answer within a second or two).
  return new Promise((resolve) => {
    if (peer.iceGatheringState === "complete") return resolve();
    const timer = setTimeout(resolve, ICE_GATHER_LIMIT_MS);
    peer.addEventListener("icegatheringstatechange", () => {
      if (peer.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
}

function onMessage(event) {
  let msg;
  try { msg = JSON.parse(event.data); } catch (e) { return; }
  if (msg.type === "caption") {
    addCaption(msg.role, msg.text, msg.interrupted);
  } else if (msg.type === "hangup" || msg.type === "ended") {
    finish("Call ended.");
  }
}

async function startCall() {
  ending = false;
  errorBox.hidden = true;
  callButton.disabled = true;
  setStatus("Asking for the microphone…");
  try {
    microphone = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      video: false,
    });
  } catch (err) {
    showError(micErrorMessage(err));
    setStatus("Not connected.");
    callButton.disabled = false;
    return;
  }
  try {
    setStatus("Connecting…");
    const session = await postJson("/webrtc/session");
    pc = new RTCPeerConnection({ iceServers: session.ice_servers || [] });
    microphone.getTracks().forEach((track) => pc.addTrack(track, microphone));
    channel = pc.createDataChannel("captions");
    channel.onmessage = onMessage;
    pc.ontrack = (event) => {
      agentAudio.srcObject = event.streams[0] || new MediaStream([event.track]);
      agentAudio.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => {
      if (!pc) return;
      const state = pc.connectionState;
      if (state === "connected") {
        setStatus("Connected. Speak whenever you like.");
        hangupButton.disabled = false;
      } else if (state === "failed") {
        showError("The connection failed. Your network may block the call's audio; try " +
          "another network, or contact us if it keeps happening.");
        finish("Not connected.");
      } else if (state === "disconnected") {
        setStatus("Connection interrupted, trying to recover…");
      }
    };
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringDone(pc);
    const answer = await postJson("/webrtc/offer", {
      sdp: pc.localDescription.sdp, type: pc.localDescription.type, token: session.token,
    });
    await pc.setRemoteDescription(answer);
  } catch (err) {
    const busy = err.status === 503 || err.status === 429;
    showError((busy ? "" : "Could not start the call: ") + err.message);
    finish("Not connected.");
  }
}

function finish(text) {
  if (ending) return;
  ending = true;
  if (channel && channel.readyState === "open") {
    try { channel.send(JSON.stringify({ type: "hangup" })); } catch (e) { /* closing anyway */ }
  }
  if (pc) {
    const closing = pc;
    setTimeout(() => closing.close(), 150);  // let the hang-up message leave first
    pc.onconnectionstatechange = null;
    pc = null;
  }
  if (microphone) { microphone.getTracks().forEach((t) => t.stop()); microphone = null; }
  channel = null;
  agentAudio.srcObject = null;
  hangupButton.disabled = true;
  callButton.disabled = false;
  setStatus(text);
}

if (!window.RTCPeerConnection || !navigator.mediaDevices) {
  showError("This browser cannot place calls (WebRTC is unavailable, or the page is not " +
    "served over HTTPS).");
  callButton.disabled = true;
}
callButton.addEventListener("click", startCall);
hangupButton.addEventListener("click", () => finish("Call ended."));
