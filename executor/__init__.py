"""novaops.executor: the privileged node agent (ExecutorService, registration, host facts)."""
