// 1:1 video calls in a panel beside the chat: ringing (with a ringtone unless
// the user is busy), accept and decline, mute, camera, a choice of camera and
// microphone, screen sharing (a second video track, negotiated again through
// the same webrtc signaling), a call timer, and the call's outcome written
// into the room's timeline.

import { api, on, send } from "./connection.js";
import { $, duration, toast } from "./dom.js";
import { myStatus } from "./members.js";
import { state, view } from "./state.js";
import { addNotice } from "./timeline.js";

const END_REASONS = {
  rejected: (peer) => `${peer} declined the call.`,
  busy: (peer) => `${peer} is busy in another call.`,
  no_answer: (peer) => `No answer from ${peer}.`,
  unavailable: (peer) => `${peer} is offline.`,
  disconnected: (peer) => `The call with ${peer} was disconnected.`,
  glare: (peer) => `${peer} is calling you at the same moment — answer their call.`,
  answered_elsewhere: () => "Answered on another device.",
  ended: (peer, by, me) => (by === me ? "Call ended." : `${peer} hung up.`),
};

export function setupCalls() {
  $("accept-call").onclick = acceptCall;
  $("reject-call").onclick = rejectCall;
  $("hang-up").onclick = hangUp;
  $("toggle-mute").onclick = (e) => toggleTrack("audio", e.currentTarget, "Mute", "Unmute");
  $("toggle-camera").onclick = (e) => toggleTrack("video", e.currentTarget, "Camera off", "Camera on");
  $("share-screen").onclick = toggleScreenShare;
  $("toggle-devices").onclick = toggleDevicePicker;
  $("camera-select").onchange = (e) => switchDevice("video", e.target.value);
  $("mic-select").onchange = (e) => switchDevice("audio", e.target.value);
  setupResize();
  callUi("hidden");
}

function callUi(mode) {
  const panel = $("call-panel");
  panel.hidden = mode === "hidden";
  panel.dataset.mode = mode;
  document.body.classList.toggle("in-call", mode !== "hidden");
  $("accept-call").hidden = mode !== "incoming";
  $("reject-call").hidden = mode !== "incoming";
  $("hang-up").hidden = mode === "incoming" || mode === "hidden";
  for (const id of ["toggle-mute", "toggle-camera", "share-screen", "toggle-devices"]) {
    $(id).hidden = mode !== "active";
  }
  if (mode !== "active") $("device-picker").hidden = true;
}

function newCall(fields) {
  return {
    id: null,
    peer: null,
    role: "caller",
    room: state.current, // where the call's outcome is written
    pc: null,
    localStream: null,
    offer: null,
    outgoingCandidates: [],
    incomingCandidates: [],
    answeredAt: null,
    timer: null,
    screen: null, // {stream, sender} while sharing
    cameraStreamId: null, // the peer's first stream: the camera; another one is a screen
    ...fields,
  };
}

async function iceConfig() {
  try {
    return await api("/api/ice-servers");
  } catch {
    return { iceServers: [] };
  }
}

async function newPeer(call) {
  const pc = new RTCPeerConnection(await iceConfig());
  call.pc = pc;
  pc.onicecandidate = (event) => {
    if (!event.candidate) return;
    const candidate = event.candidate.toJSON();
    if (call.id) sendSignal(call, "ice_candidate", candidate);
    else call.outgoingCandidates.push(candidate);
  };
  pc.ontrack = (event) => showRemoteTrack(call, event);
  pc.onconnectionstatechange = () => {
    if (state.call === call && pc.connectionState === "connected") {
      $("call-status").textContent = "Connected";
    }
  };
  for (const track of call.localStream.getTracks()) pc.addTrack(track, call.localStream);
  return pc;
}

function showRemoteTrack(call, event) {
  const stream = event.streams[0];
  if (!stream) return;
  if (call.cameraStreamId === null) call.cameraStreamId = stream.id;
  if (stream.id === call.cameraStreamId) {
    const video = $("remote-video");
    if (video.srcObject !== stream) video.srcObject = stream;
    return;
  }
  // Another stream: the peer shares a screen. It ends when they stop.
  const video = $("screen-video");
  video.srcObject = stream;
  video.hidden = false;
  $("call-panel").classList.add("screen-shared");
  const ended = () => {
    if (video.srcObject === stream) {
      video.srcObject = null;
      video.hidden = true;
      $("call-panel").classList.remove("screen-shared");
    }
  };
  event.track.addEventListener("ended", ended);
  stream.addEventListener("removetrack", ended); // the peer's renegotiation dropped it
}

