"""What the interop scripts share: their arguments, and a flow-events event
printed as one JSON line.

The scripts of this folder import it (Python puts a script's folder first on
its path); it needs nothing beyond the standard library.
"""

import json
import sys
from datetime import datetime


def arguments(*names):
    """The positional arguments NAMES, then TIMEOUT_SECONDS (20 if absent)."""
    count = len(names)
    if len(sys.argv) <= count:
        sys.exit(f"usage: {sys.argv[0]} {' '.join(names)} [TIMEOUT_SECONDS]")
    timeout = float(sys.argv[count + 1]) if len(sys.argv) > count + 1 else 20.0
    return (*sys.argv[1 : count + 1], timeout)


def event_fields(body):
    """The id, type, data and timestamp of the event whose JSON is BODY, and
    the timestamp as Unix seconds, parsed the way a Python service would."""
    event = json.loads(body)
    return {
        "id": event["id"],
        "type": event["type"],
        "data": event["data"],
        "timestamp": event["timestamp"],
        "timestamp_unix": datetime.fromisoformat(
            event["timestamp"].replace("Z", "+00:00")
        ).timestamp(),
    }


def emit(fields):
    """Prints FIELDS as one JSON line, at once."""
    print(json.dumps(fields), flush=True)


def nothing(what):
    """Says on stderr that WHAT did not come in time; the exit status for it."""
    print(what, file=sys.stderr, flush=True)
    return 2
