// Incremental parser for server-sent events (the WHATWG event-stream format): text arrives split
// anywhere (inside a line, between `\r` and `\n`), and complete events come out.

export interface SseEvent {
  event: string; // 'message' when the stream names none
  data: string; // data lines joined with '\n'
  id?: string;
}

/** An event larger than this is a broken or hostile upstream, not a model answer. */
export const maxSseEventChars = 16 * 1024 * 1024;

export class SseParser {
  private buffer = '';
  private pendingCr = false;
  private eventName = '';
  private dataLines: string[] = [];
  private dataChars = 0;
  private lastId: string | undefined;

  /** Feeds text; returns the events it completed. */
  push(text: string): SseEvent[] {
    const events: SseEvent[] = [];
    if (text.length === 0) return events;
    let start = 0;
    if (this.pendingCr && text.charCodeAt(0) === 10) start = 1;
    this.pendingCr = false;
    // Line ends are found with indexOf (a native scan) rather than a loop over every character.
    let lf = text.indexOf('\n', start);
    let cr = text.indexOf('\r', start);
    while (lf !== -1 || cr !== -1) {
      const atCr = cr !== -1 && (lf === -1 || cr < lf);
      const i = atCr ? cr : lf;
      this.line(this.buffer + text.slice(start, i), events);
      this.buffer = '';
      let next = i + 1;
      if (atCr) {
        if (next === text.length) this.pendingCr = true;
        else if (text.charCodeAt(next) === 10) next++;
        cr = text.indexOf('\r', next);
        if (lf !== -1 && lf < next) lf = text.indexOf('\n', next);
      } else {
        lf = text.indexOf('\n', next);
      }
      start = next;
    }
    this.buffer += text.slice(start);
    if (this.buffer.length + this.dataChars > maxSseEventChars) {
      throw new Error(`SSE event exceeds ${maxSseEventChars} characters`);
    }
    return events;
  }

  /** The stream closed: an event not yet terminated by a blank line is delivered anyway. */
  end(): SseEvent[] {
    const events: SseEvent[] = [];
    if (this.buffer) this.line(this.buffer, events);
    this.buffer = '';
    this.line('', events);
    return events;
  }

  private line(line: string, events: SseEvent[]): void {
    if (line === '') {
      if (this.dataLines.length > 0) {
        const event: SseEvent = { event: this.eventName || 'message', data: this.dataLines.join('\n') };
        if (this.lastId !== undefined) event.id = this.lastId;
        events.push(event);
      }
      this.eventName = '';
      this.dataLines = [];
      this.dataChars = 0;
      return;
    }
    if (line.startsWith(':')) return; // comment, often a keep-alive
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') {
      this.dataLines.push(value);
      this.dataChars += value.length;
      if (this.dataChars > maxSseEventChars) throw new Error(`SSE event exceeds ${maxSseEventChars} characters`);
    } else if (field === 'event') {
      this.eventName = value;
    } else if (field === 'id' && !value.includes('\0')) {
      this.lastId = value;
    }
  }
}