async function localMedia(constraints = { video: true, audio: true }) {
  const stream = await navigator.mediaDevices.getUserMedia(constraints);
  $("local-video").srcObject = stream;
  return stream;
}

function sendSignal(call, type, data) {
  send("webrtc", { type, call_id: call.id, to_user_id: call.peer, data });
}

export async function startCall(peer) {
  if (state.call) {
    toast("You are already in a call.");
    return;
  }
  const call = newCall({ peer, role: "caller" });
  state.call = call;
  $("call-title").textContent = `Calling ${peer}…`;
  $("call-status").textContent = "Ringing";
  callUi("outgoing");
  try {
    call.localStream = await localMedia();
    const pc = await newPeer(call);
    await pc.setLocalDescription(await pc.createOffer());
    if (state.call !== call) return;
    send("webrtc", { type: "offer", to_user_id: peer, data: pc.localDescription.toJSON(), media: "video" });
  } catch (error) {
    endCallLocally(null, null, `Could not start the call: ${error.message}`);
  }
}

on("call_ringing", (p) => {
  const call = state.call;
  if (!call || call.role !== "caller" || call.id) return;
  call.id = p.call_id;
  for (const candidate of call.outgoingCandidates) sendSignal(call, "ice_candidate", candidate);
  call.outgoingCandidates = [];
});

on("incoming_call", (p) => {
  if (state.call) return; // the server answers busy for us
  state.call = newCall({ id: p.call_id, peer: p.from_user_id, role: "callee" });
  $("call-title").textContent = `${p.from_user_id} is calling`;
  $("call-status").textContent = myStatus() === "busy" ? "Incoming video call (silent: you are busy)" : "Incoming video call";
  callUi("incoming");
  if (myStatus() !== "busy") ringtone.start();
});

async function acceptCall() {
  const call = state.call;
  if (!call || call.role !== "callee" || call.pc) return;
  ringtone.stop();
  $("call-status").textContent = "Connecting…";
  callUi("connecting");
  try {
    call.localStream = await localMedia();
    const pc = await newPeer(call);
    await waitFor(() => call.offer, 5000);
    await pc.setRemoteDescription(call.offer);
    await pc.setLocalDescription(await pc.createAnswer());
    if (state.call !== call) return;
    sendSignal(call, "answer", pc.localDescription.toJSON());
    for (const candidate of call.incomingCandidates) await pc.addIceCandidate(candidate);
    call.incomingCandidates = [];
  } catch (error) {
    send("call_end", { call_id: call.id });
    endCallLocally(null, null, `Could not answer: ${error.message}`);
  }
}

function waitFor(predicate, timeoutMs) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = () => {
      if (predicate()) resolve();
      else if (Date.now() - started > timeoutMs) reject(new Error("timed out"));
      else setTimeout(poll, 20);
    };
    poll();
  });
}

on("webrtc", async (p) => {
  const call = state.call;
  if (!call || call.id !== p.call_id) return;
  if (p.type === "offer" && call.role === "callee" && !call.pc) {
    call.offer = p.data;
    return;
  }
  const pc = call.pc;
  try {
    if (p.type === "answer" && pc) {
      await pc.setRemoteDescription(p.data);
      for (const candidate of call.incomingCandidates) await pc.addIceCandidate(candidate);
      call.incomingCandidates = [];
    } else if (p.type === "ice_candidate") {
      if (pc && pc.remoteDescription) await pc.addIceCandidate(p.data);
      else call.incomingCandidates.push(p.data);
    } else if (p.type === "offer" && pc) {
      await pc.setRemoteDescription(p.data); // renegotiation: the peer shares a screen, or stops
      await pc.setLocalDescription(await pc.createAnswer());
      sendSignal(call, "answer", pc.localDescription.toJSON());
    }
  } catch (error) {
    toast(`Call signaling failed: ${error.message}`);
  }
});

on("call_active", (p) => {
  const call = state.call;
  if (!call || call.id !== p.call_id) return;
  $("call-title").textContent = `In a call with ${call.peer}`;
  $("call-status").textContent = call.pc && call.pc.connectionState === "connected" ? "Connected" : "Connecting…";
  call.answeredAt = Date.now();
  const tick = () => ($("call-timer").textContent = duration(Date.now() - call.answeredAt));
  tick();
  call.timer = setInterval(tick, 1000);
  callUi("active");
});

