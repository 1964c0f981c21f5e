"""Plots the outage run of a flow-events-bench result: pending events,
confirms per second and connection state over time.

usage: plot_outage.py RESULTS.json OUT.svg
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STATES = ["disconnected", "connecting", "failed", "connected"]
STATE_COLOURS = {
    "disconnected": "#d62728",
    "connecting": "#ff7f0e",
    "failed": "#7f0000",
    "connected": "#2ca02c",
}


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        results = json.load(f)
    outage = results.get("outage")
    if not outage:
        sys.exit("no outage run in " + sys.argv[1])

    timeline = outage["timeline"]
    t = [s["t_ms"] / 1000 for s in timeline]
    pending = [s["pending"] for s in timeline]
    confirmed = [s["confirmed"] for s in timeline]
    # Confirms per second over half a second: the broker confirms in batches,
    # so 100 ms steps are too spiky to read.
    window = 5
    rate_t, rate = [], []
    for i in range(window, len(timeline)):
        dt = t[i] - t[i - window]
        if dt > 0:
            rate_t.append(t[i] - dt / 2)
            rate.append((confirmed[i] - confirmed[i - window]) / dt)

    cut = outage["cut_at_ms"] / 1000
    restored = outage["restored_at_ms"] / 1000
    connected = restored + outage["reconnect_ms"] / 1000
    drained = connected + outage["drain_ms"] / 1000
    plan = outage["plan"]

    fig, (ax_pending, ax_rate, ax_state) = plt.subplots(
        3, 1, figsize=(10, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 2, 1.2]}
    )
    title = (
        f"Outage run: {plan['rate']} publishes/s, broker cut for {plan['outage_ms'] / 1000:.0f} s "
        f"through a TCP proxy (backoff {outage['retry_delay_ms'] / 1000:.0f} s, "
        f"cap {outage['max_retry_delay_ms'] / 1000:.0f} s)"
    )
    fig.suptitle(title, fontsize=11)
    for ax in (ax_pending, ax_rate, ax_state):
        ax.axvspan(cut, restored, color="#d62728", alpha=0.08, lw=0)
        ax.grid(True, alpha=0.3)

    ax_pending.plot(t, pending, color="#1f77b4", lw=1.8)
    ax_pending.set_ylabel("pending events")
    ax_pending.set_ylim(bottom=0)
    top = max(pending) if pending else 1
    marks = [
        (cut, "broker cut"),
        (restored, "broker back"),
        (connected, f"connected\n(+{outage['reconnect_ms'] / 1000:.1f} s)"),
        (drained, f"backlog drained\n(+{outage['drain_ms'] / 1000:.1f} s)"),
    ]
    for x, label in marks:
        ax_pending.axvline(x, color="#555555", ls="--", lw=0.8)
        ax_pending.annotate(
            label, (x, top), xytext=(3, -2), textcoords="offset points",
            va="top", fontsize=8, color="#333333",
        )
    ax_pending.set_ylim(0, top * 1.25 if top else 1)

    ax_rate.plot(rate_t, rate, color="#9467bd", lw=1.2)
    ax_rate.set_ylabel("confirms / s\n(0.5 s mean)")
    ax_rate.set_ylim(bottom=0)

    index = {s: i for i, s in enumerate(STATES)}
    changes = outage["changes"]
    end = t[-1] if t else 0
    for i, change in enumerate(changes):
        start = change["t_ms"] / 1000
        stop = changes[i + 1]["t_ms"] / 1000 if i + 1 < len(changes) else end
        state = change["state"]
        ax_state.broken_barh(
            [(start, max(stop - start, 0.02))], (index[state] - 0.4, 0.8),
            color=STATE_COLOURS[state],
        )
    ax_state.set_yticks(range(len(STATES)))
    ax_state.set_yticklabels(STATES, fontsize=8)
    ax_state.set_ylim(-0.6, len(STATES) - 0.4)
    ax_state.set_ylabel("state")
    ax_state.set_xlabel("seconds since the load started (shaded: broker unreachable)")
    ax_state.set_xlim(0, end)

    disc = outage["phases"]["while_disconnected"]
    counts = ", ".join(f"{n} {what}" for what, n in outage["outcomes"].items())
    fig.text(
        0.01, 0.005,
        f"caller latency while disconnected: p50 {disc['p50_us']:.1f} µs, "
        f"p99 {disc['p99_us']:.1f} µs, max {disc['max_us']:.0f} µs over {disc['count']} calls; "
        f"peak pending {outage['peak_pending']}; outcomes: {counts}",
        fontsize=7.5, color="#333333",
    )
    fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    fig.savefig(sys.argv[2])
    if sys.argv[2].endswith(".svg"):
        fig.savefig(sys.argv[2][:-4] + ".png", dpi=110)


if __name__ == "__main__":
    main()
