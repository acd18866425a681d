"""The three-peer demo: seeds, peer processes, the watch view and the soak accounting."""
