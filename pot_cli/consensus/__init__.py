"""PBFT consensus for pot: a sans-IO replica, its write-ahead log and host loop (the simulator
that drives it lives in :mod:`pot_cli.sim.consensus`).

Public entry points (import from the submodules; this package imports nothing eagerly so that
``pot --help`` stays fast):

* :class:`pot_cli.consensus.replica.Replica` — the state machine (``step``/``tick``/``start``);
* :class:`pot_cli.consensus.config.ReplicaConfig` and :class:`pot_cli.consensus.app.Application`;
* :class:`pot_cli.consensus.host.ReplicaHost` and :class:`pot_cli.consensus.wal.SqliteWal`;
* :func:`pot_cli.consensus.certificates.verify_block` and
  :func:`pot_cli.consensus.evidence.verify_evidence` — offline checks;
* :class:`pot_cli.sim.consensus.Simulation` — the seeded simulator behind ``pot sim``.
"""
