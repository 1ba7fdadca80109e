"""Replica-set configuration: who the replicas are and the protocol's constants."""

from __future__ import annotations

from dataclasses import dataclass

from pot_cli.crypto import PUBLIC_KEY_SIZE
from pot_cli.errors import ConfigError


@dataclass(frozen=True)
class ReplicaConfig:
    """The fixed parameters every replica of one chain shares.

    ``public_keys[i]`` is replica ``i``'s Ed25519 key; ``n = len(public_keys) = 3f + 1`` (a larger
    n that is not of that form tolerates ``f = (n - 1) // 3``). Times are in the host's time unit
    (the simulator uses virtual milliseconds).

    * ``checkpoint_interval`` (K): a checkpoint every K sequence numbers.
    * ``watermark_window`` (L): a replica accepts sequence numbers in ``(h, h + L]`` where ``h``
      is its last stable checkpoint; L must be a multiple of K and at least 2K so that the
      primary can keep proposing while the next checkpoint becomes stable.
    * ``view_change_timeout`` (T): base timeout; the n-th consecutive failed view change waits
      ``T * 2**min(n, max_backoff_exp)``.
    * ``resend_interval``: how often a replica in a view change re-sends its view-change (and a
      lagging replica re-asks for state): PBFT's retransmission, needed on lossy networks.
    * ``max_in_flight``: how many proposals the primary keeps un-executed at once.
    """

    chain_id: str
    public_keys: tuple[bytes, ...]
    checkpoint_interval: int = 4
    watermark_window: int = 8
    view_change_timeout: int = 200
    max_backoff_exp: int = 5
    resend_interval: int = 100
    max_in_flight: int = 4

    def __post_init__(self) -> None:
        if not self.chain_id or len(self.chain_id) > 128:
            raise ConfigError("consensus: chain_id must be 1..128 characters")
        if len(self.public_keys) < 4:
            raise ConfigError("consensus: PBFT needs at least n = 4 replicas (n = 3f + 1, f >= 1)")
        for i, key in enumerate(self.public_keys):
            if not isinstance(key, bytes) or len(key) != PUBLIC_KEY_SIZE:
                raise ConfigError(f"consensus: public key of replica {i} is not 32 bytes")
        if len(set(self.public_keys)) != len(self.public_keys):
            raise ConfigError("consensus: two replicas share one public key")
        k, w = self.checkpoint_interval, self.watermark_window
        if k < 1 or w < 2 * k or w % k:
            raise ConfigError(
                "consensus: watermark_window must be a multiple of checkpoint_interval "
                f"and at least twice it (got K={k}, L={w})"
            )
        if self.view_change_timeout < 1 or self.resend_interval < 1 or self.max_in_flight < 1:
            raise ConfigError("consensus: timeouts and max_in_flight must be positive")
        if not 0 <= self.max_backoff_exp <= 30:
            raise ConfigError("consensus: max_backoff_exp must be in [0, 30]")

    @property
    def n(self) -> int:
        return len(self.public_keys)

    @property
    def f(self) -> int:
        return (self.n - 1) // 3

    @property
    def quorum(self) -> int:
        """2f + 1: any two quorums share at least one honest replica."""
        return 2 * self.f + 1

    def primary(self, view: int) -> int:
        return view % self.n
