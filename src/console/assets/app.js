// provq console: confirmations, actions through the /api/v2 JSON API (same origin, session
// cookie), the overview's refresh, live logs and relative times. No framework, no build step.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/** Calls the JSON API; throws an Error carrying the API's message on a non-2xx answer. */
async function api(method, url, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(url, init);
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  if (!resp.ok) {
    let msg = (data && data.message) || `${resp.status} ${resp.statusText}`;
    if (data && data.detail) msg += ` ${data.detail}`;
    if (data && data.validations) {
      msg += " " + data.validations.map((v) => `${v.field}: ${v.detail}`).join("; ");
    }
    const err = new Error(msg);
    err.status = resp.status;
    throw err;
  }
  return data;
}

/** A message shown once, after the reload that follows an action. */
function flash(text) {
  sessionStorage.setItem("provq-flash", text);
}

function showFlash() {
  const text = sessionStorage.getItem("provq-flash");
  const el = $("[data-flash]");
  if (!text || !el) return;
  sessionStorage.removeItem("provq-flash");
  el.textContent = text;
  el.hidden = false;
}

/** What "Confirm" does, per dialog `data-action`; args are the dialog's `data-args`. */
const actions = {
  async "cancel-matching"(args) {
    const org = encodeURIComponent(args.organization);
    const r = await api("POST", `/api/v2/organizations/${org}/provisionerjobs/cancel`, JSON.parse(args.body));
    flash(`Canceled ${r.count} ${r.count === 1 ? "job" : "jobs"}.`);
    location.reload();
  },
  async "cancel-job"(args) {
    try {
      await api("POST", `${args.url}?expect_status=${encodeURIComponent(args.expect_status)}`);
    } catch (e) {
      if (e.status === 412) {
        throw new Error(`Nothing was canceled: the job is no longer ${args.expect_status}. Reload to see its status.`);
      }
      throw e;
    }
    flash("Job canceled.");
    location.reload();
  },
  async "set-prebuilds"(args) {
    const paused = args.paused === "true";
    await api("PUT", "/api/v2/prebuilds/settings", { reconciliation_paused: paused });
    flash(paused ? "Prebuilds paused." : "Prebuilds resumed.");
    location.reload();
  },
};

/** Before a dialog opens: re-read what it states, so the number is current. */
const prepare = {
  async "cancel-matching"(dialog, args) {
    const r = await api("GET", args.count_url);
    $("[data-dialog-count]", dialog).textContent = r.cancelable;
  },
};

function setupDialogs() {
  for (const opener of $$("[data-opens]")) {
    const dialog = document.getElementById(opener.dataset.opens);
    if (!dialog) continue;
    const args = () => JSON.parse(dialog.dataset.args || "{}");
    const error = $("[data-dialog-error]", dialog);
    const confirm = $("[data-confirm]", dialog);
    const fail = (e) => {
      error.textContent = e.message;
      error.hidden = false;
    };
    opener.addEventListener("click", async () => {
      error.hidden = true;
      confirm.disabled = false;
      const prep = prepare[dialog.dataset.action];
      if (prep) {
        try {
          await prep(dialog, args());
        } catch (e) {
          fail(e);
        }
      }
      dialog.showModal();
      dialog.dataset.ready = "true";
    });
    $("[data-keep]", dialog).addEventListener("click", () => {
      delete dialog.dataset.ready;
      dialog.close();
    });
    confirm.addEventListener("click", async () => {
      confirm.disabled = true;
      try {
        await actions[dialog.dataset.action](args());
      } catch (e) {
        fail(e);
        confirm.disabled = false;
      }
    });
  }
}

function setupLicenseForm() {
  const form = $("form[data-action=add-license]");
  if (!form) return;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const error = $("[data-form-error]", form);
    error.hidden = true;
    try {
      await api("POST", "/api/v2/licenses", { license: form.elements.license.value });
      flash("License added.");
      location.reload();
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    }
  });
}

/** The same words as the server's `duration_words`. */
function durationWords(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) {
    const m = Math.floor((s % 3600) / 60);
    return m ? `${Math.floor(s / 3600)} h ${m} min` : `${Math.floor(s / 3600)} h`;
  }
  const h = Math.floor((s % 86400) / 3600);
  return h ? `${Math.floor(s / 86400)} d ${h} h` : `${Math.floor(s / 86400)} d`;
}

