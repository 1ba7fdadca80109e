"""Useful work: tasks, batch assignment, gradients, the wire codec, aggregation, optimizer and
verification. Plain functions over tensors, shared by miner, validator, simulator and
benchmarks (one implementation per idea). The centralized baseline, the in-process simulation,
attacks, calibration and the quality bench live in :mod:`pot_cli.sim`.

Public API (import from the modules; this package imports nothing heavy so ``pot --help``
stays fast):

* ``tasks``: ``task_names()``, ``load_task(name) -> Task`` (``build_model``, ``initial_params``,
  ``dataset``, ``evaluate``, ``param_shapes``, ``vram_need_mb``, ``spot_check_tolerance`` …)
* ``assignment``: ``assign_batch``, ``round_seed``, ``spot_check_seed``, ``select_spot_checks``
* ``gradients``: ``compute_gradient(task, params, indices, Numerics)`` — THE gradient function
* ``codec``: ``encode_gradient``, ``decode_gradient`` (raises only ``CodecError``),
  ``Compression``, ``max_payload_bytes``
* ``aggregation``: ``aggregate_flat(rule, {address: flat vector}, shapes)`` (validator path),
  ``aggregate(rule, {address: gradient}, shapes)``
* ``optim``: ``init_optimizer_state``, ``apply_update`` (pure, bit-reproducible)
* ``state``: ``model_hash`` — THE model hash
* ``verification``: ``verify_round(RoundContext, [Submission], VerificationPolicy)``
* ``throughput``: ``measure_gradient_steps`` for the hardware benchmark
"""
