// Follows one job: polls /api/jobs/<id>?since=N (only new steps each time) until the job ends.
import { TERMINAL } from "./dom.js";

const RUNNING_MS = 250;
const QUEUED_MS = 1000;
const MAX_BACKOFF_MS = 5000;

/**
 * Poll a job. `onUpdate(job, freshSteps, allSteps)` runs after every answer; `onMissing()` on 404.
 * Network or server errors back off and retry; the loop ends with the job.
 */
export function followJob(jobId, onUpdate, onMissing) {
  const steps = [];
  let backoff = QUEUED_MS;

  async function poll() {
    const since = steps.length ? steps[steps.length - 1].index : 0;
    let next;
    try {
      const response = await fetch("/api/jobs/" + encodeURIComponent(jobId) + "?since=" + since,
        { headers: { Accept: "application/json" } });
      if (response.status === 404) {
        onMissing();
        return;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      const job = await response.json();
      const fresh = job.steps.filter((s) => s.index > since);
      steps.push(...fresh);
      onUpdate(job, fresh, steps);
      if (TERMINAL.includes(job.status)) return;
      backoff = QUEUED_MS;
      next = job.status === "running" ? RUNNING_MS : QUEUED_MS;
    } catch (err) {
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      next = backoff;
    }
    setTimeout(poll, next);
  }

  poll();
}
