// File upload with progress. fetch reports no upload progress, XMLHttpRequest does; the
// session's token goes in the header, and a 401 refreshes the session once, as in client.ts.
import { ApiError, toApiError } from "@/api/client";
import { refreshSession, useAuthStore } from "@/stores/auth";

function send(
  url: string,
  file: File,
  token: string | null,
  onProgress: (fraction: number) => void,
): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", url);
    if (token) request.setRequestHeader("authorization", `Bearer ${token}`);
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    };
    request.onload = () => {
      let body: unknown = null;
      try {
        body = JSON.parse(request.responseText);
      } catch {
        // not JSON: the status alone says what happened
      }
      resolve({ status: request.status, body });
    };
    request.onerror = () =>
      reject(new ApiError(0, "NetworkError", "the upload did not reach the server"));
    const form = new FormData();
    form.append("file", file);
    request.send(form);
  });
}

/** POST `file` as multipart field "file"; the parsed JSON answer, or an ApiError. */
export async function uploadFile<T>(
  url: string,
  file: File,
  onProgress: (fraction: number) => void,
): Promise<T> {
  let response = await send(url, file, useAuthStore.getState().accessToken, onProgress);
  if (response.status === 401) {
    const fresh = await refreshSession();
    if (fresh) response = await send(url, file, fresh, onProgress);
  }
  if (response.status < 200 || response.status >= 300) {
    throw toApiError(response.status, response.body);
  }
  return response.body as T;
}
