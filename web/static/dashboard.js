// The teacher dashboard: polls /dashboard/data and redraws the tiles and tables.
import { $, apiError, el, showError } from "./dom.js";

const REFRESH_MS = 3000;
const PROMPT_CHARS = 60;

function tableRows(id, rows) {
  $(id).replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    cells.forEach((value) => tr.appendChild(value instanceof Node ? wrap(value) : el("td", null, value)));
    return tr;
  }));
}

function wrap(node) {
  const td = document.createElement("td");
  td.appendChild(node);
  return td;
}

function clock(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : "";
}

function render(data) {
  $("queued").textContent = data.queued;
  $("running").textContent = data.running;
  $("worker-count").textContent = data.workers.length;
  $("rate").textContent = data.steps_per_second;
  tableRows("workers", data.workers.map((w) => [w.name, w.model, w.device, w.active + " / " + w.capacity,
    w.steps_total, w.seconds_since_beat + " s ago", w.stalled ? "stalled" : "ok"]));
  tableRows("queues", data.queues.map((q) => [q.queue, q.waiting, q.waiting ? q.oldest_age.toFixed(0) + " s" : ""]));
  const outcomes = Object.entries(data.recent_outcomes).map(([status, n]) => n + " " + status);
  $("outcomes").textContent = outcomes.length ? "The last " + Object.values(data.recent_outcomes)
    .reduce((a, b) => a + b, 0) + " finished jobs: " + outcomes.join(", ") + "." : "No job has finished yet.";
  tableRows("recent", data.recent.map((job) => {
    const link = el("a", null, job.id.slice(0, 8) + "…");
    link.href = "/jobs/" + encodeURIComponent(job.id);
    const prompt = job.prompt.length > PROMPT_CHARS ? job.prompt.slice(0, PROMPT_CHARS) + "…" : job.prompt;
    const took = job.started_at && job.finished_at ? (job.finished_at - job.started_at).toFixed(1) + " s" : "";
    return [link, job.status + (job.error ? ": " + job.error : ""), prompt,
      job.steps_done + " / " + job.steps_total, job.model, took, clock(job.finished_at)];
  }));
  $("updated").textContent = "Updated " + new Date().toLocaleTimeString() + ".";
}

async function refresh() {
  try {
    const response = await fetch("/dashboard/data", { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(await apiError(response));
    render(await response.json());
    showError($("dash-error"), "");
  } catch (err) {
    showError($("dash-error"), "Could not refresh: " + err.message);
  }
  setTimeout(refresh, REFRESH_MS);
}

refresh();
