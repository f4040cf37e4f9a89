// Follows an execution's events over SSE (fetch, so the session's token and refresh apply).
// When the stream ends or fails before `done`, it reconnects with ?after=<last seq seen>, so
// no event is missed or applied twice.
import { api, authFetch, toApiError, unwrap } from "@/api/client";
import { type LiveExecution, applyEvent, initialLive, isFinished } from "@/lib/liveExecution";
import type { ExecutionEvent } from "@/lib/liveExecution";
import { SseParser } from "@/lib/sse";
import { useEffect, useReducer, useRef, useState } from "react";

const RECONNECT_MS = 1000;

async function hasEnded(executionId: string): Promise<boolean> {
  const execution = await unwrap(
    api.GET("/api/v1/executions/{execution_id}", {
      params: { path: { execution_id: executionId } },
    }),
  );
  return isFinished(execution.state);
}

function reducer(live: LiveExecution, events: ExecutionEvent[]): LiveExecution {
  return events.reduce(applyEvent, live);
}

export function useExecutionEvents(
  executionId: string,
  onEvents?: (events: ExecutionEvent[]) => void,
): { live: LiveExecution; error: unknown; connected: boolean } {
  const [live, dispatch] = useReducer(reducer, initialLive);
  const [error, setError] = useState<unknown>(null);
  const [connected, setConnected] = useState(false);
  const lastSeq = useRef(0);
  const listener = useRef(onEvents);
  listener.current = onEvents;

  useEffect(() => {
    const controller = new AbortController();
    const follow = async () => {
      let done = false;
      while (!done && !controller.signal.aborted) {
        try {
          const url = new URL(`/api/v1/executions/${executionId}/events`, window.location.origin);
          url.searchParams.set("after", String(lastSeq.current));
          const response = await authFetch(new Request(url, { signal: controller.signal }));
          if (!response.ok || !response.body) {
            const refused = toApiError(response.status, await response.json().catch(() => null));
            if (response.status >= 500) throw refused; // may pass: try again
            setError(refused);
            return; // a 4xx (not found, not allowed) will not change by retrying
          }
          setConnected(true);
          setError(null);
          const parser = new SseParser();
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          for (;;) {
            const { value, done: ended } = await reader.read();
            if (ended) break;
            const events = parser.push(value).map((m) => JSON.parse(m.data) as ExecutionEvent);
            if (events.length === 0) continue;
            lastSeq.current = Math.max(lastSeq.current, ...events.map((e) => e.seq));
            done ||= events.some((e) => e.type === "done");
            dispatch(events);
            listener.current?.(events);
          }
          // Ended without `done`: a dropped connection (a proxy, a restart), so reopen after
          // the last event seen; unless the run has ended without a `done` event.
          if (!done) done = await hasEnded(executionId);
        } catch (failure) {
          if (controller.signal.aborted) return;
          setError(failure);
        }
        setConnected(false);
        if (!done) await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
      }
    };
    void follow();
    return () => controller.abort();
  }, [executionId]);

  return { live, error, connected };
}
