"""Counts what a Schemathesis run did, from its NDJSON report.

    python3 count.py LISTENER REPORT.ndjson MIN_REQUESTS SEED MAX_EXAMPLES

Prints the requests sent (per phase and per status code), the checks run and the checks
that failed; exits 1 when fewer than MIN_REQUESTS requests were sent, when any check
failed, or when the run ended in an error.
"""

import collections
import json
import sys


def main() -> int:
    listener, path, min_requests, seed, max_examples = sys.argv[1:6]
    min_requests = int(min_requests)
    requests = 0
    per_phase = collections.Counter()
    per_status = collections.Counter()
    checks = collections.Counter()
    failed = collections.Counter()
    errors = 0
    with open(path, encoding="utf-8") as report:
        for line in report:
            event = json.loads(line)
            if "NonFatalError" in event or "FatalError" in event:
                errors += 1
            finished = event.get("ScenarioFinished")
            if not finished:
                continue
            recorder = finished["recorder"]
            interactions = recorder.get("interactions", {})
            requests += len(interactions)
            per_phase[finished.get("phase", "?")] += len(interactions)
            for interaction in interactions.values():
                response = interaction.get("response") or {}
                per_status[str(response.get("status_code", "no response"))] += 1
            for results in recorder.get("checks", {}).values():
                for check in results:
                    checks[check["name"]] += 1
                    if check["status"] != "success" and check["status"] != "skip":
                        failed[check["name"]] += 1
    phases = ", ".join(f"{phase} {n}" for phase, n in sorted(per_phase.items()))
    statuses = ", ".join(f"{status}: {n}" for status, n in sorted(per_status.items()))
    print(f"== {listener}: seed {seed}, max examples {max_examples} per operation")
    print(f"   requests: {requests} ({phases})")
    print(f"   responses by status: {statuses}")
    print(f"   checks run: {sum(checks.values())} ({len(checks)} kinds), failed: {sum(failed.values())}")
    for name, n in sorted(failed.items()):
        print(f"     {name}: {n} failed")
    if errors:
        print(f"   errors: {errors}")
    ok = True
    if requests < min_requests:
        print(f"   FAILED: fewer than {min_requests} requests")
        ok = False
    if failed or errors:
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
