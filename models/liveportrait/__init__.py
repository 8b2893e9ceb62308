"""LivePortrait: implicit-keypoint neural warp renderer (appearance volume, keypoints, 3D warp, SPADE)."""
