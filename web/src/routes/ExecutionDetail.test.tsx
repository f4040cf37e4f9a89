import type { ExecutionEvent } from "@/lib/liveExecution";
import { meAs, renderSignedIn } from "@/test/render";
import { cleanup, screen, waitFor } from "@testing-library/react";
import { Route, Routes } from "react-router-dom";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ExecutionDetail } from "./ExecutionDetail";

// The page against a stubbed fetch: the stored execution, and its event stream served in
// two connections, the first dropped mid-run, so the page has to resume with ?after=.

const ID = "e1";
const at = "2026-11-27T10:00:00Z";

// An event as the server sends it, but for its time (every event here has the same).
type WithoutTime<E> = E extends unknown ? Omit<E, "created_at"> : never;
type Sent = WithoutTime<ExecutionEvent>;

function sse(events: Sent[]): string {
  return events
    .map(
      (e) =>
        `id: ${e.seq}\nevent: ${e.type}\ndata: ${JSON.stringify({ ...e, created_at: at })}\n\n`,
    )
    .join("");
}

const firstHalf = sse([
  { seq: 1, type: "state", data: { state: "running" } },
  { seq: 2, type: "subtasks_planned", data: { subtasks: ["flights", "hotels"] } },
  { seq: 3, type: "subagent_started", data: { subtask: 0, prompt: "flights" } },
  { seq: 4, type: "subagent_started", data: { subtask: 1, prompt: "hotels" } },
]);
const secondHalf = sse([
  {
    seq: 5,
    type: "subagent_finished",
    data: {
      subtask: 0,
      status: "succeeded",
      seconds: 1,
      cost_usd: 0.5,
      spent_usd: 0.5,
      error: null,
    },
  },
  {
    seq: 6,
    type: "subagent_finished",
    data: {
      subtask: 1,
      status: "failed",
      seconds: 1,
      cost_usd: 0.25,
      spent_usd: 0.75,
      error: "boom",
    },
  },
  { seq: 7, type: "token", data: { text: "Fly on Monday." } },
  { seq: 8, type: "state", data: { state: "succeeded" } },
  {
    seq: 9,
    type: "done",
    data: {
      state: "succeeded",
      answer: "Fly on Monday.",
      error: null,
      cost_usd: 0.75,
      figures: {},
    },
  },
]);

const stored = {
  id: ID,
  agent_id: null,
  agent_version: 1,
  task: "Plan a trip",
  thread_id: null,
  options: {},
  state: "running",
  cancel_requested: false,
  answer: null,
  error: null,
  cost_usd: 0,
  prompt_tokens: 0,
  completion_tokens: 0,
  figures: {},
  created_at: at,
  started_at: at,
  finished_at: null,
  inputs: {},
  subtasks: [],
  sources: [],
};

const eventRequests: string[] = [];
let storedState = "running";

function respond(url: URL): Response {
  if (url.pathname === `/api/v1/executions/${ID}/events`) {
    eventRequests.push(url.search);
    return new Response(eventRequests.length === 1 ? firstHalf : secondHalf, {
      headers: { "content-type": "text/event-stream" },
    });
  }
  if (url.pathname === `/api/v1/executions/${ID}`) {
    return Response.json({ ...stored, state: storedState });
  }
  if (url.pathname.endsWith("/ledger"))
    return Response.json({ items: [], total: 0, limit: 200, offset: 0 });
  if (url.pathname === "/api/v1/agents")
    return Response.json({ items: [], total: 0, limit: 200, offset: 0 });
  return Response.json({ error: "NotFound", detail: "no such path" }, { status: 404 });
}

beforeEach(() => {
  eventRequests.length = 0;
  storedState = "running";
  vi.stubGlobal(
    "fetch",
    vi.fn(async (request: Request) => respond(new URL(request.url, "http://localhost"))),
  );
});
afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

function renderPage() {
  renderSignedIn(
    <Routes>
      <Route path="/executions/:executionId" element={<ExecutionDetail />} />
    </Routes>,
    meAs("viewer", ["self", "executions:read", "agents:read"]),
    `/executions/${ID}`,
  );
}

describe("ExecutionDetail", () => {
  it("follows the events live and resumes after the last one seen when the stream drops", async () => {
    renderPage();
    // The first connection: both sub-agents running.
    await waitFor(() => expect(screen.getByTestId("subagent-1").textContent).toContain("running"));
    expect(screen.getByTestId("subagent-0").textContent).toContain("flights");
    // The stream ended without `done`: the page reconnects from sequence number 4.
    await waitFor(
      () => expect(screen.getByTestId("execution-answer").textContent).toBe("Fly on Monday."),
      {
        timeout: 3000,
      },
    );
    expect(eventRequests).toEqual(["?after=0", "?after=4"]);
    expect(screen.getByTestId("subagent-0").textContent).toContain("succeeded");
    expect(screen.getByTestId("subagent-1").textContent).toContain("boom");
    expect(screen.getByTestId("execution-state").textContent).toBe("succeeded");
    // The stored execution still says running: the cost shown is the final event's.
    expect(screen.getByTestId("execution-cost").textContent).toBe("$0.75");
    // A viewer has no Cancel button, and the timeline lists the events in order.
    expect(screen.queryByRole("button", { name: "Cancel" })).toBeNull();
    expect(screen.getByRole("list", { name: "Timeline" }).textContent).toContain("done: succeeded");
  });

  it("stops following a run that ended without a done event", async () => {
    storedState = "failed";
    renderPage();
    await waitFor(() => expect(screen.getByTestId("subagent-1").textContent).toContain("running"));
    await new Promise((resolve) => setTimeout(resolve, 1500)); // past the reconnect delay
    expect(eventRequests).toEqual(["?after=0"]);
  });
});
