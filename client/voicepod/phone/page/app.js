// The voicepod page: the microphone to the server's /talk/ws as PCM16 16 kHz, the reply's audio played as it
// streams, the call's turns shown as they fill in. Plain JavaScript, no build step, nothing fetched from elsewhere.
"use strict";

(() => {
  const LEAD_S = 0.05; // a reply that starts on an empty queue starts this far ahead, so its chunks join up
  const $ = (id) => document.getElementById(id);
  const token = new URLSearchParams(location.search).get("token");

  // What window.voicepodPage shows (read-only, for tests and for developers' own debugging).
  const view = {
    state: "idle", error: null, callSid: null, turns: new Map(),
    samplesReceived: 0, samplesPlayed: 0, samplesDropped: 0, clears: 0,
  };
  let session = null;

  function turnOut(t) {
    return Object.freeze({
      turn: t.turn, user: t.user, reply: t.reply, assistant: t.assistant, interrupted: t.interrupted,
      error: t.error, latency: Object.freeze({ ...t.latency }), mouth_to_ear_s: t.mouth_to_ear_s,
    });
  }

  Object.defineProperty(window, "voicepodPage", {
    value: Object.freeze({
      get state() { return view.state; },
      get error() { return view.error; },
      get callSid() { return view.callSid; },
      get turns() { return Object.freeze([...view.turns.values()].map(turnOut)); },
      get samplesReceived() { return view.samplesReceived; },
      get samplesPlayed() { return view.samplesPlayed; },
      get samplesDropped() { return view.samplesDropped; },
      get clears() { return view.clears; },
    }),
    writable: false, configurable: false, enumerable: true,
  });

  function setState(state) {
    if (view.state === state) return;
    view.state = state;
    const badge = $("state");
    badge.textContent = state;
    badge.className = `state ${state}`;
    const button = $("start");
    const live = ["connecting", "listening", "thinking", "speaking"].includes(state);
    button.textContent = live ? "Stop" : "Start talking";
    button.classList.toggle("stop", live);
  }

  function fail(s, message) {
    if (s !== session || s.failed) return; // the first reason is the one to show
    s.failed = true;
    view.error = message;
    const box = $("error");
    box.textContent = message;
    box.hidden = false;
    teardown(s);
    setState("error");
  }

  function micMessage(error) {
    if (error && (error.name === "NotAllowedError" || error.name === "SecurityError")) {
      return "The microphone was refused. Allow it for this page (the icon in the address bar) and press Start again.";
    }
    if (error && error.name === "NotFoundError") return "No microphone found: plug one in and press Start again.";
    return `The microphone could not be opened: ${error && error.message ? error.message : error}`;
  }

  async function start() {
    const s = {
      ctx: null, ws: null, stream: null, tick: null, opened: false, ready: false, stopping: false, serverError: null,
      outputRate: 24000, endOfTurn: 0, chunks: [], marks: [], playEnd: 0,
    };
    session = s;
    view.error = null;
    view.turns.clear();
    renderTurns();
    $("error").hidden = true;
    setState("connecting");
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      fail(s, "This page needs the microphone, which browsers allow only on https:// or on localhost.");
      return;
    }
    try {
      s.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (error) {
      fail(s, micMessage(error));
      return;
    }
    if (s !== session) return;
    s.ctx = new AudioContext();
    s.ctx.resume();
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = token ? `?token=${encodeURIComponent(token)}` : "";
    s.ws = new WebSocket(`${scheme}//${location.host}/talk/ws${query}`);
    s.ws.binaryType = "arraybuffer";
    s.ws.onopen = () => capture(s);
    s.ws.onmessage = (event) => receive(s, event.data);
    s.ws.onclose = (event) => {
      if (s !== session) return;
      if (s.stopping) {
        teardown(s);
        setState("idle");
        return;
      }
      fail(s, s.serverError || event.reason || (s.opened
        ? "The server closed the connection."
        : `Cannot reach the voicepod server at ${location.host}: is \`voicepod phone\` running?`));
    };
    s.tick = setInterval(() => tick(s), 20);
  }

  // The microphone into the AudioWorklet, each 20 ms frame onto the socket (once the server is there).
  async function capture(s) {
    s.opened = true;
    try {
      await s.ctx.audioWorklet.addModule("/page/capture.js");
    } catch (error) {
      fail(s, `The browser's audio could not start: ${error.message || error}`);
      return;
    }
    if (s !== session || s.stopping) return;
    const node = new AudioWorkletNode(s.ctx, "voicepod-capture");
    const mute = s.ctx.createGain(); // the worklet runs only when connected to the output; it must not be heard
    mute.gain.value = 0;
    s.ctx.createMediaStreamSource(s.stream).connect(node).connect(mute).connect(s.ctx.destination);
    node.port.onmessage = (event) => {
      $("level").style.width = `${Math.min(100, Math.round(Math.sqrt(event.data.level) * 180))}%`;
      if (s.ready && s.ws.readyState === WebSocket.OPEN) s.ws.send(event.data.pcm);
    };
  }

  function stop() {
    const s = session;
    if (!s) return;
    s.stopping = true;
    clearPlayback(s, false);
    if (s.ws && s.ws.readyState === WebSocket.OPEN) {
      s.ws.send(JSON.stringify({ event: "stop" }));
      // The server sends the turns' final records, then closes; close anyway if it does not.
      setTimeout(() => { if (s.ws.readyState !== WebSocket.CLOSED) s.ws.close(); }, 3000);
      releaseAudio(s);
    } else {
      teardown(s);
      setState("idle");
    }
  }

  function releaseAudio(s) {
    if (s.tick) clearInterval(s.tick);
    s.tick = null;
    if (s.stream) s.stream.getTracks().forEach((track) => track.stop());
    if (s.ctx && s.ctx.state !== "closed") s.ctx.close();
    $("level").style.width = "0";
  }

  function teardown(s) {
    releaseAudio(s);
    if (s.ws && s.ws.readyState <= WebSocket.OPEN) s.ws.close();
  }

  function receive(s, data) {
    if (data instanceof ArrayBuffer) {
      if (!s.stopping) play(s, new Int16Array(data));
      return;
    }
    const message = JSON.parse(data);
    switch (message.event) {
      case "ready":
        s.ready = true;
        s.outputRate = message.output_rate;
        s.endOfTurn = message.end_of_turn_s;
        view.callSid = message.call_sid;
        setState("listening");
        break;
      case "mark":
        if (s.playEnd <= s.ctx.currentTime) echoMark(s, message.name);
        else s.marks.push({ name: message.name, at: s.playEnd });
        break;
      case "clear":
        clearPlayback(s, true);
        tick(s);
        break;
      case "turn":
        showTurn(s, message);
        break;
      case "error":
        s.serverError = message.message;
        break;
      default:
        break;
    }
  }

  function echoMark(s, name) {
    if (s.ws.readyState === WebSocket.OPEN) s.ws.send(JSON.stringify({ event: "mark", name }));
  }

  // Each chunk is scheduled to start where the one before ends: gapless while the reply streams faster than
  // it plays (it does: a sentence's speech is made in a fraction of its length).
  function play(s, pcm) {
    if (!pcm.length || !s.ctx) return;
    const buffer = s.ctx.createBuffer(1, pcm.length, s.outputRate);
    const samples = buffer.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) samples[i] = pcm[i] / 32768;
    const now = s.ctx.currentTime;
    const start = Math.max(s.playEnd, now + LEAD_S);
    const source = s.ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(s.ctx.destination);
    source.start(start);
    const end = start + pcm.length / s.outputRate;
    s.chunks.push({ source, start, end, samples: pcm.length });
    s.playEnd = end;
    view.samplesReceived += pcm.length;
  }

  // Barge-in: what is playing stops now, what is queued is dropped, and so are the marks after it (the server
  // counts their sentences as not heard).
  function clearPlayback(s, fromServer) {
    const now = s.ctx ? s.ctx.currentTime : 0;
    for (const chunk of s.chunks) {
      const played = chunk.start < now ? Math.min(chunk.samples, Math.floor((now - chunk.start) * s.outputRate)) : 0;
      view.samplesPlayed += played;
      view.samplesDropped += chunk.samples - played;
      try { chunk.source.stop(); } catch (_) { /* not started */ }
    }
    s.chunks = [];
    s.marks = [];
    s.playEnd = 0;
    if (fromServer) view.clears += 1;
  }

  function tick(s) {
    const now = s.ctx.currentTime;
    while (s.chunks.length && s.chunks[0].end <= now) view.samplesPlayed += s.chunks.shift().samples;
    while (s.marks.length && s.marks[0].at <= now) echoMark(s, s.marks.shift().name);
    if (!s.ready || s.stopping) return;
    const last = [...view.turns.values()].pop();
    const pending = last && !last.error && !last.interrupted && last.latency.total_s === undefined;
    setState(s.chunks.length ? "speaking" : pending ? "thinking" : "listening");
  }

  function playoutDelay(s) {
    return LEAD_S + (s.ctx ? (s.ctx.baseLatency || 0) + (s.ctx.outputLatency || 0) : 0);
  }

  function showTurn(s, message) {
    const t = { ...message, mouth_to_ear_s: null };
    const v2v = t.latency.voice_to_voice_s;
    if (typeof v2v === "number") t.mouth_to_ear_s = Math.round((v2v + playoutDelay(s)) * 1000) / 1000;
    t.playout_s = playoutDelay(s);
    // What this turn waited for its end (the smart detector's varies by turn); the longest wait when not told.
    t.end_of_turn_s = typeof t.latency.end_silence_s === "number" ? t.latency.end_silence_s : s.endOfTurn;
    view.turns.set(t.turn, t);
    renderTurns();
  }

  const fmt = (x) => (typeof x === "number" ? x.toFixed(2) : "…");

  function latencyLine(t) {
    const l = t.latency;
    if (t.mouth_to_ear_s === null) return t.error ? `failed: ${String(t.error).replace(/[^\w .:-]/g, "")}` : "waiting for the reply…";
    // The server's moments count from the end of the turn's detection. A turn started early (speculatively, at
    // a pause) has some of them before it: each part is then what was left of that stage after the wait, so the
    // parts still add up to the whole.
    const stt = Math.max(l.transcript_s, 0);
    const llm = Math.max(l.llm_first_token_s, stt) - stt;
    const tts = l.first_audio_s - stt - llm;
    const early = l.transcript_s < 0 ? " (started during the end-of-turn wait)" : "";
    return `<b>mouth-to-ear ${fmt(t.mouth_to_ear_s)} s</b> = end-of-turn ${fmt(t.end_of_turn_s)} + STT ${fmt(stt)}`
      + ` + LLM ${fmt(llm)} + TTS ${fmt(tts)} + playout ${fmt(t.playout_s)}${early}`;
  }

  function text(tag, className, content) {
    const node = document.createElement(tag);
    node.className = className;
    node.textContent = content;
    return node;
  }

  function renderTurns() {
    const list = $("turns");
    list.replaceChildren(...[...view.turns.values()].map((t) => {
      const item = document.createElement("li");
      item.className = "turn";
      item.dataset.turn = t.turn;
      const user = text("p", "user", t.user || "…");
      user.prepend(text("span", "who", "You"));
      const reply = text("p", "reply", t.reply || (t.error ? "" : "…"));
      reply.prepend(text("span", "who", "Agent"));
      if (t.interrupted) reply.append(text("span", "flag", `interrupted; you heard: “${t.assistant}”`));
      const latency = document.createElement("p");
      latency.className = "latency";
      latency.innerHTML = latencyLine(t); // numbers and fixed words only: nothing from the transcript
      item.append(user, reply, latency);
      return item;
    }));
  }

  $("start").addEventListener("click", () => {
    if (["idle", "error"].includes(view.state)) start();
    else stop();
  });
})();
