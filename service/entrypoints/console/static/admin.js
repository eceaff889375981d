/* The superadmin pages: copying a new token, and following a projection rebuild.
 *
 * 1. Copy: a button with data-copy="<input id>" copies that input's value (the new
 *    token) and says so in #copy-status; an input with data-select-on-focus selects
 *    its whole value when focused, for copying by hand.
 * 2. Rebuild progress: an element with data-poll-while-running and data-fragment is
 *    refreshed every second while it holds an element with data-running (a rebuild in
 *    progress), through console.js's window.batchledgerConsole.refresh.
 */
(function () {
  "use strict";

  function say(text) {
    var status = document.getElementById("copy-status");
    if (status) status.textContent = text;
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("[data-copy]") : null;
    if (!button) return;
    var input = document.getElementById(button.getAttribute("data-copy"));
    if (!input) return;
    input.focus();
    input.select();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(
        function () {
          say("Copied to the clipboard.");
        },
        function () {
          say("Selected: press Ctrl+C (⌘C on a Mac) to copy.");
        }
      );
    } else {
      say("Selected: press Ctrl+C (⌘C on a Mac) to copy.");
    }
  });

  document.addEventListener("focusin", function (event) {
    var el = event.target;
    if (el && el.hasAttribute && el.hasAttribute("data-select-on-focus")) el.select();
  });

  var POLL_EVERY = 1000;

  function follow(element) {
    if (element.dataset.polling || !element.querySelector("[data-running]")) return;
    element.dataset.polling = "1";
    window.setTimeout(function () {
      var api = window.batchledgerConsole;
      var done = function () {
        delete element.dataset.polling;
        follow(element); // again while the rebuild runs
      };
      if (api) api.refresh(element).then(done, done);
    }, POLL_EVERY);
  }

  function start() {
    var elements = document.querySelectorAll("[data-poll-while-running][data-fragment]");
    Array.prototype.forEach.call(elements, function (element) {
      follow(element);
      // A live refresh may show a rebuild started meanwhile: follow it too.
      element.addEventListener("console:fragment", function () {
        follow(element);
      });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
