// Human forms of numbers, sizes, rates, times.

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB", "PB"];
  let v = Number(n);
  let i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  // Whole bytes print as they are; a rate of bytes (a fraction) is rounded.
  const shown = i === 0 ? (Number.isInteger(v) ? String(v) : v.toFixed(1)) : v.toFixed(v < 10 ? 2 : 1);
  return `${shown} ${units[i]}`;
}

export function count(n) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString("en-US");
}

export function rate(n) {
  if (n === null || n === undefined) return "–";
  const v = Number(n);
  return `${v >= 100 ? Math.round(v).toLocaleString("en-US") : v.toFixed(1)}/s`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

export function time(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  const sameDay = d.toDateString() === new Date().toDateString();
  return sameDay
    ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : d.toLocaleString([], { dateStyle: "short", timeStyle: "short" });
}

// Seconds a job ran (or has been running).
export function jobSeconds(job) {
  if (!job.started_at) return null;
  const end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
  return (end - Date.parse(job.started_at)) / 1000;
}

export function percent(job) {
  const p = job.progress?.percent;
  if (p === null || p === undefined) return null;
  return Math.max(0, Math.min(100, p));
}

export const TERMINAL = new Set(["completed", "failed", "cancelled"]);
