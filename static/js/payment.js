// Add or replace the workspace's card: Stripe.js Elements collect it, a SetupIntent (created by
// POST /api/v1/billing/setup-intent) confirms it for off-session charges, and
// POST /api/v1/billing/payment-method makes it the default. Card numbers never reach Meterboard.
(function () {
  "use strict";
  var form = document.getElementById("card-form");
  if (!form) return;
  var errors = document.getElementById("card-errors");
  var button = document.getElementById("save-card");
  var csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;

  if (typeof Stripe === "undefined") {
    errors.textContent = "The payment form could not load. Check your connection and reload the page.";
    button.disabled = true;
    return;
  }
  var stripe = Stripe(form.getAttribute("data-publishable-key"));
  var card = stripe.elements().create("card", { hidePostalCode: false });
  card.mount("#card-element");

  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf, "Accept": "application/json" },
      body: JSON.stringify(body || {}),
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          var message = data.detail || (data.payment_method && data.payment_method.join(" ")) || "The card could not be saved.";
          throw new Error(message);
        }
        return data;
      });
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    errors.textContent = "";
    button.disabled = true;
    button.textContent = "Saving…";
    post(form.getAttribute("data-setup-url"))
      .then(function (intent) {
        return stripe.confirmCardSetup(intent.client_secret, { payment_method: { card: card } });
      })
      .then(function (result) {
        if (result.error) throw new Error(result.error.message || "The card was declined.");
        var method = result.setupIntent.payment_method;
        return post(form.getAttribute("data-method-url"), { payment_method: typeof method === "string" ? method : method.id });
      })
      .then(function () {
        window.location.assign(form.getAttribute("data-done-url"));
      })
      .catch(function (error) {
        errors.textContent = error.message;
        button.disabled = false;
        button.textContent = "Save card";
      });
  });
})();
