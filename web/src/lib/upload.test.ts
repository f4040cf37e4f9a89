import { ApiError } from "@/api/client";
import { useAuthStore } from "@/stores/auth";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { uploadFile } from "./upload";

/** A stand-in XMLHttpRequest answering each send with the next scripted reply. */
const replies: { status: number; body: unknown }[] = [];
const sent: { url: string; authorization: string | undefined }[] = [];

class FakeXhr {
  upload: { onprogress: ((event: ProgressEvent) => void) | null } = { onprogress: null };
  onload: (() => void) | null = null;
  onerror: (() => void) | null = null;
  status = 0;
  responseText = "";
  private url = "";
  private headers: Record<string, string> = {};
  open(_method: string, url: string) {
    this.url = url;
  }
  setRequestHeader(name: string, value: string) {
    this.headers[name] = value;
  }
  send(form: FormData) {
    expect(form.get("file")).toBeInstanceOf(File);
    sent.push({ url: this.url, authorization: this.headers.authorization });
    for (const loaded of [50, 100]) {
      this.upload.onprogress?.({ lengthComputable: true, loaded, total: 100 } as ProgressEvent);
    }
    const reply = replies.shift();
    if (!reply) {
      this.onerror?.();
      return;
    }
    this.status = reply.status;
    this.responseText = JSON.stringify(reply.body);
    this.onload?.();
  }
}

const file = new File(["# runbook"], "runbook.md", { type: "text/markdown" });

describe("uploadFile", () => {
  beforeEach(() => {
    vi.stubGlobal("XMLHttpRequest", FakeXhr);
    replies.length = 0;
    sent.length = 0;
    useAuthStore.getState().setSession({ access_token: "a1", expires_in: 900 });
  });
  afterEach(() => vi.unstubAllGlobals());

  it("reports progress and returns the created document", async () => {
    replies.push({ status: 201, body: { id: "d1", status: "queued" } });
    const progress: number[] = [];
    const document = await uploadFile("/api/v1/knowledge-bases/k/documents", file, (f) =>
      progress.push(f),
    );
    expect(document).toEqual({ id: "d1", status: "queued" });
    expect(progress).toEqual([0.5, 1]);
    expect(sent).toEqual([
      { url: "/api/v1/knowledge-bases/k/documents", authorization: "Bearer a1" },
    ]);
  });

  it("throws the server's error message", async () => {
    replies.push({ status: 413, body: { error: "PayloadTooLarge", detail: "over 20 MiB" } });
    const upload = uploadFile("/u", file, () => {});
    await expect(upload).rejects.toBeInstanceOf(ApiError);
    await expect(upload).rejects.toMatchObject({ status: 413, detail: "over 20 MiB" });
  });

  it("says when the upload never reached the server", async () => {
    await expect(uploadFile("/u", file, () => {})).rejects.toMatchObject({
      detail: "the upload did not reach the server",
    });
  });

  it("refreshes an expired session once and sends again", async () => {
    vi.stubGlobal(
      "fetch",
      vi.fn(async () =>
        Response.json({ access_token: "a2", refresh_token: null, expires_in: 900 }),
      ),
    );
    replies.push({ status: 401, body: { error: "Unauthorized", detail: "expired" } });
    replies.push({ status: 201, body: { id: "d2" } });
    await expect(uploadFile("/u", file, () => {})).resolves.toEqual({ id: "d2" });
    expect(sent.map((s) => s.authorization)).toEqual(["Bearer a1", "Bearer a2"]);
  });
});
