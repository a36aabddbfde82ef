// keysentry "My Exchanges": small enhancements over pages that work without JavaScript.
// Refresh swaps a card in place, a status opens its guide in a dialog, the key form warns while
// typing and shows the check's result in place. Pasted values are sent only to this server's
// own endpoints, never stored here and never written into the page.
"use strict";

(function () {
  document.documentElement.classList.add("js");

  const csrf = () => {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  };

  const live = (message) => {
    const region = document.getElementById("live");
    if (!region) return;
    region.textContent = "";
    window.setTimeout(() => { region.textContent = message; }, 50);
  };

  const toLogin = () => { window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname)); };

  const fromHtml = (html) => {
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    return template.content.firstElementChild;
  };

  async function send(url, options, kind) {
    const headers = Object.assign({ "X-KS-Fragment": kind, "X-CSRF-Token": csrf() }, options.headers || {});
    const response = await fetch(url, Object.assign({}, options, { headers, credentials: "same-origin" }));
    if (response.status === 401) {
      toLogin();
      throw new Error("signed out");
    }
    return response;
  }

  // -- Refresh: re-check one connection and swap its card ----------------------------------------

  async function refresh(form, submitter) {
    const id = form.dataset.cardId || (form.closest("[data-card]") || {}).id;
    const button = submitter || form.querySelector("button[type=submit]");
    const label = button ? button.innerHTML : "";
    if (button) {
      button.disabled = true;
      button.textContent = "Checking…";
    }
    const card = id ? document.getElementById(id) : null;
    if (card) card.setAttribute("aria-busy", "true");
    try {
      const response = await send(form.action, { method: "POST", body: new FormData(form) }, "card");
      if (response.status === 403) {
        live("This page is out of date: reload it, then try again.");
        return;
      }
      const fresh = fromHtml(await response.text());
      if (card && fresh) {
        card.replaceWith(fresh);
        const title = fresh.querySelector(".badge-text");
        const name = fresh.querySelector("h3");
        live((name ? name.textContent.trim() + ": " : "") + (title ? title.textContent.trim() : "checked"));
      }
      const dialog = document.getElementById("guide-dialog");
      const inDialog = Boolean(dialog && dialog.open && dialog.contains(form));
      const onPage = document.querySelector('.detail-guide [data-guide-for="' + id + '"]');
      if (inDialog) {
        await loadGuide("/connections/" + id + "/guide", null, false);
      } else if (onPage) {
        await loadGuide("/connections/" + id + "/guide", onPage.parentElement);
      } else if (fresh) {
        const again = fresh.querySelector("[data-refresh] button");
        if (again) again.focus();
      }
    } catch (error) {
      if (button) button.innerHTML = label;
      live("The check could not be made. Try again.");
    } finally {
      if (button && document.contains(button)) {
        button.disabled = false;
        button.innerHTML = label;
      }
    }
  }

  // -- Guide dialog -----------------------------------------------------------------------------

  let openerCard = null; // the id of the card whose badge opened the dialog

  async function loadGuide(url, into, reopen = true) {
    const response = await send(url, { method: "GET" }, "guide");
    const html = await response.text();
    if (into) {
      into.innerHTML = html;
      const title = into.querySelector("#guide-title");
      if (title) title.focus();
      return;
    }
    const dialog = document.getElementById("guide-dialog");
    if (!dialog.open && !reopen) return; // closed while this loaded: stay closed
    document.getElementById("guide-body").innerHTML = html;
    if (!dialog.open) dialog.showModal();
    const heading = dialog.querySelector("#guide-title");
    if (heading) heading.focus();
  }

  async function openGuide(link) {
    const card = link.closest("[data-card]");
    const onPage = card && document.querySelector('.detail-guide [data-guide-for="' + card.id + '"]');
    if (onPage) {
      const heading = onPage.querySelector("#guide-title");
      if (heading) heading.focus();
      return;
    }
    openerCard = card ? card.id : null;
    try {
      await loadGuide(link.getAttribute("href"), null);
    } catch (error) {
      window.location.assign(link.getAttribute("href"));
    }
  }

  function setUpDialog() {
    const dialog = document.getElementById("guide-dialog");
    if (!dialog || typeof dialog.showModal !== "function") return false;
    dialog.addEventListener("close", () => {
      document.getElementById("guide-body").innerHTML = "";
      // back to the badge that opened it (the card may have been swapped meanwhile)
      const card = openerCard ? document.getElementById(openerCard) : null;
      const badge = card ? card.querySelector("[data-guide]") : null;
      if (badge) badge.focus();
      openerCard = null;
    });
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog) dialog.close(); // a click on the backdrop
    });
    return true;
  }

  // -- Copy buttons -----------------------------------------------------------------------------

  async function copy(button) {
    const text = button.dataset.copy || "";
    const status = button.parentElement.querySelector(".copy-status");
    let done = false;
    try {
      await navigator.clipboard.writeText(text);
      done = true;
    } catch (error) {
      const area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "offscreen";
      document.body.appendChild(area);
      area.select();
      try { done = document.execCommand("copy"); } catch (e) { done = false; }
      area.remove();
    }
    const message = done ? "Copied: " + text : "Select the addresses above and copy them.";
    if (status) status.textContent = message;
    button.textContent = done ? "Copied" : "Copy addresses";
    window.setTimeout(() => { button.textContent = "Copy addresses"; }, 2500);
  }

  // -- The key form: adapt to the exchange, warn while typing, show the result in place ------------

  function exchangeOf(form) {
    const checked = form.querySelector('input[name="exchange"]:checked');
    return checked ? checked.value : (form.dataset.exchange || "");
  }

  function adapt(form) {
    const checked = form.querySelector('input[name="exchange"]:checked');
    const exchange = exchangeOf(form);
    const passphrase = form.querySelector("[data-passphrase-field]");
    if (passphrase && checked) {
      const needed = checked.dataset.passphrase === "yes";
      passphrase.hidden = !needed;
      const input = passphrase.querySelector("input");
      input.required = needed;
      input.disabled = !needed;
    }
    form.querySelectorAll("[data-only-exchange]").forEach((el) => {
      el.hidden = el.dataset.onlyExchange !== exchange;
    });
    const env = form.querySelector("#environment");
    if (env && exchange) {
      let selectedVisible = false;
      Array.from(env.options).forEach((option) => {
        const mine = option.dataset.exchange === exchange;
        option.hidden = !mine;
        option.disabled = !mine;
        if (mine) option.textContent = option.value;
        if (mine && option.selected) selectedVisible = true;
      });
      if (!selectedVisible) {
        const first = Array.from(env.options).find((o) => o.dataset.exchange === exchange && o.value === "mainnet");
        if (first) first.selected = true;
      }
    }
    form.querySelectorAll("[data-check-field] input").forEach((input) => { if (input.value) scheduleCheck(form, input); });
  }

  const timers = new WeakMap();
  const sequence = new WeakMap();

  function scheduleCheck(form, input) {
    window.clearTimeout(timers.get(input));
    timers.set(input, window.setTimeout(() => checkField(form, input), 250));
  }

  async function checkField(form, input) {
    const field = input.closest("[data-check-field]").dataset.checkField;
    const notes = document.getElementById(field + "-notes");
    const exchange = exchangeOf(form);
    if (!notes) return;
    if (!exchange || !input.value || input.disabled) {
      notes.replaceChildren();
      input.removeAttribute("aria-invalid");
      return;
    }
    const n = (sequence.get(input) || 0) + 1;
    sequence.set(input, n);
    let answer;
    try {
      const response = await send("/connections/check-field", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ exchange: exchange, field: field, value: input.value }),
      }, "check");
      if (!response.ok) return;
      answer = await response.json();
    } catch (error) {
      return;
    }
    if (sequence.get(input) !== n) return; // a newer check is on its way
    const items = answer.findings.map((finding) => {
      const item = document.createElement("li");
      item.className = "note sev-" + finding.severity;
      const word = document.createElement("strong");
      word.textContent = finding.severity === "error" ? "Problem: " : "Note: ";
      item.append(word, document.createTextNode(finding.message));
      return item;
    });
    if (items.length) {
      const list = document.createElement("ul");
      list.append(...items);
      notes.replaceChildren(list);
    } else {
      notes.replaceChildren();
    }
    if (answer.ok) input.removeAttribute("aria-invalid");
    else input.setAttribute("aria-invalid", "true");
  }

  async function submitKeys(form, submitter) {
    const slot = document.getElementById("result");
    // before the button is disabled: a disabled submitter is left out of the form data
    const body = new FormData(form, submitter && submitter.name ? submitter : undefined);
    const button = submitter || form.querySelector('button[type="submit"]');
    const label = button ? button.textContent : "";
    if (button) {
      button.disabled = true;
      button.textContent = "Checking with the exchange…";
    }
    form.setAttribute("aria-busy", "true");
    try {
      const response = await send(form.action, { method: "POST", body: body }, "result");
      slot.innerHTML = await response.text();
      const result = slot.querySelector("[data-result]");
      const kind = result ? result.dataset.result : "";
      if (kind === "added" || kind === "updated") {
        form.reset();
        form.querySelectorAll(".field-notes").forEach((n) => n.replaceChildren());
        form.hidden = true;
      }
      const heading = slot.querySelector("#result-title");
      (heading || slot).focus();
      slot.scrollIntoView({ block: "start" });
    } catch (error) {
      if (error.message !== "signed out") form.submit();
    } finally {
      form.removeAttribute("aria-busy");
      if (button && document.contains(button)) {
        button.disabled = false;
        button.textContent = label;
      }
    }
  }

  function setUpKeyForm(form) {
    form.addEventListener("change", (event) => {
      if (event.target.name === "exchange") adapt(form);
    });
    form.addEventListener("input", (event) => {
      if (event.target.closest("[data-check-field]")) scheduleCheck(form, event.target);
    });
    form.querySelectorAll("[data-reveal]").forEach((button) => { button.hidden = false; });
    if (!form.querySelector('input[name="exchange"]:checked') && form.querySelector('input[name="exchange"]')) {
      const passphrase = form.querySelector("[data-passphrase-field]");
      if (passphrase) passphrase.hidden = true;
      form.querySelectorAll("[data-only-exchange]").forEach((el) => { el.hidden = true; });
    } else {
      adapt(form);
    }
  }

  // -- Wiring: one delegated listener per event, so swapped-in HTML works too -------------------

  document.addEventListener("DOMContentLoaded", () => {
    const dialogs = setUpDialog();
    document.querySelectorAll("[data-key-form]").forEach(setUpKeyForm);

    document.addEventListener("submit", (event) => {
      const form = event.target;
      if (form.matches("[data-refresh]")) {
        event.preventDefault();
        refresh(form, event.submitter);
      } else if (form.matches("[data-key-form]")) {
        event.preventDefault();
        submitKeys(form, event.submitter);
      }
    });

    document.addEventListener("click", (event) => {
      const guide = event.target.closest("a[data-guide]");
      if (guide && dialogs && !event.ctrlKey && !event.metaKey && !event.shiftKey) {
        event.preventDefault();
        openGuide(guide);
        return;
      }
      const close = event.target.closest("[data-close-dialog]");
      if (close) {
        close.closest("dialog").close();
        return;
      }
      const copyButton = event.target.closest("[data-copy]");
      if (copyButton) {
        copy(copyButton);
        return;
      }
      const reveal = event.target.closest("[data-reveal]");
      if (reveal) {
        const input = document.getElementById(reveal.dataset.reveal);
        const shown = input.type === "text";
        input.type = shown ? "password" : "text";
        reveal.textContent = shown ? "Show" : "Hide";
        reveal.setAttribute("aria-pressed", shown ? "false" : "true");
      }
    });
  });
})();
