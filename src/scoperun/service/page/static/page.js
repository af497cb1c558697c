// scoperun page: refresh the parts marked data-live-src by polling (no library, no inline script).
// A running run's section reloads the page once the run ends (to show its changes and buttons).
(function () {
  "use strict";
  var paused = false;
  var toggle = document.getElementById("live-toggle");
  if (toggle) {
    toggle.addEventListener("click", function () {
      paused = !paused;
      toggle.setAttribute("aria-pressed", paused ? "true" : "false");
      toggle.textContent = paused ? "Resume live" : "Pause live";
    });
  }
  function poll(el) {
    var every = parseInt(el.getAttribute("data-live-every") || "5000", 10);
    var src = el.getAttribute("data-live-src");
    function tick() {
      if (paused || document.hidden) { setTimeout(tick, every); return; }
      fetch(src, { credentials: "same-origin", headers: { "X-Requested-With": "scoperun-page" } })
        .then(function (r) {
          if (r.status === 401) { window.location.reload(); throw new Error("session"); }
          return r.text().then(function (text) { return { ok: r.ok, text: text }; });
        })
        .then(function (res) {
          if (!res.ok) { setTimeout(tick, every * 2); return; }
          var holder = document.createElement("div");
          holder.innerHTML = res.text;
          var section = holder.querySelector("[data-status]");
          var done = el.hasAttribute("data-live-reload-when-done") && section &&
            ["running", "queued"].indexOf(section.getAttribute("data-status")) < 0;
          if (done) { window.location.reload(); return; }
          el.replaceChildren.apply(el, Array.prototype.slice.call(holder.childNodes));
          setTimeout(tick, every);
        })
        .catch(function () { setTimeout(tick, every * 2); });
    }
    setTimeout(tick, every);
  }
  document.querySelectorAll("[data-live-src]").forEach(poll);
})();
