"""The trainer: config, schedule, sampler, the loop, resumable state, and recipes."""
