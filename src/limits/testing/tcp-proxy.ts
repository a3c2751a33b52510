// A TCP proxy in front of the test Redis, so a test can take "Redis" away from one limiter — refuse
// connections, or hang without answering — and bring it back, without touching the Redis server
// that other test files share.
import net from 'node:net';

export class TcpProxy {
  readonly #targetHost: string;
  readonly #targetPort: number;
  readonly #sockets = new Set<net.Socket>();
  readonly #clients = new Set<net.Socket>();
  #server: net.Server | null = null;
  #port = 0;
  #hung = false;

  private constructor(targetHost: string, targetPort: number) {
    this.#targetHost = targetHost;
    this.#targetPort = targetPort;
  }

  static async start(targetUrl: string): Promise<TcpProxy> {
    const target = new URL(targetUrl);
    const proxy = new TcpProxy(target.hostname, Number(target.port || 6379));
    await proxy.up();
    return proxy;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.#port}`;
  }

  /** Listens again (on the same port after a `down`), forwarding every byte both ways. */
  async up(): Promise<void> {
    if (this.#server) return;
    const server = net.createServer((client) => this.#accept(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.#port, '127.0.0.1', () => resolve());
    });
    this.#port = (server.address() as net.AddressInfo).port;
    this.#server = server;
  }

  /** Redis gone: open connections reset, new ones refused. */
  async down(): Promise<void> {
    const server = this.#server;
    this.#server = null;
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
    this.#clients.clear();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Redis hung: connections stay open but nothing reaches it until `resume` (bytes wait, in order). */
  hang(): void {
    this.#hung = true;
    for (const c of this.#clients) c.pause();
  }

  resume(): void {
    this.#hung = false;
    for (const c of this.#clients) c.resume();
  }

  #accept(client: net.Socket): void {
    const upstream = net.connect(this.#targetPort, this.#targetHost);
    for (const s of [client, upstream]) {
      this.#sockets.add(s);
      s.on('error', () => s.destroy());
      s.on('close', () => {
        this.#sockets.delete(s);
        this.#clients.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    this.#clients.add(client);
    client.pipe(upstream);
    upstream.pipe(client);
    if (this.#hung) client.pause();
  }
}
