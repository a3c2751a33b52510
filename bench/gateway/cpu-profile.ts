// Where a process spent its CPU: self time per function and per area (Tollgate folder, npm package,
// Node internals, GC) from a V8 .cpuprofile written by `node --cpu-prof`.
// Also usable alone: `node --import tsx bench/gateway/cpu-profile.ts FILE.cpuprofile [FROM_MS TO_MS]`.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Milliseconds since the profile started (about when the process did). */
export interface ProfileWindow {
  fromMs: number;
  toMs: number;
}

export interface ProfileSummary {
  window: ProfileWindow | null;
  totalMs: number;
  idleMs: number;
  functions: { name: string; location: string; selfMs: number }[];
  areas: { area: string; selfMs: number }[];
}

const topFunctions = 25;
const topAreas = 15;

/** Self time per function and area, of the samples inside `window` (all of them without one). */
export function summarizeProfile(file: string, repoRoot: string, window: ProfileWindow | null = null): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  let sinceStartUs = 0;
  // A sample's time is the delta to the next sample, so each sample is charged its own interval.
  for (let i = 0; i < profile.samples.length; i++) {
    sinceStartUs += profile.timeDeltas[i] ?? 0;
    if (window && (sinceStartUs < window.fromMs * 1000 || sinceStartUs > window.toMs * 1000)) continue;
    const delta = profile.timeDeltas[i + 1] ?? 0;
    selfUs.set(profile.samples[i], (selfUs.get(profile.samples[i]) ?? 0) + Math.max(delta, 0));
  }
  const rootUrl = pathToFileURL(repoRoot).href + '/';
  const functions = new Map<string, { name: string; location: string; selfMs: number }>();
  const areas = new Map<string, number>();
  let totalMs = 0;
  let idleMs = 0;
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)?.callFrame;
    if (!frame) continue;
    const ms = us / 1000;
    totalMs += ms;
    if (frame.functionName === '(idle)') {
      idleMs += ms;
      continue;
    }
    const location = locationOf(frame.url, frame.lineNumber, rootUrl);
    const name = frame.functionName || '(anonymous)';
    const key = `${name} ${location}`;
    const entry = functions.get(key) ?? { name, location, selfMs: 0 };
    entry.selfMs += ms;
    functions.set(key, entry);
    const area = areaOf(frame.url, frame.functionName, rootUrl);
    areas.set(area, (areas.get(area) ?? 0) + ms);
  }
  return {
    window,
    totalMs,
    idleMs,
    functions: [...functions.values()].sort((a, b) => b.selfMs - a.selfMs).slice(0, topFunctions),
    areas: [...areas.entries()].map(([area, selfMs]) => ({ area, selfMs })).sort((a, b) => b.selfMs - a.selfMs).slice(0, topAreas),
  };
}

function locationOf(url: string, lineNumber: number, rootUrl: string): string {
  if (!url) return '(native)';
  const short = url.startsWith(rootUrl) ? url.slice(rootUrl.length) : url;
  return `${short}:${lineNumber + 1}`;
}

/** `src/gateway`, an npm package name, a `node:` module family, or V8's own buckets. */
function areaOf(url: string, functionName: string, rootUrl: string): string {
  if (!url) return functionName.startsWith('(') ? functionName : '(native)';
  if (url.startsWith('node:')) {
    const parts = url.slice('node:'.length).split('/');
    return `node:${parts[0] === 'internal' ? `internal/${parts[1] ?? ''}`.replace(/\.js$/, '') : parts[0]}`;
  }
  const inModules = url.lastIndexOf('/node_modules/');
  if (inModules >= 0) {
    const parts = url.slice(inModules + '/node_modules/'.length).split('/');
    return parts[0].startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0];
  }
  if (url.startsWith(rootUrl)) {
    const parts = url.slice(rootUrl.length).split('/');
    return parts.length > 2 ? `${parts[0]}/${parts[1]}` : parts.join('/');
  }
  return url;
}

export function profileMarkdown(summary: ProfileSummary, source: string): string {
  const busyMs = summary.totalMs - summary.idleMs;
  const pct = (ms: number) => `${((100 * ms) / busyMs).toFixed(1)}%`;
  const span = summary.window
    ? `from ${(summary.window.fromMs / 1000).toFixed(1)} s to ${(summary.window.toMs / 1000).toFixed(1)} s after its start`
    : 'its whole life';
  const lines = [
    `CPU profile of Tollgate (\`${source}\`), ${span}: ${(summary.totalMs / 1000).toFixed(1)} s sampled, ${(busyMs / 1000).toFixed(1)} s busy; shares are of busy time.`,
    '',
    '| area | self time | share |',
    '| --- | ---: | ---: |',
    ...summary.areas.map((a) => `| ${a.area} | ${a.selfMs.toFixed(0)} ms | ${pct(a.selfMs)} |`),
    '',
    '| function | where | self time | share |',
    '| --- | --- | ---: | ---: |',
    ...summary.functions.map((f) => `| \`${f.name}\` | ${f.location} | ${f.selfMs.toFixed(0)} ms | ${pct(f.selfMs)} |`),
  ];
  return lines.join('\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === import.meta.filename) {
  const [file, fromMs, toMs] = process.argv.slice(2);
  if (!file) {
    console.error('usage: node --import tsx bench/gateway/cpu-profile.ts FILE.cpuprofile [FROM_MS TO_MS]');
    process.exit(2);
  }
  const window = fromMs !== undefined && toMs !== undefined ? { fromMs: Number(fromMs), toMs: Number(toMs) } : null;
  const repoRoot = path.resolve(import.meta.dirname, '../..');
  console.log(profileMarkdown(summarizeProfile(file, repoRoot, window), path.basename(file)));
}
