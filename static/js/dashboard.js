// Small progressive enhancements; every page works without them.
(function () {
  "use strict";

  // A <select data-autosubmit> submits its form when changed (the workspace switcher).
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });

  // On a phone the workspace's pages fold behind a button that names the current one (the CSS
  // shows it only on narrow screens); Escape folds them again. Without this, they all wrap.
  var tabs = document.querySelector("nav.tabs");
  var toggle = tabs && tabs.querySelector(".tabs-toggle");
  if (toggle) {
    var current = tabs.querySelector(".tabs-list a[aria-current='page']");
    toggle.querySelector(".tabs-current").textContent = current ? current.textContent : "Pages";
    toggle.hidden = false;
    tabs.classList.add("tabs-collapsible");
    var fold = function (open) {
      tabs.classList.toggle("open", open);
      toggle.setAttribute("aria-expanded", String(open));
    };
    toggle.addEventListener("click", function () { fold(!tabs.classList.contains("open")); });
    tabs.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && tabs.classList.contains("open")) { fold(false); toggle.focus(); }
    });
  }

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

  // A table wider than its box scrolls sideways; a keyboard reaches that scroller only if it is
  // focusable (WCAG 2.1.1). So a .table-wrap that overflows becomes a named, focusable region
  // (arrow keys then scroll it), and stops being one when it no longer overflows: phone width,
  // a <details> opened, a rotated screen.
  // Its name: the table's caption (else the heading above it); prefixed with its section's heading
  // when another table has that name already ("October 2026 — pending close: Summary"), numbered
  // when even that is taken: landmarks of a page must be told apart.
  function clean(node) {
    if (!node) return "";
    node = node.cloneNode(true);
    node.querySelectorAll(".badge").forEach(function (badge) { badge.remove(); });  // "Pending close" twice
    return node.textContent.replace(/\s+/g, " ").trim();
  }
  function labelOf(wrap, taken) {
    var section = wrap.closest("section, .card");
    var sectionHeading = clean(section && section.querySelector("h1, h2, h3"));
    var group = wrap.closest("details");
    var own = clean(wrap.querySelector("caption")) || clean(group && group.querySelector("summary")) || sectionHeading || "Table";
    var label = own;
    if (taken.indexOf(label) !== -1 && sectionHeading && sectionHeading !== own) label = sectionHeading + ": " + own;
    for (var n = 2, base = label; taken.indexOf(label) !== -1; n++) label = base + " (" + n + ")";
    taken.push(label);
    return label + " (scrolls sideways)";
  }
  function keyboardScrollers() {
    var taken = [];
    document.querySelectorAll(".table-wrap[data-keyboard-scroll]").forEach(function (wrap) {
      taken.push(wrap.getAttribute("aria-label").replace(/ \(scrolls sideways\)$/, ""));
    });
    document.querySelectorAll(".table-wrap").forEach(function (wrap) {
      var overflows = wrap.scrollWidth > wrap.clientWidth + 1;
      var ours = wrap.hasAttribute("data-keyboard-scroll");
      if (overflows && !ours && !wrap.hasAttribute("tabindex")) {
        wrap.setAttribute("data-keyboard-scroll", "");
        wrap.setAttribute("tabindex", "0");
        wrap.setAttribute("role", "region");
        wrap.setAttribute("aria-label", labelOf(wrap, taken));
      } else if (!overflows && ours) {
        ["data-keyboard-scroll", "tabindex", "role", "aria-label"].forEach(function (name) { wrap.removeAttribute(name); });
      }
    });
  }
  // A table.stackable too wide for its box at this width becomes .stacked: each row a card of
  // labelled lines (the CSS). Measured rather than guessed from the window's width: a chart's
  // table has a column per feature used, a name may be long.
  function stackTables() {
    document.querySelectorAll("table.stackable").forEach(function (table) {
      table.classList.remove("stacked");
      var room = table.parentElement.clientWidth;
      if (room && table.offsetWidth > room + 1) table.classList.add("stacked");
    });
  }
  var pending = false;
  function soon() {
    if (pending) return;
    pending = true;
    window.requestAnimationFrame(function () { pending = false; stackTables(); keyboardScrollers(); });
  }
  stackTables();
  keyboardScrollers();
  window.addEventListener("resize", soon);
  document.addEventListener("toggle", soon, true);  // <details> opening; toggle does not bubble

  // After a form comes back with errors, the focus goes to the first field in error (its error is
  // announced: the list is role=alert), so that a keyboard user fixes it where they are.
  var invalid = document.querySelector("main [aria-invalid='true']");
  if (invalid && !document.querySelector("[autofocus]")) invalid.focus();

  // Print buttons on the printable statement.
  document.querySelectorAll("button[data-print]").forEach(function (button) {
    button.addEventListener("click", function () { window.print(); });
  });
})();
