// Follows one job: polls /api/jobs/<id>?since=N (only new steps each time) until the job ends.
import { TERMINAL, apiError } from "./dom.js";

const RUNNING_MS = 250;
const QUEUED_MS = 1000;
const MAX_BACKOFF_MS = 5000;

/**
 * Poll a job. `onUpdate(job, freshSteps, allSteps)` runs after every answer; `onMissing()` on 404.
 * `onTrouble(message)` says why no answer came (network or server error, then it backs off and retries;
 * 400 or 403, then it stops), and is called with "" once answers come again.
 * Returns `{ refresh }`: ask once more now, even after the job ended (a guess job shows a step once it is guessed).
 */
export function followJob(jobId, onUpdate, onMissing, onTrouble = () => {}) {
  const steps = [];
  let backoff = QUEUED_MS;
  let troubled = false;
  let timer = null;
  let sent = 0;  // polls sent so far; an answer to an older one than the last applied is dropped
  let applied = 0;

  function later(ms) {
    clearTimeout(timer);
    timer = setTimeout(poll, ms);
  }

  function trouble(message) {
    troubled = Boolean(message);
    onTrouble(message);
  }

  async function poll() {
    const since = steps.length ? steps[steps.length - 1].index : 0;
    const number = ++sent;
    let response, job;
    try {
      response = await fetch("/api/jobs/" + encodeURIComponent(jobId) + "?since=" + since,
        { headers: { Accept: "application/json" } });
      if (response.ok) job = await response.json();
    } catch (err) {
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      trouble("Cannot reach the server; retrying…");
      later(backoff);
      return;
    }
    if (response.status === 404) {
      onMissing();
      return;
    }
    if (response.status === 400 || response.status === 403) {  // asking again would get the same answer
      trouble(await apiError(response));
      return;
    }
    if (!response.ok) {
      const wait = Number(response.headers.get("Retry-After")) * 1000;
      backoff = Math.min(Math.max(backoff * 2, wait || 0), MAX_BACKOFF_MS);
      trouble("Cannot follow the job just now (" + (await apiError(response)) + "); retrying…");
      later(backoff);
      return;
    }
    if (number < applied) return;  // a newer answer came first
    applied = number;
    if (troubled) trouble("");
    const last = steps.length ? steps[steps.length - 1].index : 0;
    const fresh = job.steps.filter((s) => s.index > last);
    steps.push(...fresh);
    onUpdate(job, fresh, steps);
    if (TERMINAL.includes(job.status)) return;
    backoff = QUEUED_MS;
    later(job.status === "running" ? RUNNING_MS : QUEUED_MS);
  }

  poll();
  return { refresh: poll };
}
