"""GPU worker: boot, rq worker with heartbeat, chunk runner, webhook delivery."""
