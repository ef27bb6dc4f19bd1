// Throughput samples per job, kept for the page's lifetime: every snapshot a
// stream delivers (the jobs list or a job's own events) adds a point, so a
// job watched from the list already has its history when its detail opens.

const samples = new Map();

export function record(job) {
  if (!job.started_at) return;
  const t = Date.parse(job.updated_at);
  const list = samples.get(job.id) || [];
  const last = list[list.length - 1];
  if (last && t <= last.t) return;
  if (!list.length) list.push({ t: Date.parse(job.started_at), files: 0, bytes: 0 });
  list.push({ t, files: job.progress.files_done, bytes: job.progress.bytes_done });
  samples.set(job.id, list);
}

// Files per second between consecutive samples.
export function throughput(jobId) {
  const list = samples.get(jobId) || [];
  const out = [];
  for (let i = 1; i < list.length; i += 1) {
    const dt = (list[i].t - list[i - 1].t) / 1000;
    if (dt <= 0) continue;
    out.push({ t: list[i].t, v: Math.max(0, (list[i].files - list[i - 1].files) / dt) });
  }
  if (out.length) out.unshift({ t: list[0].t, v: out[0].v });
  return out;
}