function relative(date) {
  const secs = (Date.now() - date.getTime()) / 1000;
  if (Math.abs(secs) < 5) return "just now";
  return secs > 0 ? `${durationWords(secs)} ago` : `in ${durationWords(-secs)}`;
}

function setupTimes() {
  setInterval(() => {
    for (const t of $$("time[data-relative]")) t.textContent = relative(new Date(t.dateTime));
  }, 15000);
}

/** The overview re-reads `GET …/queue` for each organization every few seconds. */
function setupOverview() {
  for (const section of $$("section[data-queue-url]")) {
    const ms = Number(section.dataset.refreshMs) || 4000;
    const put = (sel, value) => {
      const el = $(sel, section);
      if (el) el.textContent = value;
    };
    const tick = async () => {
      try {
        const q = await api("GET", section.dataset.queueUrl);
        for (const el of $$("[data-count]", section)) {
          const key = el.dataset.count;
          el.textContent = key === "unmatched" ? q.pending_unmatched : q.jobs[key] || 0;
        }
        const oldest = q.oldest_pending_age_seconds;
        put("[data-stat=oldest]", oldest === null || oldest === undefined ? "—" : durationWords(oldest));
        put("[data-stat=enqueued]", q.enqueued_last_5m);
        put("[data-stat=finished]", q.finished_last_5m);
        for (const k of ["idle", "busy", "offline"]) put(`[data-daemons=${k}]`, q.daemons[k]);
        put("[data-updated]", new Date().toLocaleTimeString());
        section.dataset.refreshed = String(Number(section.dataset.refreshed || 0) + 1);
      } catch (e) {
        put("[data-updated]", `failed (${e.message})`);
      }
      setTimeout(tick, ms);
    };
    setTimeout(tick, ms);
  }
}

/** Streams a job's log lines over the API's WebSocket follow until the job ends. */
function setupLogs() {
  const log = $("pre[data-logs-url]");
  if (!log) return;
  const finishedAtLoad = log.dataset.finished === "true";
  const statusEl = $("[data-job-status]");
  let after = 0;
  let retries = 0;
  let reloading = false;
  const reload = () => {
    if (!reloading) {
      reloading = true;
      location.reload();
    }
  };
  const append = (line) => {
    const follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
    const row = document.createElement("span");
    row.className = `line l-${line.log_level}`;
    const at = new Date(line.created_at);
    const stage = line.stage ? `[${line.stage}] ` : "";
    row.textContent = `${at.toISOString().slice(11, 19)} ${stage}${line.output}\n`;
    log.appendChild(row);
    if (follow) log.scrollTop = log.scrollHeight;
  };
  const connect = () => {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}${log.dataset.logsUrl}?follow&after=${after}`);
    ws.addEventListener("open", () => {
      log.dataset.following = "true";
    });
    ws.addEventListener("message", (ev) => {
      const line = JSON.parse(ev.data);
      after = Math.max(after, line.id);
      retries = 0;
      append(line);
    });
    ws.addEventListener("close", async () => {
      delete log.dataset.following;
      try {
        const job = await api("GET", log.dataset.jobUrl);
        if (job.completed_at) {
          log.dataset.ended = "true";
          if (!finishedAtLoad) reload();
          return;
        }
      } catch (_) {
        // Retry below.
      }
      retries += 1;
      setTimeout(connect, Math.min(10000, 250 * 2 ** retries));
    });
  };
  connect();
  // A status change (started, canceled, finished) re-renders the page: the timeline, the
  // fields and whether the cancel button shows.
  if (statusEl && !finishedAtLoad) {
    const poll = async () => {
      try {
        const job = await api("GET", log.dataset.jobUrl);
        if (job.status !== statusEl.dataset.jobStatus) return reload();
      } catch (_) {
        // Try again at the next tick.
      }
      setTimeout(poll, 2000);
    };
    setTimeout(poll, 2000);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  showFlash();
  setupDialogs();
  setupLicenseForm();
  setupTimes();
  setupOverview();
  setupLogs();
  document.body.dataset.ready = "true";
});
