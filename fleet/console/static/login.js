(function () {
  "use strict";
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");
  // `fleet demo --console` prints a link with the token after '#': it never reaches a server
  if (window.location.hash.startsWith("#token=")) {
    document.getElementById("token").value = decodeURIComponent(window.location.hash.slice(7));
    history.replaceState(null, "", "/login");
    setTimeout(() => form.requestSubmit(), 0);
  }
  form.addEventListener("submit", async function (e) {
    e.preventDefault();
    error.textContent = "";
    const token = document.getElementById("token").value.trim();
    try {
      const r = await fetch("/api/login", {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ token: token }), credentials: "same-origin",
      });
      if (r.ok) { window.location.replace("/"); return; }
      const body = await r.json().catch(() => ({}));
      error.textContent = body.error || ("log in failed: HTTP " + r.status);
    } catch (err) {
      error.textContent = "the console cannot be reached: " + err;
    }
  });
})();
