// Follows an execution's events over SSE (fetch, so the session's token and refresh apply).
// When the connection drops before `done`, it reconnects with ?after=<last seq seen>, so no
// event is missed or applied twice.
import { authFetch, toApiError } from "@/api/client";
import { type LiveExecution, applyEvent, initialLive } from "@/lib/liveExecution";
import type { ExecutionEvent } from "@/lib/liveExecution";
import { SseParser } from "@/lib/sse";
import { useEffect, useReducer, useRef, useState } from "react";

const RECONNECT_MS = 1000;

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
          const url = `/api/v1/executions/${executionId}/events?after=${lastSeq.current}`;
          const response = await authFetch(new Request(url, { signal: controller.signal }));
          if (!response.ok || !response.body) {
            setError(toApiError(response.status, await response.json().catch(() => null)));
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
          // The server ends the stream after `done`, or after a run that ended without one.
          done = true;
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
