/* The overview page: keep the chart's table open or closed across live refreshes (the
 * fragment's markup is replaced; a <details> would otherwise close again). */
(function () {
  "use strict";

  var open = false;

  document.addEventListener(
    "toggle",
    function (event) {
      var el = event.target;
      if (el && el.classList && el.classList.contains("chart-data")) open = el.open;
    },
    true
  );

  document.addEventListener("console:fragment", function (event) {
    var details = event.target.querySelector && event.target.querySelector("details.chart-data");
    if (details && details.open !== open) details.open = open;
  });
})();
