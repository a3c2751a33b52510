import { describe, expect, it } from 'vitest';
import { SseParser, type SseEvent } from './sse.ts';

function parse(pieces: string[]): SseEvent[] {
  const parser = new SseParser();
  const events = pieces.flatMap((p) => parser.push(p));
  return [...events, ...parser.end()];
}

const stream = ': comment\r\nevent: message_start\r\ndata: {"a":1}\r\n\r\ndata: line one\ndata:line two\n\nid: 7\rdata: cr only\r\rdata: [DONE]\n\n';
const expected: SseEvent[] = [
  { event: 'message_start', data: '{"a":1}' },
  { event: 'message', data: 'line one\nline two' },
  { event: 'message', data: 'cr only', id: '7' },
  { event: 'message', data: '[DONE]', id: '7' },
];

describe('SseParser', () => {
  it('parses events with LF, CRLF and CR line ends, comments, names, ids and multi-line data', () => {
    expect(parse([stream])).toEqual(expected);
  });

  it('gives the same events for every split point, including between CR and LF', () => {
    for (let at = 0; at <= stream.length; at++) {
      expect(parse([stream.slice(0, at), '', stream.slice(at)])).toEqual(expected);
    }
    expect(parse(Array.from(stream))).toEqual(expected);
  });

  it('gives the same events for random streams cut into random pieces (seeded)', () => {
    let seed = 12345;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const parts = ['data: ', 'data:', 'event: x', 'id: 3', ': c', 'abc', '{"k":"v"}', '\n', '\r', '\r\n', '\n\n', '\r\r'];
    for (let round = 0; round < 300; round++) {
      const text = Array.from({ length: 1 + rand(40) }, () => parts[rand(parts.length)]).join('');
      const whole = parse([text]);
      const pieces: string[] = [];
      for (let at = 0; at < text.length; ) {
        const n = 1 + rand(6);
        pieces.push(text.slice(at, at + n));
        at += n;
      }
      expect(parse(pieces)).toEqual(whole);
    }
  });

  it('delivers an unterminated final event at end, and nothing for a comment-only stream', () => {
    expect(parse(['data: last'])).toEqual([{ event: 'message', data: 'last' }]);
    expect(parse([': ping\n\n'])).toEqual([]);
  });
});
