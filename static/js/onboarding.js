// The "Get started" checklist (templates/dashboard/includes/onboarding.html): every 2 s, asks the
// dashboard for the workspace's steps and latest events, ticks the steps that are done and lists
// the events as they arrive, without reloading the page. Without JS the page is right as served.
(function () {
  "use strict";
  var section = document.getElementById("get-started");
  if (!section || !window.fetch) return;
  var url = section.getAttribute("data-poll-url");
  var list = document.getElementById("live-events");
  var status = document.getElementById("live-status");
  var left = document.getElementById("steps-left");
  var INTERVAL = 2000;
  var GIVE_UP_AFTER = 30 * 60 * 1000; // a forgotten tab stops asking after half an hour
  var started = Date.now();
  var shown = "";

  // "0.004000" → "$0.004": the API's exact decimal string, trimmed, never through a float.
  function usd(amount) {
    var parts = String(amount).split(".");
    var fraction = (parts[1] || "").replace(/0+$/, "");
    while (fraction.length < 2) fraction += "0";
    return "$" + parts[0] + "." + fraction;
  }

  // "16:04:05 — generation · sdxl × 10 — $1.69 (evt-1)": the time in the workspace's zone, as
  // every page shows times, with the UTC one on hover.
  function describe(event, item) {
    var when = document.createElement("time");
    var utc = new Date(event.received_at).toISOString();
    when.setAttribute("datetime", utc);
    when.title = utc.slice(0, 19).replace("T", " ") + " UTC";
    when.textContent = event.received_at_local;
    var what = event.feature + (event.model ? " · " + event.model : "");
    item.appendChild(when);
    item.appendChild(document.createTextNode(" — " + what + " × " + event.quantity + " — " + usd(event.amount) + " (" + event.event_id + ")"));
  }

  function showEvents(events) {
    var key = events.map(function (e) { return e.event_id; }).join("\n");
    if (key === shown) return;
    shown = key;
    list.textContent = "";
    events.forEach(function (event) {
      var item = document.createElement("li");
      describe(event, item);
      item.setAttribute("data-event-id", event.event_id);
      list.appendChild(item);
    });
    if (events.length) status.textContent = "Received — your latest events:";
  }

  function tick(steps) {
    var open = 0;
    Object.keys(steps).forEach(function (name) {
      var step = section.querySelector('[data-step="' + name + '"]');
      if (!step) return;
      step.classList.toggle("done", steps[name]);
      step.querySelector(".step-state").textContent = steps[name] ? "Done" : "To do";
      if (!steps[name]) open += 1;
    });
    if (left) left.textContent = String(open);
  }

  function poll() {
    if (Date.now() - started > GIVE_UP_AFTER) return;
    if (document.hidden) { setTimeout(poll, INTERVAL); return; }
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (answer) {
        if (answer) { tick(answer.steps); showEvents(answer.events); }
      })
      .catch(function () { /* offline for a moment: the next poll tries again */ })
      .then(function () { setTimeout(poll, INTERVAL); });
  }

  poll();
})();
