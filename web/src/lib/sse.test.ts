import { describe, expect, it } from "vitest";
import { SseParser } from "./sse";

describe("SseParser", () => {
  it("returns messages only once they are complete, across chunks", () => {
    const parser = new SseParser();
    expect(parser.push('id: 1\nevent: state\ndata: {"a"')).toEqual([]);
    expect(parser.push(": 1}\n\nid: 2\nevent: tok")).toEqual([
      { id: "1", event: "state", data: '{"a": 1}' },
    ]);
    expect(parser.push('en\ndata: {"b": 2}\n\n')).toEqual([
      { id: "2", event: "token", data: '{"b": 2}' },
    ]);
  });

  it("skips keep-alive comments and joins multi-line data", () => {
    const parser = new SseParser();
    const messages = parser.push(": keep-alive\n\ndata: one\ndata: two\n\n");
    expect(messages).toEqual([{ id: null, event: "message", data: "one\ntwo" }]);
  });

  it("accepts CRLF line ends", () => {
    const parser = new SseParser();
    expect(parser.push("id: 7\r\ndata: x\r\n\r\n")).toEqual([
      { id: "7", event: "message", data: "x" },
    ]);
  });
});
