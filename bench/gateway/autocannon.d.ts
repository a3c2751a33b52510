// The part of autocannon's programmatic API the gateway benchmark uses: the package ships no types.
declare module 'autocannon' {
  import type { EventEmitter } from 'node:events';

  /**
   * One connection. `reqsMade` and `responseMax` are fields of autocannon 8's Client, not documented
   * API: a client closes once it has made `responseMax` requests and the last one is answered.
   */
  export interface Client {
    reqsMade: number;
    responseMax: number | undefined;
  }

  export interface Options {
    url: string;
    connections?: number;
    /** Seconds before autocannon stops, cutting off the requests in flight. */
    duration?: number;
    method?: 'GET' | 'POST';
    headers?: Record<string, string>;
    body?: string;
    /** Called with each connection's client as it is created. */
    setupClient?: (client: Client) => void;
    /** Milliseconds between autocannon's own samples. */
    sampleInt?: number;
    /** Seconds before a request counts as timed out. */
    timeout?: number;
  }

  export interface Result {
    errors: number;
    timeouts: number;
    resets: number;
    non2xx: number;
    statusCodeStats: Record<string, { count: number }>;
  }

  export interface Instance extends EventEmitter {
    stop(): void;
    on(event: 'response', listener: (client: unknown, statusCode: number, resBytes: number, responseTimeMs: number) => void): this;
  }

  function autocannon(opts: Options, callback: (err: Error | null, result: Result) => void): Instance;
  export default autocannon;
}
