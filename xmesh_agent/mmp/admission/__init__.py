"""What a peer lets into its context: SVAF drift gating, the encoders and their anchors."""
