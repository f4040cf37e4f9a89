import { describe, expect, it } from "vitest";
import { checkAgentForm, formFromAgent, toggle, toolLabel } from "./agentForm";

describe("toolLabel", () => {
  it("names the server's tools as the form shows them", () => {
    expect(toolLabel("knowledge_search")).toBe("Knowledge search");
    expect(toolLabel("calculator")).toBe("Calculator");
  });
});

describe("checkAgentForm", () => {
  it("turns a filled form into the create body", () => {
    const form = { ...formFromAgent(), name: " planner ", maxSubagents: "8", maxCostUsd: "0.5" };
    const { body, error } = checkAgentForm(form);
    expect(error).toBeNull();
    expect(body).toMatchObject({
      name: "planner",
      model: "default",
      temperature: 0.2,
      max_subagents: 8,
      max_cost_usd: 0.5,
      timeout_s: 300,
      tools: [],
    });
  });

  it("leaves the cost cap out when empty", () => {
    const { body } = checkAgentForm({ ...formFromAgent(), name: "a" });
    expect(body?.max_cost_usd).toBeNull();
  });

  it.each([
    [{ name: "-bad" }, /Name/],
    [{ name: "ok", maxSubagents: "101" }, /1 to 100/],
    [{ name: "ok", maxSubagents: "2.5" }, /whole number/],
    [{ name: "ok", temperature: "3" }, /Temperature/],
    [{ name: "ok", timeoutS: "0" }, /Timeout/],
    [{ name: "ok", maxCostUsd: "-1" }, /Cost cap/],
    [{ name: "ok", model: " " }, /Model/],
    [{ name: "ok", tools: ["knowledge_search"] }, /knowledge base/],
  ])("refuses %j", (change, message) => {
    const { body, error } = checkAgentForm({ ...formFromAgent(), ...change });
    expect(body).toBeNull();
    expect(error).toMatch(message);
  });

  it("starts an edit from the agent's values", () => {
    const form = formFromAgent({
      id: "a1",
      name: "ops",
      version: 3,
      created_at: "",
      updated_at: "",
      model: "cheap",
      max_cost_usd: 2,
      tools: ["calculator"],
      knowledge_base_ids: ["kb1"],
    });
    expect(form).toMatchObject({ name: "ops", model: "cheap", maxCostUsd: "2" });
    expect(form.tools).toEqual(["calculator"]);
    expect(form.knowledgeBaseIds).toEqual(["kb1"]);
  });
});

describe("toggle", () => {
  it("adds once and removes", () => {
    expect(toggle(["a"], "a", true)).toEqual(["a"]);
    expect(toggle(["a"], "b", true)).toEqual(["a", "b"]);
    expect(toggle(["a", "b"], "a", false)).toEqual(["b"]);
  });
});
