// Backflip labeling page: keyboard-first answers, prefetching, retried saves,
// synced GIF playback and a word diff for text. Progressive enhancement: the
// page works as a plain form without this script.
//
// One call per answer: `POST /projects/{slug}/next` stores the judgment and
// leases the pair after the one already prefetched, so while a rater looks at
// a pair the next one is in hand. `GET /next` is asked on load, after a report
// or a break, and when a save leased nothing usable. The progress line counts
// the page's own answers and leases, and is read from the server when the page
// runs out of pairs and otherwise at most every 15 s, so an answer costs one
// request.
//
// Everything a rollout, prompt or instruction contains is put in the page with
// textContent / createTextNode only, never as HTML.
"use strict";

(() => {
  const root = document.getElementById("labeler");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const cfg = {
    slug: root.dataset.slug,
    csrf: root.dataset.csrf,
    options: root.dataset.options.split(","),
    rationale: root.dataset.rationale,
    strength: Number(root.dataset.strength || 0),
  };
  const api = `/api/v1`;

  let current = root.dataset.pair ? JSON.parse(root.dataset.pair) : null;
  let shownAt = performance.now();
  let next = null; // the prefetched pair: a promise of {pair} or {none} or {error}
  let spare = null; // what the last save leased beside its judgment: {pair}, {none} or {error}
  let saving = Promise.resolve();
  let failed = null; // a judgment that could not be saved: {assignmentId, body, key}
  let player = null;
  let lastAnswered = null; // the assignment answered (or reported) last

  root.classList.add("js");

  // ---- talking to the server ----

  function randomKey() {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }

  async function call(method, path, body, headers = {}) {
    const init = { method, credentials: "same-origin", headers: { ...headers } };
    if (method !== "GET") init.headers["X-CSRF-Token"] = cfg.csrf;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(api + path, init);
    let data = null;
    if (res.status !== 204) data = await res.json().catch(() => null);
    return { status: res.status, data };
  }

  function fetchNext() {
    return call("GET", `/projects/${cfg.slug}/next`).then(
      (r) => {
        if (r.status === 200) return { pair: leased(r.data) };
        if (r.status === 204) return { none: true };
        return { error: r.data || { code: "http_" + r.status, message: "The server answered " + r.status } };
      },
      () => ({ error: { code: "network", message: "The server cannot be reached. Retrying when you answer." } }),
    );
  }

  // What a save's answer says of the pair after: leased, nothing left, or why
  // not; null when the answer cannot be read (the page then asks GET /next).
  function leasedBeside(data) {
    if (!data || !data.judgment) return null;
    if (data.next) return { pair: leased(data.next) };
    if (data.next_error) return { error: data.next_error };
    return { none: true };
  }

  function takeSpare() {
    const s = spare;
    spare = null;
    return s;
  }

  const RETRY_DELAYS = [500, 1000, 2000, 4000, 8000];
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // Save one judgment (and lease the pair after next), retrying network
  // failures and 5xx with the same Idempotency-Key, so a retry can never store
  // a second row.
  async function save(job) {
    const body = { assignment_id: job.assignmentId, judgment: job.body };
    for (let attempt = 0; ; attempt++) {
      let r;
      try {
        r = await call("POST", `/projects/${cfg.slug}/next`, body, { "Idempotency-Key": job.key });
      } catch (e) {
        r = { status: 0, data: null };
      }
      // 200: a retry's replay of the judgment its first try stored, whose
      // answer the page never saw. Either way the judgment is new to the page.
      if (r.status === 200 || r.status === 201) return { ok: true, after: leasedBeside(r.data) };
      const retryable = r.status === 0 || r.status >= 500 || r.status === 429;
      if (!retryable || attempt >= RETRY_DELAYS.length) {
        return { ok: false, retryable, message: (r.data && r.data.message) || "the server could not be reached" };
      }
      status(`Saving… (attempt ${attempt + 2})`);
      await sleep(RETRY_DELAYS[attempt]);
    }
  }

  function enqueueSave(job) {
    saving = saving.then(async () => {
      const result = await save(job);
      if (result.ok) {
        spare = result.after;
        status("Saved.");
        counted();
        return;
      }
      if (result.retryable) {
        failed = job;
        showError(`Your last answer could not be saved (${result.message}). It is kept here: press “Retry save”.`, true);
      } else {
        showError(`Your last answer was not stored: ${result.message}`, false);
      }
    });
    return saving;
  }

  // ---- progress ----

  // Between two reads of the server's figures, in ms (data-progress-every
  // overrides it, for tests).
  const progressEvery = () => Number(root.dataset.progressEvery) || 15000;
  let progressAt = Date.now(); // the page was rendered with fresh progress
  let progressTimer = null;

  // The leases this page was handed: the progress it was rendered with
  // already left out the pair it shows.
  const leasedHere = new Set(current ? [current.assignment_id] : []);

  function addTo(k, d) {
    const el = $("p-" + k);
    const n = el ? Number(el.textContent) : NaN; // "1000+" is not a number: left as it is
    if (Number.isInteger(n)) el.textContent = String(Math.max(0, n + d));
  }

  // A pair leased to this rater is no longer left for them: one fewer, unless
  // it is a lease already counted (the oldest handed back at the lease cap).
  // A repeat or a gold pair was not counted as left, which the page cannot
  // tell: the server's figures, read soon after, correct the count.
  function leased(pair) {
    if (!leasedHere.has(pair.assignment_id)) {
      leasedHere.add(pair.assignment_id);
      addTo("remaining", -1);
      readSoon();
    }
    return pair;
  }

  // A new judgment was stored: count it here at once.
  function counted() {
    addTo("today", 1);
    addTo("total", 1);
    readSoon();
  }

  // Have the server's figures (the streak, other raters' work) read within
  // progressEvery() of the last read.
  function readSoon() {
    if (progressTimer) return;
    const wait = Math.max(0, progressAt + progressEvery() - Date.now());
    progressTimer = setTimeout(refreshProgress, wait);
  }

  async function refreshProgress() {
    clearTimeout(progressTimer);
    progressTimer = null;
    progressAt = Date.now();
    const r = await call("GET", `/projects/${cfg.slug}/progress`).catch(() => null);
    if (!r || r.status !== 200) return;
    for (const k of ["today", "total", "streak_days", "remaining"]) {
      const el = $("p-" + k);
      if (el) el.textContent = String(r.data[k]) + (k === "remaining" && r.data.remaining_capped ? "+" : "");
    }
  }

  // ---- messages ----

  function status(text) {
    $("status").textContent = text;
  }

  function showError(text, canRetry) {
    const box = $("error");
    box.textContent = text;
    if (canRetry) {
      const b = document.createElement("button");
      b.type = "button";
      b.id = "retry-save";
      b.textContent = "Retry save";
      b.addEventListener("click", retryFailed);
      box.append(" ", b);
    }
    box.hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
  }

  function retryFailed() {
    if (!failed) return;
    const job = failed;
    failed = null;
    clearError();
    status("Saving…");
    enqueueSave(job).then(advanceIfWaiting);
  }

  // ---- showing a pair ----

  function show(pair) {
    current = pair;
    $("assignment-id").value = pair.assignment_id;
    $("prompt").textContent = pair.prompt;
    if (player) player.stop();
    player = null;
    const clips = pair.left.clip_url && pair.right.clip_url;
    for (const side of ["left", "right"]) {
      const box = $(side);
      box.replaceChildren();
      if (pair[side].text !== undefined) {
        const pre = document.createElement("pre");
        pre.textContent = pair[side].text;
        box.append(pre);
        box.scrollTop = 0;
      } else {
        const img = document.createElement("img");
        img.src = pair[side].clip_url;
        img.alt = side + " clip";
        box.append(img);
      }
    }
    $("clip-controls").hidden = !clips;
    $("diff-row").hidden = !!clips;
    if (clips) {
      player = new SyncPlayer($("left"), $("right"), pair.left.clip_url, pair.right.clip_url);
    } else if ($("diff-toggle").checked) {
      highlightDiff();
    }
    const r = $("rationale");
    if (r) r.value = "";
    for (const s of document.querySelectorAll("input[name=strength]")) s.checked = false;
    $("pair-view").hidden = false;
    $("done").hidden = true;
    $("break").hidden = true;
    shownAt = performance.now();
    root.dataset.assignment = pair.assignment_id;
  }

  function showDone() {
    current = null;
    if (player) player.stop();
    $("pair-view").hidden = true;
    $("done").hidden = false;
    refreshProgress();
  }

  function showBreak(message) {
    current = null;
    if (player) player.stop();
    $("pair-view").hidden = true;
    $("break-message").textContent = message;
    $("break").hidden = false;
  }

  let waiting = false;
  // Answers to a lease that mean "not now" rather than "something is wrong".
  const STOPS = ["break_time", "paused", "content_warning"];

  // Whether a prefetch or a save's word can be acted on as it is: a pair not
  // just answered, nothing left, or a stop. Other errors are asked again.
  function usable(got) {
    if (!got) return false;
    if (got.pair) return got.pair.assignment_id !== lastAnswered;
    return !!got.none || STOPS.includes(got.error.code);
  }

  async function advance() {
    waiting = true;
    status("Loading the next pair…");
    await saving;
    if (failed) {
      // Wait for the rater to retry the failed save; the prefetch stays in hand.
      waiting = false;
      return;
    }
    let got;
    if (spare && spare.error && STOPS.includes(spare.error.code)) {
      // The save says stop (a break is due, or the leads paused this rater):
      // that holds now, not one prefetched pair later. Once it is over, the
      // page asks for a pair afresh; the prefetched lease just runs out.
      got = takeSpare();
      next = null;
    } else {
      got = next ? await next : null;
      next = null;
      // A save's word is newer than a prefetch that found no pair, or found
      // the pair just answered (handed back at the lease cap).
      if (!(got && got.pair && usable(got))) {
        const word = takeSpare();
        if (usable(word)) got = word;
      }
    }
    // Nothing in hand, or only that: ask.
    if (!usable(got)) got = await fetchNext();
    waiting = false;
    if ($("status").textContent.startsWith("Loading")) status("");
    if (got.pair) {
      show(got.pair);
      // The pair after this one: what the save leased (or its word that
      // nothing is left), else ask for it.
      const after = takeSpare();
      const fits = after && (after.none || (after.pair && after.pair.assignment_id !== got.pair.assignment_id));
      next = fits ? Promise.resolve(after) : fetchNext();
    } else if (got.none) {
      showDone();
    } else if (STOPS.includes(got.error.code)) {
      showBreak(got.error.message);
    } else {
      showError(got.error.message, false);
    }
  }

  function advanceIfWaiting() {
    if (!current && !failed && $("done").hidden && $("break").hidden) advance();
  }

  // ---- answering ----

  function answer(choice) {
    if (!current || failed || waiting) return;
    if (!cfg.options.includes(choice)) return;
    const body = { choice, duration_ms: Math.round(performance.now() - shownAt) };
    const rationale = $("rationale") ? $("rationale").value.trim() : "";
    if (cfg.rationale === "required" && !rationale) {
      root.dataset.pendingChoice = choice;
      $("rationale").focus();
      status("Write a short reason, then press Enter.");
      return;
    }
    if (rationale) body.rationale = rationale;
    const strength = document.querySelector("input[name=strength]:checked");
    if (strength) body.strength = Number(strength.value);
    if (player) {
      body.replays = player.replays;
      body.answered_before_clip_end = !player.playedThrough;
    }
    const job = { assignmentId: current.assignment_id, body, key: randomKey() };
    lastAnswered = current.assignment_id;
    delete root.dataset.pendingChoice;
    current = null;
    enqueueSave(job);
    advance();
  }

  async function report(reason) {
    if (!current) return;
    const id = current.assignment_id;
    const r = await call("POST", `/assignments/${id}/report`, { reason }).catch(() => null);
    if (!r || r.status !== 201) {
      showError("The report could not be sent: " + ((r && r.data && r.data.message) || "network error"), false);
      return;
    }
    $("report-box").open = false;
    $("report-reason").value = "";
    status("Reported. The pair was removed from your queue.");
    // The rater may have answered it while the report was on its way.
    if (!current || current.assignment_id !== id) return;
    lastAnswered = id;
    current = null;
    advance();
  }

  // ---- word diff for text pairs ----

  function tokens(text) {
    return text.split(/(\s+)/).filter((t) => t.length > 0);
  }

  // Marks, for each side, which tokens are not in the longest common subsequence.
  function diff(a, b) {
    const n = a.length, m = b.length;
    if (n * m > 4_000_000) return null; // too long to compare in the page
    const dp = new Uint32Array((n + 1) * (m + 1));
    for (let i = n - 1; i >= 0; i--)
      for (let j = m - 1; j >= 0; j--)
        dp[i * (m + 1) + j] = a[i] === b[j] ? dp[(i + 1) * (m + 1) + j + 1] + 1 : Math.max(dp[(i + 1) * (m + 1) + j], dp[i * (m + 1) + j + 1]);
    const da = new Array(n).fill(true), db = new Array(m).fill(true);
    let i = 0, j = 0;
    while (i < n && j < m) {
      if (a[i] === b[j]) { da[i++] = false; db[j++] = false; }
      else if (dp[(i + 1) * (m + 1) + j] >= dp[i * (m + 1) + j + 1]) i++;
      else j++;
    }
    return [da, db];
  }

  function renderTokens(box, toks, changed) {
    const pre = document.createElement("pre");
    toks.forEach((t, k) => {
      if (changed && changed[k] && t.trim()) {
        const mark = document.createElement("mark");
        mark.textContent = t;
        pre.append(mark);
      } else {
        pre.append(document.createTextNode(t));
      }
    });
    box.replaceChildren(pre);
  }

  function highlightDiff() {
    if (!current || current.left.text === undefined) return;
    const a = tokens(current.left.text), b = tokens(current.right.text);
    const on = $("diff-toggle").checked;
    const d = on ? diff(a, b) : null;
    if (on && !d) status("These answers are too long to compare word by word.");
    renderTokens($("left"), a, d && d[0]);
    renderTokens($("right"), b, d && d[1]);
  }

  // ---- GIF clips on one clock ----

  // Both clips are decoded to frames (WebCodecs ImageDecoder) and drawn on
  // canvases from one clock. A cycle lasts as long as the longer clip; the
  // shorter one holds its last frame until the cycle ends, then both restart.
  class SyncPlayer {
    constructor(leftBox, rightBox, leftUrl, rightUrl) {
      this.boxes = [leftBox, rightBox];
      this.urls = [leftUrl, rightUrl];
      this.clips = null;
      this.t = 0;
      this.speed = Number($("clip-speed").value) || 1;
      this.playing = true;
      this.replays = 0;
      this.playedThrough = false;
      this.stopped = false;
      this.last = null;
      if (!("ImageDecoder" in window)) {
        // No frame access here: the browser animates the <img>s on its own.
        $("clip-controls").dataset.unsupported = "true";
        return;
      }
      this.load().catch((e) => status("The clips could not be decoded for synced playback: " + e));
    }

    async load() {
      this.clips = await Promise.all(this.urls.map((u) => decodeGif(u)));
      if (this.stopped) return;
      this.cycle = Math.max(this.clips[0].total, this.clips[1].total);
      this.canvases = this.boxes.map((box, k) => {
        const c = document.createElement("canvas");
        c.width = this.clips[k].width;
        c.height = this.clips[k].height;
        c.className = "clip";
        c.setAttribute("role", "img");
        c.setAttribute("aria-label", (k ? "right" : "left") + " clip");
        box.replaceChildren(c);
        return c;
      });
      $("clip-controls").dataset.ready = "true";
      this.draw();
      this.tick = this.tick.bind(this);
      requestAnimationFrame(this.tick);
    }

    tick(now) {
      if (this.stopped) return;
      if (this.playing && this.last !== null) {
        this.t += (now - this.last) * this.speed;
        if (this.t >= this.cycle) {
          this.playedThrough = true;
          this.t %= this.cycle;
        }
      }
      this.last = now;
      this.draw();
      requestAnimationFrame(this.tick);
    }

    frameAt(clip, t) {
      if (t >= clip.total) return clip.frames.length - 1;
      let k = 0;
      while (k + 1 < clip.starts.length && clip.starts[k + 1] <= t) k++;
      return k;
    }

    draw() {
      if (!this.clips) return;
      this.clips.forEach((clip, k) => {
        const f = this.frameAt(clip, this.t);
        const c = this.canvases[k];
        if (c.dataset.frame !== String(f)) {
          const ctx = c.getContext("2d");
          ctx.imageSmoothingEnabled = false;
          ctx.clearRect(0, 0, c.width, c.height);
          ctx.drawImage(clip.frames[f], 0, 0);
          c.dataset.frame = String(f);
        }
      });
      $("clip-controls").dataset.time = String(Math.round(this.t));
      $("clip-play").textContent = this.playing ? "Pause (p)" : "Play (p)";
    }

    toggle() { this.playing = !this.playing; this.draw(); }
    restart() { this.t = 0; this.playing = true; this.replays++; this.draw(); }
    setSpeed(s) { this.speed = s; }

    // Step to the next (or previous) frame boundary of either clip, paused, so
    // both show the frames that belong to the same moment.
    step(dir) {
      if (!this.clips) return;
      this.playing = false;
      const bounds = new Set([0]);
      for (const c of this.clips) for (const s of c.starts) bounds.add(s);
      const sorted = [...bounds].filter((b) => b < this.cycle).sort((x, y) => x - y);
      if (dir > 0) this.t = sorted.find((b) => b > this.t) ?? 0;
      else this.t = [...sorted].reverse().find((b) => b < this.t) ?? sorted[sorted.length - 1];
      this.draw();
    }

    stop() { this.stopped = true; }
  }

  async function decodeGif(url) {
    const res = await fetch(url, { credentials: "same-origin" });
    if (!res.ok) throw new Error("clip " + res.status);
    const data = await res.arrayBuffer();
    const dec = new ImageDecoder({ data, type: "image/gif" });
    await dec.tracks.ready;
    await dec.completed;
    const count = dec.tracks.selectedTrack.frameCount;
    const frames = [], starts = [];
    let total = 0, width = 0, height = 0;
    for (let i = 0; i < count; i++) {
      const { image } = await dec.decode({ frameIndex: i });
      width = image.displayWidth;
      height = image.displayHeight;
      frames.push(await createImageBitmap(image));
      starts.push(total);
      // Browsers play a GIF delay of 0 or 10 ms as 100 ms; so do we.
      const ms = image.duration ? image.duration / 1000 : 0;
      total += ms <= 10 ? 100 : ms;
      image.close();
    }
    dec.close();
    return { frames, starts, total, width, height };
  }

  // ---- wiring ----

  function keyMap(e) {
    const typing = e.target.closest && e.target.closest("textarea, input[type=text], input:not([type])");
    if (typing) {
      if (e.key === "Enter" && !e.shiftKey && e.target.id === "rationale") {
        e.preventDefault();
        const choice = root.dataset.pendingChoice;
        if (choice) answer(choice);
        else status("Now choose an answer with the arrow keys.");
        e.target.blur();
      }
      if (e.key === "Escape") e.target.blur();
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const choices = { ArrowLeft: "left", 1: "left", ArrowRight: "right", 2: "right", ArrowUp: "tie", 3: "tie", ArrowDown: "cant_tell", 4: "cant_tell" };
    let handled = true;
    if (choices[e.key]) answer(choices[e.key]);
    else if (e.key === " ") { if (player) player.restart(); }
    else if (e.key === "p") { if (player) player.toggle(); }
    else if (e.key === ".") { if (player) player.step(1); }
    else if (e.key === ",") { if (player) player.step(-1); }
    else if (e.key === "]" || e.key === "[") {
      const sel = $("clip-speed");
      sel.selectedIndex = Math.max(0, Math.min(sel.options.length - 1, sel.selectedIndex + (e.key === "]" ? 1 : -1)));
      if (player) player.setSpeed(Number(sel.value));
    }
    else if (e.key === "d") { $("diff-toggle").checked = !$("diff-toggle").checked; highlightDiff(); }
    else if (e.key === "i") { $("instructions").open = !$("instructions").open; }
    else if (e.key === "r") { $("report-box").open = true; $("report-reason").focus(); }
    else if (e.key === "?") { const k = $("keys"); k.open ? k.close() : k.showModal(); }
    else handled = false;
    if (handled) e.preventDefault();
  }

  document.addEventListener("keydown", keyMap);
  for (const b of document.querySelectorAll("#answers button[name=choice]")) {
    b.addEventListener("click", (e) => { e.preventDefault(); answer(b.value); });
  }
  $("report-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const reason = $("report-reason").value.trim();
    if (reason) report(reason);
  });
  $("clip-play").addEventListener("click", () => player && player.toggle());
  $("clip-restart").addEventListener("click", () => player && player.restart());
  $("clip-back").addEventListener("click", () => player && player.step(-1));
  $("clip-forward").addEventListener("click", () => player && player.step(1));
  $("clip-speed").addEventListener("change", (e) => player && player.setSpeed(Number(e.target.value)));
  $("diff-toggle").addEventListener("change", highlightDiff);
  $("show-keys").addEventListener("click", () => $("keys").showModal());
  $("break-retry").addEventListener("click", () => { $("break").hidden = true; advance(); });

  if (current) {
    show(current);
    next = fetchNext();
  }
})();
