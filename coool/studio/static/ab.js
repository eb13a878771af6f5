// Blind A/B page: vote by click or key (a / b / t), move with arrows or j / k.
(() => {
  "use strict";
  const root = document.getElementById("ab");
  if (!root) return;
  const token = document.querySelector('meta[name="csrf-token"]').content;
  const status = document.getElementById("status");
  const count = document.getElementById("n-voted");
  const progress = document.getElementById("progress");
  const labels = { A: "A better", B: "B better", tie: "Tie" };
  let busy = false;

  function say(text, link) {
    status.textContent = text;
    if (link) {
      const a = document.createElement("a");
      a.href = link.href;
      a.textContent = link.text;
      status.append(" ", a);
    }
  }

  function mark(choice) {
    for (const button of document.querySelectorAll("button.vote")) button.classList.toggle("current", button.value === choice);
    for (const side of ["A", "B"]) document.getElementById(`side-${side}`).classList.toggle("chosen", side === choice);
    const dot = document.querySelector(".dot.here");
    if (dot) dot.classList.add("voted");
  }

  async function vote(choice) {
    if (busy) return;
    busy = true;
    try {
      const response = await fetch(root.dataset.voteUrl, {
        method: "POST",
        headers: { Accept: "application/json", "X-CSRF-Token": token },
        body: new URLSearchParams({ choice, csrf_token: token }),
        credentials: "same-origin",
      });
      // 403: this page's CSRF token belongs to another browser session (e.g. cookies cleared): reload.
      if (response.status === 403) throw new Error("the page's security token is stale; reload the page and vote again");
      if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
      const data = await response.json();
      mark(choice);
      count.textContent = String(data.voted);
      progress.value = data.voted;
      root.dataset.voted = String(data.voted);
      if (data.next) {
        say(`Saved: ${labels[choice]}. Next video…`);
        // A short pause lets the rater see the choice land before the page moves on.
        setTimeout(() => window.location.assign(data.next), 250);
      } else {
        const done = data.voted === data.total;
        say(`Saved: ${labels[choice]}. ${done ? `All ${data.total} voted.` : "Last video."}`,
            { href: root.dataset.summary, text: "See the summary" });
      }
    } catch (err) {
      say(`Vote NOT saved: ${err.message}`);
    } finally {
      busy = false;
    }
  }

  document.getElementById("vote-form").addEventListener("submit", (e) => {
    // The form works without JavaScript; with it, votes don't reload the page twice.
    e.preventDefault();
    if (e.submitter && e.submitter.value) vote(e.submitter.value);
  });

  const go = (url) => { if (url) window.location.assign(url); };
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.target.closest("input, select, textarea")) return;
    switch (e.key.toLowerCase()) {
      case "a": vote("A"); break;
      case "b": vote("B"); break;
      case "t": vote("tie"); break;
      case "arrowright": case "j": go(root.dataset.next); break;
      case "arrowleft": case "k": go(root.dataset.prev); break;
      default: return;
    }
    e.preventDefault();
  });
})();
