// Small progressive enhancements; every page works without them.
(function () {
  "use strict";

  // A <select data-autosubmit> submits its form when changed (the workspace switcher).
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });

  // <form data-confirm="Question?"> asks before submitting (revoke a key, remove a member).
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });

  // <button data-copy="#id"> copies the text of the element it names (a new key's secret).
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var target = document.querySelector(button.getAttribute("data-copy"));
      if (!target) return;
      var text = (target.value !== undefined ? target.value : target.textContent).trim();
      var done = function () {
        var label = button.textContent;
        button.textContent = "Copied";
        button.classList.add("copied");
        setTimeout(function () { button.textContent = label; button.classList.remove("copied"); }, 2000);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { fallback(target); done(); });
      } else {
        fallback(target);
        done();
      }
    });
  });

  function fallback(target) {
    if (target.select) {
      target.select();
      try { document.execCommand("copy"); } catch (e) { /* the text stays selected for Ctrl-C */ }
    }
  }

  // Print buttons on the printable statement.
  document.querySelectorAll("button[data-print]").forEach(function (button) {
    button.addEventListener("click", function () { window.print(); });
  });
})();
