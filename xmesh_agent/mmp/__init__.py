"""The Mesh Memory Protocol: frames, CMBs, admission, transports, discovery, relay, store."""
