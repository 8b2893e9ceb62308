"""V-Express on the shared SD skeleton (``models.sd``): its condition modules (V-Kps guider and keypoint
drawing, audio projection, wav2vec2 front-end), its denoiser configuration, the loading of its published
checkpoint files, its defaults and its engine. See docs/vexpress.md."""
