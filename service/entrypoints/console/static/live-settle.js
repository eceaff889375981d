/* Pages whose fragments read projections (overview, batches): one more refresh of every
 * fragment a moment after the last live change. The live channel reports an event as
 * soon as it is in the log; the projections apply it a little later (their runners
 * follow the log), so the refresh console.js makes at once can still show the state
 * before it. */
(function () {
  "use strict";

  var SETTLE_AFTER = 1500; // ms after the last change
  var timer = null;

  document.addEventListener("console:change", function () {
    if (timer !== null) window.clearTimeout(timer);
    timer = window.setTimeout(function () {
      timer = null;
      var api = window.batchledgerConsole;
      if (!api) return;
      Array.prototype.forEach.call(document.querySelectorAll("[data-fragment]"), api.refresh);
    }, SETTLE_AFTER);
  });
})();
