"""The TUI's widgets: the queue table, the header, the folder tree, the preview pane."""
