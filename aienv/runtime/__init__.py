"""Runtimes: the interface every runtime implements, the built-in process runtime,
the plugin registry (entry-point group ``aienv.runtimes``) and the environment
lifecycle (an explicit, persisted state machine)."""
