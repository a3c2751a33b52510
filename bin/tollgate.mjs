#!/usr/bin/env -S node --max-semi-space-size=32
// The V8 flag (also in `npm start`): semi-spaces of 32 MB instead of 16, so the short-lived objects
// of the calls in flight die young instead of being copied and promoted. In A/B runs of the gateway
// bench at 50 connections (bench/gateway/ab.ts), 64 MB cost 6 and 18% less CPU per call than the
// default in two runs, and 32 MB the same as 64.
// Runs the TypeScript sources directly, compiled as they load (bin/ts-loader.mjs): no build step
// between a clone and a start.
import { register } from 'node:module';

register('./ts-loader.mjs', import.meta.url);
process.setSourceMapsEnabled(true);
await import('../src/cli/main.ts');
