import { agentKeys } from "@/hooks/queries/agents";
import { knowledgeKeys } from "@/hooks/queries/knowledge";
import { meAs, renderSignedIn } from "@/test/render";
import { cleanup, fireEvent, screen } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import { Agents } from "./Agents";

afterEach(cleanup);

const page = (items: unknown[]) => ({ items, total: items.length, limit: 200, offset: 0 });
const planner = {
  id: "a1",
  name: "planner",
  description: "plans trips",
  model: "default",
  tools: ["calculator"],
  knowledge_base_ids: ["kb1"],
  max_subagents: 5,
  max_cost_usd: null,
  timeout_s: 300,
  temperature: 0.2,
  system_prompt: "",
  version: 3,
  created_at: "2026-11-27T10:00:00Z",
  updated_at: "2026-11-27T11:00:00Z",
};
const seed: [readonly unknown[], unknown][] = [
  [agentKeys.page(0), page([planner])],
  [knowledgeKeys.every, page([{ id: "kb1", name: "runbooks" }])],
];

describe("Agents", () => {
  it("lists agents with their version, and gives a viewer no write buttons", () => {
    renderSignedIn(<Agents />, meAs("viewer", ["self", "agents:read"]), "/agents", seed);
    const row = screen.getByTestId("agent-planner");
    expect(row.textContent).toContain("v3");
    expect(row.textContent).toContain("calculator");
    expect(row.textContent).toContain("runbooks");
    expect(screen.queryByRole("button", { name: "Create agent" })).toBeNull();
    expect(screen.queryByRole("button", { name: "Edit" })).toBeNull();
    expect(screen.queryByRole("button", { name: "Delete" })).toBeNull();
    expect(screen.queryByRole("link", { name: "Run" })).toBeNull();
  });

  it("gives a developer create, edit, delete and run", () => {
    renderSignedIn(
      <Agents />,
      meAs("developer", ["self", "agents:read", "agents:write", "executions:run"]),
      "/agents",
      seed,
    );
    expect(screen.getByRole("button", { name: "Create agent" })).toBeTruthy();
    expect(screen.getByRole("link", { name: "Run" }).getAttribute("href")).toBe("/run?agent=a1");
    fireEvent.click(screen.getByRole("button", { name: "Edit" }));
    const dialog = screen.getByRole("dialog", { name: "Edit planner" });
    expect((screen.getByLabelText("Name") as HTMLInputElement).value).toBe("planner");
    expect(dialog.textContent).toContain("Save new version");
  });

  it("stops an invalid form before it is sent, with the reason", () => {
    renderSignedIn(
      <Agents />,
      meAs("developer", ["self", "agents:read", "agents:write"]),
      "/agents",
      seed,
    );
    fireEvent.click(screen.getByRole("button", { name: "Create agent" }));
    fireEvent.change(screen.getByLabelText("Name"), { target: { value: "ok" } });
    fireEvent.change(screen.getByLabelText("Max sub-agents"), { target: { value: "500" } });
    fireEvent.click(screen.getByRole("button", { name: "Create" }));
    expect(screen.getByRole("alert").textContent).toMatch(/1 to 100/);
  });

  it("says so when there are no agents", () => {
    renderSignedIn(<Agents />, meAs("viewer", ["self", "agents:read"]), "/agents", [
      [agentKeys.page(0), page([])],
    ]);
    expect(screen.getByText("No agents yet.")).toBeTruthy();
  });
});
