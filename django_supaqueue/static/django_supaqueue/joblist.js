// The job list refreshes itself, as the dashboard does: every few seconds it asks the same URL (its
// filters, search and page) for JSON holding the table and the pager rendered again, and swaps them
// in place. It pauses while the tab is hidden, a button stops it (WCAG 2.2.2: moving content can be
// paused), and it waits while the operator is at work on the list: a job ticked, an action chosen,
// or the keyboard focus in the table. No library, nothing loaded from elsewhere.
"use strict";
(function () {
  const root = document.getElementById("sq-joblist");
  if (!root) {
    return;
  }
  const results = document.getElementById("sq-joblist-results");
  const pager = document.getElementById("sq-joblist-pager");
  const status = document.getElementById("sq-joblist-status");
  const error = document.getElementById("sq-joblist-error");
  const toggle = document.getElementById("sq-joblist-toggle");
  const interval = Number(root.dataset.interval) || 5000;
  let timer = null;
  let paused = false;

  // Django's actions.js keeps the list of checkboxes it was started with; give it one that always
  // reads the current rows, so ticking, "select all" and the counter keep working after a swap.
  const liveCheckboxes = {
    rows() {
      return Array.from(results.querySelectorAll("tr input.action-select"));
    },
    get length() {
      return this.rows().length;
    },
    forEach(fn) {
      this.rows().forEach(fn);
    },
    [Symbol.iterator]() {
      return this.rows()[Symbol.iterator]();
    },
  };
  const djangoActions = window.Actions;
  if (typeof djangoActions === "function") {
    window.Actions = function (checkboxes, options) {
      return djangoActions(liveCheckboxes, options);
    };
  }

  function busy() {
    if (results.querySelector("input.action-select:checked, #action-toggle:checked")) {
      return true;
    }
    if (Array.from(document.querySelectorAll("input.select-across")).some((el) => el.value === "1")) {
      return true;
    }
    if (Array.from(document.querySelectorAll("#changelist-form select[name=action]")).some((el) => el.value)) {
      return true;
    }
    // Keyboard focus in the table (a person tabbing through it) would be lost by a swap; the focus
    // a mouse click leaves on a checkbox or link (not :focus-visible) does not hold the list.
    const focused = document.activeElement;
    return results.contains(focused) && focused.matches(":focus-visible");
  }

  function schedule() {
    clearTimeout(timer);
    if (!paused) {
      timer = setTimeout(refresh, interval);
    }
  }

  function swap(html) {
    const fresh = document.createElement("template");
    fresh.innerHTML = html;
    const oldTable = results.querySelector("#result_list");
    const newTable = fresh.content.querySelector("#result_list");
    const sameColumns =
      oldTable && newTable && oldTable.tHead && newTable.tHead &&
      oldTable.tHead.textContent === newTable.tHead.textContent &&
      oldTable.tBodies.length === 1 && newTable.tBodies.length === 1;
    if (sameColumns) {
      // Keep the table, its header and its body: Django's listeners hang on them.
      oldTable.tBodies[0].replaceChildren(...newTable.tBodies[0].children);
      return;
    }
    results.replaceChildren(fresh.content);
    // A new table (say the list was empty) needs Django's actions started on it.
    if (newTable && document.getElementById("action-toggle") && typeof window.Actions === "function") {
      window.Actions(liveCheckboxes);
    }
  }

  async function refresh() {
    if (document.hidden || busy()) {
      schedule();
      return;
    }
    try {
      const response = await fetch(window.location.pathname + window.location.search, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      const data = await response.json();
      if (!paused && !busy()) {
        swap(data.results);
        pager.innerHTML = data.pager;
        document.querySelectorAll("span.action-counter").forEach((counter) => {
          counter.dataset.actionsIcnt = String(data.rows);
          counter.textContent = data.selection_note;
        });
        status.innerHTML = data.status;
        error.textContent = "";
        root.dataset.refreshes = String(Number(root.dataset.refreshes) + 1);
      }
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
