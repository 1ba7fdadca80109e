"""Everything a node never runs: the deterministic consensus simulator and its Byzantine
replicas, the in-process PoT simulation, attacks, calibration, the centralized baseline and the
benches. Nothing imports this package (an import contract checks it); it may import anything.
"""
