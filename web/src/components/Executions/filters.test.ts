import { describe, expect, it } from "vitest";
import { noFilters, toQuery } from "./filters";

describe("toQuery", () => {
  it("asks for nothing when nothing is chosen", () => {
    expect(toQuery(noFilters)).toEqual({
      agentId: undefined,
      state: undefined,
      from: undefined,
      to: undefined,
    });
  });

  it("includes the whole 'to' day, in UTC", () => {
    const query = toQuery({ ...noFilters, fromDay: "2026-11-01", toDay: "2026-11-30" });
    expect(query.from).toBe("2026-11-01T00:00:00.000Z");
    expect(query.to).toBe("2026-12-01T00:00:00.000Z");
  });

  it("passes agent and state through", () => {
    const query = toQuery({ ...noFilters, agentId: "a1", state: "failed" });
    expect(query).toMatchObject({ agentId: "a1", state: "failed" });
  });

  it("ignores a half-typed date", () => {
    expect(toQuery({ ...noFilters, fromDay: "2026-1" }).from).toBeUndefined();
  });
});
