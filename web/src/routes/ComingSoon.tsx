import { Empty, PageHeader } from "@/components/ui/states";

/** A page whose API does not exist yet: says so, and shows nothing made up. */
export function ComingSoon({ title }: { title: string }) {
  return (
    <div>
      <PageHeader title={title} />
      <Empty>{title}: coming with the agents API.</Empty>
    </div>
  );
}