on("call_ended", (p) => {
  if (state.call && state.call.id === p.call_id) endCallLocally(p.reason, p.by);
});

on("close", () => endCallLocally("disconnected", null));

function hangUp() {
  const call = state.call;
  if (!call) return;
  if (call.id) send("call_end", { call_id: call.id });
  endCallLocally("ended", state.me);
}

function rejectCall() {
  const call = state.call;
  if (!call) return;
  send("call_reject", { call_id: call.id });
  endCallLocally("declined_here", null, "Call declined.");
}

function endCallLocally(reason, by, text) {
  const call = state.call;
  if (!call) return;
  state.call = null;
  ringtone.stop();
  clearInterval(call.timer);
  if (call.screen) call.screen.stream.getTracks().forEach((t) => t.stop());
  if (call.pc) call.pc.close();
  if (call.localStream) call.localStream.getTracks().forEach((t) => t.stop());
  for (const id of ["remote-video", "local-video", "screen-video"]) $(id).srcObject = null;
  $("screen-video").hidden = true;
  $("call-panel").classList.remove("screen-shared");
  $("call-timer").textContent = "";
  for (const [id, label] of [["toggle-mute", "Mute"], ["toggle-camera", "Camera off"], ["share-screen", "Share screen"]]) {
    $(id).textContent = label;
    $(id).classList.remove("off");
    $(id).setAttribute("aria-pressed", "false");
  }
  callUi("hidden");
  const describe = END_REASONS[reason];
  const message = text || (describe ? describe(call.peer, by, state.me) : "Call ended.");
  state.lastCallEnd = { reason, message };
  toast(message);
  if (call.room !== null) addNotice(view(call.room), callEvent(call, reason), "call-event");
}

/** The line the room's timeline keeps about a call that ended. */
function callEvent(call, reason) {
  if (call.answeredAt !== null) return `📞 Call with ${call.peer} · ${duration(Date.now() - call.answeredAt)}`;
  if (call.role === "callee") {
    if (reason === "declined_here") return `📞 You declined a call from ${call.peer}`;
    if (reason === "answered_elsewhere") return `📞 Call from ${call.peer} answered on another device`;
    return `📞 Missed call from ${call.peer}`;
  }
  if (reason === "rejected") return `📞 ${call.peer} declined your call`;
  if (reason === "ended") return `📞 You cancelled a call to ${call.peer}`;
  return `📞 Call to ${call.peer}: ${(END_REASONS[reason] || (() => "not answered"))(call.peer, null, state.me)}`;
}

function toggleTrack(kind, button, onText, offText) {
  const call = state.call;
  if (!call || !call.localStream) return;
  for (const track of call.localStream.getTracks()) {
    if (track.kind === kind) track.enabled = !track.enabled;
  }
  const enabled = call.localStream.getTracks().some((t) => t.kind === kind && t.enabled);
  button.textContent = enabled ? onText : offText;
  button.classList.toggle("off", !enabled);
  button.setAttribute("aria-pressed", String(!enabled));
}

// -- screen sharing --------------------------------------------------------------------

async function renegotiate(call) {
  const pc = call.pc;
  await pc.setLocalDescription(await pc.createOffer());
  sendSignal(call, "offer", pc.localDescription.toJSON());
}

async function toggleScreenShare() {
  const call = state.call;
  if (!call || !call.pc) return;
  if (call.screen) {
    stopScreenShare(call);
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
  } catch (error) {
    toast(`Could not share the screen: ${error.message}`);
    return;
  }
  if (state.call !== call) {
    stream.getTracks().forEach((t) => t.stop());
    return;
  }
  const track = stream.getVideoTracks()[0];
  call.screen = { stream, sender: call.pc.addTrack(track, stream) };
  track.addEventListener("ended", () => {
    if (state.call === call && call.screen && call.screen.stream === stream) stopScreenShare(call);
  });
  setShareButton(true);
  await renegotiate(call);
}

function stopScreenShare(call) {
  const { stream, sender } = call.screen;
  call.screen = null;
  stream.getTracks().forEach((t) => t.stop());
  try {
    call.pc.removeTrack(sender);
  } catch {
    // The connection closed meanwhile.
  }
  setShareButton(false);
  renegotiate(call).catch((error) => toast(`Call signaling failed: ${error.message}`));
}

