// onevoice inbox: follow a decision just sent until the pipeline has applied or rejected it,
// then reload the alert so its new status and history show. The page works without this script.
(function () {
  "use strict";
  function follow(box) {
    var eventId = box.getAttribute("data-event");
    var tries = 0;
    function poll() {
      tries += 1;
      fetch("/api/v1/decisions/" + encodeURIComponent(eventId), {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (outcome) {
          if (outcome && outcome.status !== "pending") {
            window.location.reload();
          } else if (tries < 120) {
            window.setTimeout(poll, tries < 20 ? 500 : 2000);
          }
        })
        .catch(function () { if (tries < 120) { window.setTimeout(poll, 2000); } });
    }
    window.setTimeout(poll, 300);
  }
  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("outcome");
    if (box && box.getAttribute("data-status") === "pending") { follow(box); }
    var form = document.querySelector("form.decision");
    if (form) {
      form.addEventListener("submit", function () {
        window.setTimeout(function () {
          form.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
        }, 0);
      });
    }
  });
})();
