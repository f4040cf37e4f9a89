import { Empty, PageHeader } from "@/components/ui/states";
import { Link } from "react-router-dom";

export function NotFound() {
  return (
    <div>
      <PageHeader title="Page not found" />
      <Empty>
        Nothing here.{" "}
        <Link to="/" className="underline">
          Back to the overview
        </Link>
      </Empty>
    </div>
  );
}
