# The budget a legodnn config is evaluated under: tools/test.py CONFIG TEACHER_CKPT (mmlego's, or the task package's
# own) scales the model to it before the first test iteration and logs estimates next to measurements.
# Shares are of the full model (the teacher) as profiled in the bank: 60% of its weight bytes, 80% of its latency.
# The smallest configuration of each of the eight synthetic banks fits (bench/results/profiles: <= 55% / <= 71%).
# Absolute limits work too: budget=dict(memory_mb=20, latency_ms=30) or budget='memory=20MB,latency=30ms'.
legodnn_scaling_hook = dict(
    type='mmlego.OnlineScalingHook', budget=dict(memory_mb='60%', latency_ms='80%'), latency_repeats=20,
    latency_warmup=3)
