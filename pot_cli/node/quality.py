"""The devnet's quality figure: the chain's model against centralized training on exactly the
samples the chain accepted.

The PoT side re-executes the stored chain from genesis (:func:`~.chainstore.verify_chain`: every
certificate checked, every block's model step re-applied from the stored payloads), so the
figure is about the agreed model, not a node's word for it. The centralized side trains the
same initial model with the same optimizer, one step per committed block, on the concatenated
batches of that block's accepted miners (each miner's batch is fixed by the round seed and its
address), with the same gradient function. Both are evaluated on the task's held-out set.
"""

from __future__ import annotations

from typing import Any

from pot_cli.node.chainstore import ChainStore, replay_chain
from pot_cli.protocol.app import parse_proposal
from pot_cli.protocol.derive import genesis_params
from pot_cli.training.baseline import BaselineTrainer, round_batch
from pot_cli.training.gradients import Numerics
from pot_cli.training.tasks import load_task


def chain_quality(store: ChainStore) -> dict[str, Any]:
    genesis = store.genesis()
    app, mismatch = replay_chain(store)
    task = load_task(genesis.task)
    pot_metric = task.evaluate(app.state.params)
    central = BaselineTrainer(task, genesis_params(task, genesis.model_seed), Numerics(threads=1))
    for block in store.blocks():
        if block.proposal is None or block.seq > app.height:
            continue
        b = parse_proposal(block.proposal).block
        accepted = [s.miner for s in b.submissions if s.verdict.kind == "accepted"]
        if accepted:
            central.step(round_batch(task, bytes.fromhex(b.round_seed), accepted))
    central_metric = central.metric()
    return {
        "metric": task.metric_name,
        "pot_metric": pot_metric,
        "centralized_metric": central_metric,
        "quality_ratio": task.quality_ratio(pot_metric, central_metric),
        "steps": central.steps,
        "samples": central.samples,
        "centralized_samples_per_s": central.samples / central.seconds if central.seconds else None,
        "replayed_height": app.height,
        "replay_mismatch": mismatch,
    }
