// What `npm start` prints for a person: where it listens, and on the first start the master key
// and a demo key with copy-paste calls (curl and the OpenAI SDK) against the sandbox model.
import type { Running } from '../server.ts';
import type { DemoSetup } from './first-run.ts';

export function printWelcome(running: Running, demo: DemoSetup | null): void {
  const address = running.app.server.address();
  const port = address && typeof address === 'object' ? address.port : running.ctx.config.port;
  const base = `http://127.0.0.1:${port}`;
  const lines = ['', `Tollgate is running on ${base} (database: ${running.ctx.store.location})`];
  if (running.generatedMasterKey) {
    lines.push('', 'Operator master key (shown once; only its hash is stored):', `  ${running.generatedMasterKey}`);
  }
  if (demo) {
    lines.push(
      '',
      `Demo workspace ${demo.workspaceId} has 100 starter credits. Its API key (shown once):`,
      `  ${demo.apiKey}`,
      '',
      'Make a paid call (the sandbox provider answers offline):',
      `  curl ${base}/v1/chat/completions -H "Authorization: Bearer ${demo.apiKey}" \\`,
      `    -H 'content-type: application/json' -d '{"model":"${demo.model}","messages":[{"role":"user","content":"Hello!"}]}'`,
      '',
      'Or with the OpenAI SDK (npm install openai):',
      `  import OpenAI from 'openai';`,
      `  const client = new OpenAI({ baseURL: '${base}/v1', apiKey: '${demo.apiKey}' });`,
      `  const r = await client.chat.completions.create({ model: '${demo.model}', messages: [{ role: 'user', content: 'Hello!' }] });`,
      '  console.log(r.choices[0].message.content);',
      '',
      `Balance: curl ${base}/v1/balance -H "Authorization: Bearer ${demo.apiKey}"`,
    );
  }
  lines.push('', `Admin API: curl ${base}/api/admin/workspaces -H "Authorization: Bearer <master key>"`, '');
  process.stdout.write(`${lines.join('\n')}\n`);
}
