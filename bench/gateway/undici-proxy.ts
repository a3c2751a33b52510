// The Node ceiling for a gateway: a reverse proxy that does nothing but forward each request
// through an undici Pool and stream the answer back. Run as its own process:
// `PORT=9001 UPSTREAM_URL=http://127.0.0.1:9000 node --import tsx bench/gateway/undici-proxy.ts`.
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { pipeline } from 'node:stream';
import { Pool } from 'undici';

const upstreamConnections = 64;
const hopByHop = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-connection', 'expect', 'host']);
const endToEnd = (headers: IncomingHttpHeaders) => Object.fromEntries(Object.entries(headers).filter(([name]) => !hopByHop.has(name)));

const pool = new Pool(process.env.UPSTREAM_URL ?? 'http://127.0.0.1:9000', { connections: upstreamConnections });
const server = createServer({ keepAliveTimeout: 60_000 }, async (req, res) => {
  try {
    const answer = await pool.request({ method: req.method as 'POST', path: req.url ?? '/', headers: endToEnd(req.headers), body: req });
    res.writeHead(answer.statusCode, endToEnd(answer.headers));
    pipeline(answer.body, res, () => {});
  } catch {
    if (!res.headersSent) res.writeHead(502);
    res.end();
  }
});
server.listen(Number(process.env.PORT ?? 0), process.env.HOST ?? '127.0.0.1', () => {
  const address = server.address();
  process.stdout.write(`undici proxy listening on ${typeof address === 'object' && address ? address.port : ''}\n`);
});
process.once('SIGTERM', () => process.exit(0));
