// Video page: frame counter, playhead on the timeline, click-to-seek, frame stepping.
(() => {
  "use strict";
  const player = document.getElementById("player");
  const lanes = document.querySelector(".lanes");
  const playhead = document.getElementById("playhead");
  const counter = document.getElementById("frame-now");
  const timeline = document.getElementById("timeline");
  const frames = parseInt((timeline && timeline.dataset.frames) || "1", 10) || 1;
  const fps = player ? parseFloat(player.dataset.fps) || 30 : 30;

  // Frame n (1-based) is on screen from (n-1)/fps; aim at its middle so rounding can't land on n-1.
  const frameAt = (t) => Math.max(1, Math.min(frames, Math.floor(t * fps + 1e-3) + 1));
  const seek = (frame) => {
    if (!player) return;
    player.pause();
    player.currentTime = (Math.max(1, Math.min(frames, frame)) - 0.5) / fps;
  };

  function update() {
    if (!player) return;
    const frame = frameAt(player.currentTime);
    if (counter) counter.textContent = String(frame);
    const bar = lanes && lanes.querySelector("svg.lane");
    if (!bar || !playhead) return;
    const box = bar.getBoundingClientRect();
    const outer = lanes.getBoundingClientRect();
    const frac = frames > 1 ? (frame - 1) / (frames - 1) : 0;
    playhead.hidden = false;
    playhead.style.left = `${box.left - outer.left + frac * box.width}px`;
  }

  if (player) {
    for (const ev of ["timeupdate", "seeked", "loadedmetadata", "play", "pause"]) player.addEventListener(ev, update);
    window.addEventListener("resize", update);
    // Smooth counter while playing where the browser supports per-frame callbacks.
    if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
      const tick = () => { update(); player.requestVideoFrameCallback(tick); };
      player.requestVideoFrameCallback(tick);
    }
  }

  document.addEventListener("click", (e) => {
    const mark = e.target.closest(".seek");
    if (mark) { seek(parseInt(mark.dataset.frame, 10)); return; }
    const bar = e.target.closest("svg.lane");
    if (bar) {
      const box = bar.getBoundingClientRect();
      seek(1 + Math.round(((e.clientX - box.left) / box.width) * (frames - 1)));
    }
  });

  const step = (d) => { if (player) seek(frameAt(player.currentTime) + d); };
  const back = document.getElementById("step-back");
  const fwd = document.getElementById("step-fwd");
  if (back) back.addEventListener("click", () => step(-1));
  if (fwd) fwd.addEventListener("click", () => step(1));

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.target.closest("input, select, textarea")) return;
    const go = (id) => { const a = document.getElementById(id); if (a) window.location.assign(a.href); };
    switch (e.key) {
      case ",": step(-1); break;
      case ".": step(1); break;
      case "j": go("next"); break;
      case "k": go("prev"); break;
      case " ": if (player && e.target !== player) { player.paused ? player.play() : player.pause(); } else return; break;
      default: return;
    }
    e.preventDefault();
  });
  update();
})();
