"""The TUI's screens: queue, job detail, folders, and the modal dialogs."""
