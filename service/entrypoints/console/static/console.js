/* batchledger console: small vanilla JavaScript, no build step, no dependencies.
 *
 * 1. Times: every <time datetime="..."> is shown in the viewer's time zone; its title
 *    keeps the UTC time the server wrote.
 * 2. Confirmation: a form or submit button with data-confirm="Question?" asks first.
 * 3. Live updates: with data-live="<url>" on <body>, an EventSource on the live channel;
 *    #live-status says "Live", "Reconnecting…" or "Live updates paused", and each change
 *    is dispatched on document as a CustomEvent "console:change" whose detail is
 *    {position, type, stream, company} (detail.reconnected is true once after a
 *    reconnection, when changes may have been missed).
 * 4. Fragments: every element with data-fragment="NAME" is refreshed after changes
 *    (at most once a second) from ?fragment=NAME of the current URL; the element then
 *    receives "console:fragment". Pages needing more listen to "console:change"
 *    themselves and may call window.batchledgerConsole.refresh(element).
 */
(function () {
  "use strict";

  var localFormat = new Intl.DateTimeFormat(undefined, {
    dateStyle: "medium",
    timeStyle: "medium",
  });

  function utcTitle(date) {
    return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function formatTimes(root) {
    var times = (root || document).querySelectorAll("time[datetime]");
    Array.prototype.forEach.call(times, function (el) {
      if (el.dataset.localised) return;
      var date = new Date(el.getAttribute("datetime"));
      if (isNaN(date.getTime())) return;
      if (!el.title) el.title = utcTitle(date);
      el.textContent = localFormat.format(date);
      el.dataset.localised = "1";
    });
  }

  // -- 2. confirmation

  document.addEventListener(
    "submit",
    function (event) {
      var form = event.target;
      var button = event.submitter;
      var question =
        (button && button.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
      if (question && !window.confirm(question)) {
        event.preventDefault();
        event.stopImmediatePropagation();
      }
    },
    true
  );

  // -- 3. live updates

  var statusEl = null;

  function setStatus(text) {
    if (statusEl && statusEl.textContent !== text) statusEl.textContent = text;
  }

  var source = null;
  var paused = false;

  function pause() {
    paused = true;
    if (source) source.close();
    setStatus("Live updates paused");
  }

  function startLive(url) {
    var reconnecting = false;
    source = new EventSource(url);
    source.addEventListener("open", function () {
      setStatus("Live");
      if (reconnecting) {
        reconnecting = false;
        changed({ reconnected: true });
      }
    });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) {
        pause(); // refused (signed out, session ended): the browser will not retry
      } else {
        reconnecting = true;
        setStatus("Reconnecting…");
      }
    });
    source.addEventListener("change", function (event) {
      var detail;
      try {
        detail = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      changed(detail);
    });
    source.addEventListener("end", pause); // the session ended
  }

  function changed(detail) {
    document.dispatchEvent(new CustomEvent("console:change", { detail: detail }));
    scheduleRefresh();
  }

  // -- 4. fragments

  var REFRESH_EVERY = 1000;
  var lastRefresh = 0;
  var timer = null;

  function scheduleRefresh() {
    if (timer !== null || paused) return;
    var wait = Math.max(0, lastRefresh + REFRESH_EVERY - Date.now());
    timer = window.setTimeout(function () {
      timer = null;
      lastRefresh = Date.now();
      var elements = document.querySelectorAll("[data-fragment]");
      Array.prototype.forEach.call(elements, refresh);
    }, wait);
  }

  function refresh(element) {
    var url = new URL(window.location.href);
    url.hash = "";
    url.searchParams.set("fragment", element.getAttribute("data-fragment"));
    return fetch(url.toString(), {
      credentials: "same-origin",
      headers: { Accept: "text/html" },
    })
      .then(function (response) {
        if (response.status === 401) {
          pause();
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html === null) return;
        element.innerHTML = html;
        formatTimes(element);
        element.dispatchEvent(new CustomEvent("console:fragment", { bubbles: true }));
      })
      .catch(function () {
        setStatus("Reconnecting…");
      });
  }

  window.batchledgerConsole = { refresh: refresh, formatTimes: formatTimes };

  function start() {
    statusEl = document.getElementById("live-status");
    formatTimes(document);
    var url = document.body.getAttribute("data-live");
    if (url !== null && "EventSource" in window) startLive(url || "live");
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
