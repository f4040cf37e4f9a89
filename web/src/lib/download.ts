// Saving a fetched file: downloads that need the session's bearer token cannot be plain
// links, so they are fetched, then handed to the browser as a Blob under a file name.

export function saveBlob(blob: Blob, fileName: string): void {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = fileName;
  link.click();
  URL.revokeObjectURL(link.href);
}