function setShareButton(sharing) {
  const button = $("share-screen");
  button.textContent = sharing ? "Stop sharing" : "Share screen";
  button.classList.toggle("off", sharing);
  button.setAttribute("aria-pressed", String(sharing));
}

// -- devices ---------------------------------------------------------------------------

async function toggleDevicePicker() {
  const picker = $("device-picker");
  picker.hidden = !picker.hidden;
  $("toggle-devices").setAttribute("aria-expanded", String(!picker.hidden));
  if (picker.hidden) return;
  const devices = await navigator.mediaDevices.enumerateDevices();
  const call = state.call;
  const inUse = (kind) => {
    const track = call && call.localStream && call.localStream.getTracks().find((t) => t.kind === kind);
    return track ? track.getSettings().deviceId : null;
  };
  for (const [selectId, kind, trackKind] of [["camera-select", "videoinput", "video"], ["mic-select", "audioinput", "audio"]]) {
    const select = $(selectId);
    select.replaceChildren();
    devices
      .filter((d) => d.kind === kind)
      .forEach((d, i) => {
        const option = document.createElement("option");
        option.value = d.deviceId;
        option.textContent = d.label || `${trackKind === "video" ? "Camera" : "Microphone"} ${i + 1}`;
        option.selected = d.deviceId === inUse(trackKind);
        select.append(option);
      });
  }
}

async function switchDevice(kind, deviceId) {
  const call = state.call;
  if (!call || !call.pc || !call.localStream) return;
  let fresh;
  try {
    fresh = await navigator.mediaDevices.getUserMedia({ [kind]: { deviceId: { exact: deviceId } } });
  } catch (error) {
    toast(`Could not switch the device: ${error.message}`);
    return;
  }
  const track = fresh.getTracks()[0];
  const old = call.localStream.getTracks().find((t) => t.kind === kind);
  if (old) {
    track.enabled = old.enabled;
    call.localStream.removeTrack(old);
    old.stop();
  }
  call.localStream.addTrack(track);
  const sender = call.pc.getSenders().find((s) => s.track && s.track.kind === kind && (!call.screen || s !== call.screen.sender));
  if (sender) await sender.replaceTrack(track); // same media line: no renegotiation
  $("local-video").srcObject = call.localStream;
}

// -- ringtone --------------------------------------------------------------------------

const ringtone = {
  context: null,
  timer: null,
  start() {
    this.stop();
    try {
      this.context = new AudioContext();
    } catch {
      return;
    }
    const ring = () => {
      const ctx = this.context;
      if (!ctx) return;
      for (const [offset, freq] of [[0, 440], [0, 480]]) {
        const osc = ctx.createOscillator();
        const gain = ctx.createGain();
        osc.frequency.value = freq;
        gain.gain.value = 0.05;
        osc.connect(gain).connect(ctx.destination);
        osc.start(ctx.currentTime + offset);
        osc.stop(ctx.currentTime + offset + 1.2);
      }
    };
    ring();
    this.timer = setInterval(ring, 3000);
    $("call-panel").dataset.ringing = "true";
  },
  stop() {
    clearInterval(this.timer);
    this.timer = null;
    if (this.context) this.context.close().catch(() => {});
    this.context = null;
    delete $("call-panel").dataset.ringing;
  },
};

// -- the panel's width -----------------------------------------------------------------

function setupResize() {
  const handle = $("call-resize");
  const panel = $("call-panel");
  const setWidth = (px) => {
    const width = Math.max(260, Math.min(px, window.innerWidth * 0.7));
    panel.style.width = `${width}px`;
  };
  handle.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    handle.setPointerCapture(event.pointerId);
    const startX = event.clientX;
    const startWidth = panel.getBoundingClientRect().width;
    const move = (e) => setWidth(startWidth + (startX - e.clientX));
    const up = () => {
      handle.removeEventListener("pointermove", move);
      handle.removeEventListener("pointerup", up);
    };
    handle.addEventListener("pointermove", move);
    handle.addEventListener("pointerup", up);
  });
  handle.addEventListener("keydown", (event) => {
    const width = panel.getBoundingClientRect().width;
    if (event.key === "ArrowLeft") setWidth(width + 40);
    else if (event.key === "ArrowRight") setWidth(width - 40);
  });
}
