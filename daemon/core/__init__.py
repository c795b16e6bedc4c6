"""The bottom of the daemon: config models and the job store. Nothing here imports the runtime
(watcher, intake, router, scheduler, CLI); engines and providers may import it."""
