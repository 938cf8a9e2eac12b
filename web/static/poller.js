// Follows one job: polls /api/jobs/<id>?since=N (only new steps each time) until the job ends.
import { TERMINAL, apiError } from "./dom.js";

const RUNNING_MS = 250;
const QUEUED_MS = 1000;
const MAX_BACKOFF_MS = 5000;

/**
 * Poll a job. `onUpdate(job, freshSteps, allSteps)` runs after every answer; `onMissing()` on 404.
 * `onTrouble(message)` says why no answer came (network or server error, then it backs off and retries;
 * 400 or 403, then it stops), and is called with "" once answers come again.
 */
export function followJob(jobId, onUpdate, onMissing, onTrouble = () => {}) {
  const steps = [];
  let backoff = QUEUED_MS;
  let troubled = false;

  function trouble(message) {
    troubled = Boolean(message);
    onTrouble(message);
  }

  async function poll() {
    const since = steps.length ? steps[steps.length - 1].index : 0;
    let response, job;
    try {
      response = await fetch("/api/jobs/" + encodeURIComponent(jobId) + "?since=" + since,
        { headers: { Accept: "application/json" } });
      if (response.ok) job = await response.json();
    } catch (err) {
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      trouble("Cannot reach the server; retrying…");
      setTimeout(poll, backoff);
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
      setTimeout(poll, backoff);
      return;
    }
    if (troubled) trouble("");
    const fresh = job.steps.filter((s) => s.index > since);
    steps.push(...fresh);
    onUpdate(job, fresh, steps);
    if (TERMINAL.includes(job.status)) return;
    backoff = QUEUED_MS;
    setTimeout(poll, job.status === "running" ? RUNNING_MS : QUEUED_MS);
  }

  poll();
}
