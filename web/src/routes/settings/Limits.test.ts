import { describe, expect, it } from "vitest";
import { parseLimit } from "./Limits";

describe("parseLimit", () => {
  it("reads an empty field as no limit", () => {
    expect(parseLimit("  ", true)).toBeNull();
  });
  it("accepts decimals for money and whole numbers for rates", () => {
    expect(parseLimit("12.5", false)).toBe(12.5);
    expect(parseLimit("60", true)).toBe(60);
    expect(parseLimit("1.5", true)).toBe("invalid");
  });
  it("refuses negatives and text", () => {
    expect(parseLimit("-1", false)).toBe("invalid");
    expect(parseLimit("lots", false)).toBe("invalid");
  });
});
