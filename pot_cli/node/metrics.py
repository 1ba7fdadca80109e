"""A validator's Prometheus metrics (``/metrics``), one registry per node (prometheus-client).

Names follow Prometheus conventions (``pot_validator_*``, ``_total`` for counters, base units
and seconds). The core thread and the API update them; the exposition is the library's.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ValidatorMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.height = Gauge("pot_validator_height", "Committed blocks", registry=r)
        self.view = Gauge("pot_validator_view", "Current PBFT view", registry=r)
        self.is_primary = Gauge(
            "pot_validator_is_primary", "1 when this is the primary", registry=r
        )
        self.view_changes = Gauge(
            "pot_validator_view_changes", "View changes since start", registry=r
        )
        self.state_transfers = Gauge(
            "pot_validator_state_transfers", "State transfers since start", registry=r
        )
        self.peers_up = Gauge("pot_validator_peers_up", "Peers answering", registry=r)
        self.submissions = Counter(
            "pot_validator_submissions",
            "Submissions received by outcome (kept, queued or the refusal code)",
            ["outcome"],
            registry=r,
        )
        self.blocks = Counter("pot_validator_blocks_committed", "Blocks committed", registry=r)
        self.verdicts = Counter(
            "pot_validator_verdicts", "Verdicts in committed blocks", ["kind"], registry=r
        )
        self.round_seconds = Histogram(
            "pot_validator_round_seconds",
            "From the round opening at this validator to its block committing",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.derive_seconds = Histogram(
            "pot_validator_derivation_seconds",
            "Re-deriving one proposed block (re-computes included), in the worker",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.peer_sent = Counter(
            "pot_validator_peer_messages_sent", "Messages delivered to peers", registry=r
        )
        self.peer_failed = Counter(
            "pot_validator_peer_send_failures", "Messages a peer did not take", registry=r
        )
        self.dropped = Counter(
            "pot_validator_dropped_messages",
            "Messages dropped because a bounded queue was full",
            ["queue"],
            registry=r,
        )
        self.received_bytes = Counter(
            "pot_validator_submission_bytes", "Payload bytes of kept submissions", registry=r
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
