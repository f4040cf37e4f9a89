import { describe, expect, it } from "vitest";
import {
  type ExecutionEvent,
  type LiveExecution,
  applyEvent,
  describeEvent,
  initialLive,
  isFinished,
} from "./liveExecution";

type EventOf<T extends ExecutionEvent["type"]> = Extract<ExecutionEvent, { type: T }>;

let seq = 0;
function event<T extends ExecutionEvent["type"]>(type: T, data: EventOf<T>["data"]): EventOf<T> {
  seq += 1;
  return { seq, type, data, created_at: "2026-11-27T10:00:00Z" } as EventOf<T>;
}

function fold(events: ExecutionEvent[], from: LiveExecution = initialLive): LiveExecution {
  return events.reduce(applyEvent, from);
}

describe("applyEvent", () => {
  it("follows a swarm from plan to answer", () => {
    seq = 0;
    const live = fold([
      event("state", { state: "decomposing" }),
      event("subtasks_planned", { subtasks: ["find flights", "find hotels"] }),
      event("state", { state: "running" }),
      event("subagent_started", { subtask: 0, prompt: "find flights" }),
      event("subagent_started", { subtask: 1, prompt: "find hotels" }),
      event("tool_call", { subtask: 1, tool: "calculator", output: "42" }),
      event("subagent_finished", {
        subtask: 1,
        status: "succeeded",
        seconds: 1.5,
        cost_usd: 0.01,
        spent_usd: 0.03,
        error: null,
      }),
    ]);
    expect(live.state).toBe("running");
    expect(live.subagents.map((s) => s.status)).toEqual(["running", "succeeded"]);
    expect(live.subagents[1]).toMatchObject({ prompt: "find hotels", costUsd: 0.01, seconds: 1.5 });
    expect(live.subagents[1]?.toolCalls).toEqual([{ tool: "calculator", output: "42" }]);
    expect(live.spentUsd).toBe(0.03);
    expect(live.done).toBe(false);

    const ended = fold(
      [
        event("subagent_finished", {
          subtask: 0,
          status: "failed",
          error: "boom",
          seconds: 1,
          cost_usd: 0.01,
          spent_usd: 0.02,
        }),
        event("state", { state: "synthesizing" }),
        event("token", { text: "Day 1" }),
        event("token", { text: ": fly." }),
        event("state", { state: "succeeded" }),
        event("done", {
          state: "succeeded",
          answer: "Day 1: fly.",
          error: null,
          cost_usd: 0.05,
          figures: {},
        }),
      ],
      live,
    );
    expect(ended.synthesis).toBe("Day 1: fly.");
    expect(ended.subagents[0]).toMatchObject({ status: "failed", error: "boom" });
    expect(ended.spentUsd).toBe(0.05); // the final figure, not the larger of the reports
    expect(ended).toMatchObject({ done: true, state: "succeeded", answer: "Day 1: fly." });
    expect(ended.events).toHaveLength(13);
  });

  it("streams each sub-agent's answer into its own card, apart from the synthesis", () => {
    seq = 0;
    const live = fold([
      event("subtasks_planned", { subtasks: ["a", "b"] }),
      event("subagent_started", { subtask: 0, prompt: "a" }),
      event("subagent_started", { subtask: 1, prompt: "b" }),
      event("token", { subtask: 1, text: "Rome " }),
      event("token", { subtask: 0, text: "Paris" }),
      event("token", { subtask: 1, text: "in May" }),
      event("subagent_retry", { subtask: 0, error: "timeout" }),
      event("token", { subtask: 0, text: "Lyon" }),
      event("token", { text: "Both." }),
    ]);
    expect(live.subagents.map((s) => s.output)).toEqual(["Lyon", "Rome in May"]);
    expect(live.synthesis).toBe("Both.");
    expect(describeEvent(live.events[3] as ExecutionEvent)).toBe("sub-agent 2 writing");
  });

  it("ignores events it has already applied (a replay after reconnecting)", () => {
    seq = 0;
    const first = event("subtasks_planned", { subtasks: ["a"] });
    const token = event("token", { text: "x" });
    const once = fold([first, token]);
    expect(fold([first, token], once)).toBe(once);
    expect(once.synthesis).toBe("x");
  });

  it("makes a card for a sub-agent whose plan it never saw (joined mid-run)", () => {
    seq = 10;
    const live = fold([event("subagent_started", { subtask: 2, prompt: "third" })]);
    expect(live.subagents.map((s) => s.status)).toEqual(["pending", "pending", "running"]);
    expect(live.subagents[2]?.prompt).toBe("third");
  });

  it("notes a degraded decomposition", () => {
    seq = 0;
    const live = fold([event("decomposition_degraded", { reason: "not JSON" })]);
    expect(live.notes).toEqual(["Ran as one sub-agent: not JSON"]);
  });
});

describe("describeEvent and isFinished", () => {
  it("says what happened in words", () => {
    seq = 0;
    expect(
      describeEvent(
        event("subagent_finished", {
          subtask: 0,
          status: "succeeded",
          seconds: 2,
          cost_usd: 0,
          spent_usd: 0,
          error: null,
        }),
      ),
    ).toBe("sub-agent 1 succeeded in 2.00 s");
    expect(describeEvent(event("subtasks_planned", { subtasks: ["a", "b"] }))).toBe(
      "planned 2 subtasks",
    );
  });

  it("knows the final states", () => {
    expect(isFinished("timed_out")).toBe(true);
    expect(isFinished("synthesizing")).toBe(false);
  });
});
