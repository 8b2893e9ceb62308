"""AniPortrait: audio -> face-mesh landmarks and head pose (A2L) -> landmark-guided video diffusion (L2V)."""
