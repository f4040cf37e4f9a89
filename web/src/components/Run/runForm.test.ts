import { describe, expect, it } from "vitest";
import { checkRunForm, emptyRunForm } from "./runForm";

const filled = { ...emptyRunForm, agentId: "a1", task: "  Plan three days in Rome " };

describe("checkRunForm", () => {
  it("sends only the options that were given", () => {
    const { body } = checkRunForm(filled);
    expect(body).toEqual({
      agent_id: "a1",
      task: "Plan three days in Rome",
      options: {
        mode: "swarm",
        max_agents: undefined,
        budget_usd: undefined,
        deadline_s: undefined,
      },
    });
  });

  it("passes the options as numbers", () => {
    const { body } = checkRunForm({ ...filled, maxAgents: "3", budgetUsd: "0.5", deadlineS: "60" });
    expect(body?.options).toMatchObject({ max_agents: 3, budget_usd: 0.5, deadline_s: 60 });
  });

  it("drops max agents in single mode, where there is one", () => {
    const { body } = checkRunForm({ ...filled, mode: "single", maxAgents: "3" });
    expect(body?.options?.max_agents).toBeUndefined();
  });

  it.each([
    [{ agentId: "" }, /agent/],
    [{ task: "   " }, /Task/],
    [{ maxAgents: "0" }, /Max agents/],
    [{ maxAgents: "1.5" }, /Max agents/],
    [{ budgetUsd: "free" }, /Budget/],
    [{ deadlineS: "-3" }, /Deadline/],
  ])("refuses %j", (change, message) => {
    const { body, error } = checkRunForm({ ...filled, ...change });
    expect(body).toBeNull();
    expect(error).toMatch(message);
  });
});
