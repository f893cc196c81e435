// The dashboard refreshes itself: every few seconds it fetches data/ (JSON with the panels rendered
// again) and swaps the panels in place. It pauses while the tab is hidden, and a button stops it
// (WCAG 2.2.2: moving content can be paused). No library, nothing loaded from elsewhere.
// Times come rendered by the server (the user's time zone, one format on every screen), never
// formatted here: the browser's locale would show another format after the first refresh.
"use strict";
(function () {
  const root = document.getElementById("sq-dashboard");
  if (!root) {
    return;
  }
  const panels = document.getElementById("sq-dashboard-panels");
  const status = document.getElementById("sq-dashboard-status");
  const error = document.getElementById("sq-dashboard-error");
  const toggle = document.getElementById("sq-dashboard-toggle");
  const interval = Number(root.dataset.interval) || 5000;
  let timer = null;
  let paused = false;

  function schedule() {
    clearTimeout(timer);
    if (!paused) {
      timer = setTimeout(refresh, interval);
    }
  }

  async function refresh() {
    if (document.hidden) {
      schedule();
      return;
    }
    try {
      const response = await fetch(root.dataset.url, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      const data = await response.json();
      const open = Array.from(panels.querySelectorAll("details[open]"), (d) => d.id);
      panels.innerHTML = data.html;
      open.forEach((id) => {
        const details = document.getElementById(id);
        if (details) {
          details.open = true;
        }
      });
      status.innerHTML = data.status_html;
      error.textContent = "";
      root.dataset.refreshes = String(Number(root.dataset.refreshes) + 1);
    } catch (err) {
      error.textContent = "Could not refresh (" + err.message + "); trying again.";
    }
    schedule();
  }

  toggle.hidden = false;
  toggle.addEventListener("click", () => {
    paused = !paused;
    toggle.setAttribute("aria-pressed", String(paused));
    toggle.textContent = paused ? "Resume auto-refresh" : "Pause auto-refresh";
    if (paused) {
      clearTimeout(timer);
    } else {
      refresh();
    }
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !paused) {
      refresh();
    }
  });
  schedule();
})();
