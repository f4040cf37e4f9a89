import { Button } from "@/components/ui/button";
import { ErrorState } from "@/components/ui/states";
import { useUploadDocument } from "@/hooks/queries/knowledge";
import { useRef, useState } from "react";

/** Pick files and upload them one after the other, with a progress bar for each. */
export function Upload({ kbId }: { kbId: string }) {
  const input = useRef<HTMLInputElement>(null);
  const [progress, setProgress] = useState<{ name: string; fraction: number } | null>(null);
  const upload = useUploadDocument(kbId, (fraction) =>
    setProgress((current) => (current ? { ...current, fraction } : current)),
  );

  const send = async (files: FileList | null) => {
    for (const file of Array.from(files ?? [])) {
      setProgress({ name: file.name, fraction: 0 });
      try {
        await upload.mutateAsync(file);
      } catch {
        break; // the error is shown below; later files wait for another try
      }
    }
    setProgress(null);
    if (input.current) input.current.value = "";
  };

  return (
    <div className="space-y-2">
      <input
        ref={input}
        type="file"
        multiple
        aria-label="Documents to upload"
        className="hidden"
        onChange={(e) => void send(e.target.files)}
      />
      <Button onClick={() => input.current?.click()} disabled={progress !== null}>
        Upload documents
      </Button>
      {progress ? (
        <div className="w-72 text-sm" data-testid="upload-progress">
          <div className="truncate text-slate-600">
            {progress.name}: {Math.round(progress.fraction * 100)}%
          </div>
          <progress className="h-2 w-full" value={progress.fraction} max={1} />
        </div>
      ) : null}
      {upload.isError ? <ErrorState error={upload.error} /> : null}
    </div>
  );
}
