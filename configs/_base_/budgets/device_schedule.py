# A budget that changes while the model serves: device_schedule.yaml holds (time_s, latency_ms, memory_mb) entries
# over the seconds since the run started; the hook polls it every `interval` test iterations and switches only the
# blocks that change. Use it in place of teacher_60pct_memory_80pct_latency.py in a legodnn config's _base_.
legodnn_scaling_hook = dict(
    type='mmlego.OnlineScalingHook', budget='{{fileDirname}}/device_schedule.yaml', interval=5,
    latency_repeats=20, latency_warmup=3)
