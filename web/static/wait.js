// A rough wait estimate for a queued job, from /api/health: how fast the model's workers step (each
// worker's own progress between samples) and how many jobs they run at once.
const REFRESH_MS = 3000;

export class WaitEstimator {
  constructor(model) {
    this.model = model;
    this.since = new Map();  // worker name -> its first sample {time, steps}, taken again when its count restarts
    this.last = null;
    this.fetchedAt = 0;
  }

  /** Sample /api/health (at most every few seconds); errors just leave the estimate unknown. */
  async refresh() {
    if (Date.now() - this.fetchedAt < REFRESH_MS) return;
    this.fetchedAt = Date.now();
    try {
      const response = await fetch("/api/health", { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const health = await response.json();
      const mine = health.workers.filter((w) => w.model === this.model);
      const sum = (key) => mine.reduce((total, w) => total + w[key], 0);
      let rate = 0;  // steps/s of all jobs together: each worker's own progress since it was first seen
      for (const w of mine) {
        const first = this.since.get(w.name);
        if (!first || w.steps_total < first.steps) {  // new here, or restarted (its count began again)
          this.since.set(w.name, { time: health.time, steps: w.steps_total });
        } else if (health.time > first.time) {
          rate += (w.steps_total - first.steps) / (health.time - first.time);
        }
      }
      this.last = { workers: mine.length, rate, active: sum("active"), capacity: sum("capacity") };
    } catch (err) {
      // the job poll reports connection problems; the estimate just stays unknown
    }
  }

  /** A sentence about the wait for a job at `position` needing `steps` steps. */
  describe(position, steps) {
    const now = this.last;
    if (!now) return "Estimating the wait…";
    if (!now.workers) return "No worker serving this model is online yet; the job starts when one connects.";
    if (now.rate <= 0) return "Estimating the wait…";
    const perJob = now.rate / Math.max(now.active, 1);  // each running job advances one step per batched pass
    const rounds = Math.ceil(position / Math.max(now.capacity, 1));
    return "Roughly " + formatSeconds(rounds * steps / perJob) + " to wait (" + now.workers +
      " worker" + (now.workers === 1 ? "" : "s") + ", " + now.capacity + " jobs at a time).";
  }
}

function formatSeconds(seconds) {
  if (seconds < 90) return Math.max(1, Math.round(seconds)) + " s";
  return Math.round(seconds / 60) + " min";
}
