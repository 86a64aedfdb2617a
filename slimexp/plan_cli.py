"""`slimexp-plan <overrides>`: the resource plan of every job the same overrides give
`slimexp` (the planner's table per job; nothing loads, nothing runs)."""

from __future__ import annotations

import sys

from slimexp.errors import SlimexpError
from slimexp.planner import format_plan, plan_run
from slimexp.precheck import resolved_jobs

USAGE = """usage: slimexp-plan [overrides as for slimexp]
  slimexp-plan recipe=slimgpt/paper model=llama-7b scale=paper plan.gpu=a100-80gb dtype=float16
  plan.gpu=a100-80gb|a100-40gb|h100-80gb|h200 plans for a GPU that is not here;
  plan.tflops, plan.device_memory_gb, plan.host_memory_gb override what is measured."""


def main(argv: list[str] | None = None) -> int:
    """`slimexp-plan <overrides>`: each job's plan, from the same overrides as `slimexp`."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        print(USAGE)
        return 0
    try:
        jobs = resolved_jobs(argv)
        for i, (point, config) in enumerate(jobs):
            if len(jobs) > 1:
                print(("\n" if i else "") + "# " + " ".join(point))
            print(format_plan(plan_run(config)))
    except SlimexpError as err:
        print(f"slimexp-plan: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
